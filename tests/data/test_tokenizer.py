"""Tokenizer: training, both file forms, parity with HuggingFace's RobertaTokenizerFast, round trips, MLM masking."""

from __future__ import annotations

import pickle
import shutil

import pytest
import torch

from egovlp.data.tokenizer import Tokenizer, mask_tokens
from egovlp.errors import DataError

CORPUS = [
    "C picks up the red cube",
    "C puts down the blue ball",
    "man X opens the fridge door",
    "C closes the green ring twice",
    "C cuts the onion on the chopping board with a knife",
] * 40
TEXTS = [
    "C picks up the red cube",
    "  leading spaces, ünïcode 日本 and punctuation!?",
    "C puts down the blue ball on the table near the window and then leaves the room quickly",
    "x",
    "",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    return Tokenizer.train(CORPUS, 300, out), out


def test_special_tokens_are_robertas(trained):
    tok, _ = trained
    assert (tok.bos_id, tok.pad_id, tok.eos_id, tok.unk_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.special_ids == (0, 1, 2, 3, 4)
    assert tok.vocab_size <= 300


def test_both_file_forms_load_and_agree(trained, tmp_path):
    tok, out = trained
    pair = tmp_path / "pair"
    pair.mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(out / name, pair / name)
    a, b = Tokenizer.from_dir(out), Tokenizer.from_dir(pair)
    for t in (a, b):
        assert torch.equal(t(TEXTS, 15, "max_length")["input_ids"], tok(TEXTS, 15, "max_length")["input_ids"])
    with pytest.raises(DataError, match="no tokenizer.json and no vocab.json"):
        Tokenizer.from_dir(tmp_path / "nothing")


def test_parity_with_transformers_roberta(trained, tmp_path):
    transformers = pytest.importorskip("transformers")
    tok, out = trained
    pair = tmp_path / "hf"
    pair.mkdir()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(out / name, pair / name)
    hf = transformers.RobertaTokenizerFast.from_pretrained(str(pair))
    assert hf.mask_token_id == tok.mask_id and len(hf) == tok.vocab_size
    ours = Tokenizer.from_dir(pair)
    expect = hf(TEXTS, max_length=15, padding="max_length", truncation=True, return_tensors="pt")
    got = ours(TEXTS, max_length=15, padding="max_length")
    assert torch.equal(got["input_ids"], expect["input_ids"])
    assert torch.equal(got["attention_mask"], expect["attention_mask"])
    expect = hf(TEXTS, padding="longest", return_tensors="pt")
    got = ours(TEXTS)
    assert torch.equal(got["input_ids"], expect["input_ids"])
    assert torch.equal(got["attention_mask"], expect["attention_mask"])


def test_framing_truncation_and_round_trip(trained):
    tok, _ = trained
    batch = tok(TEXTS, max_length=8, padding="longest")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape[1] == 8 and ids.dtype == torch.long
    assert torch.all(ids[:, 0] == tok.bos_id)
    lengths = mask.sum(1)
    assert torch.all(ids[torch.arange(len(TEXTS)), lengths - 1] == tok.eos_id)  # </s> kept by truncation
    assert torch.all(ids[mask == 0] == tok.pad_id)
    for text in TEXTS:
        assert tok.decode(tok.encode(text)) == text
        full = tok([text])["input_ids"][0]
        assert tok.decode(full) == text


def test_padding_arguments(trained):
    tok, _ = trained
    assert tok(["a b"], max_length=15, padding="max_length")["input_ids"].shape == (1, 15)
    with pytest.raises(ValueError, match="needs max_length"):
        tok(["a"], padding="max_length")
    with pytest.raises(TypeError):
        tok("a single string")


def test_pickle_round_trip(trained):
    tok, _ = trained
    again = pickle.loads(pickle.dumps(tok))
    assert torch.equal(again(TEXTS)["input_ids"], tok(TEXTS)["input_ids"])


def test_mask_tokens_statistics(trained):
    tok, _ = trained
    batch = tok(CORPUS * 10, max_length=15, padding="max_length")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    masked, labels = mask_tokens(ids, mask, tok, 0.15, torch.Generator().manual_seed(0))
    candidates = (mask == 1) & (ids > 4)
    picked = labels != -100
    assert not torch.any(picked & ~candidates)  # never specials or padding
    assert torch.equal(labels[picked], ids[picked])
    rate = picked.sum() / candidates.sum()
    assert 0.13 < rate < 0.17
    n = picked.sum()
    to_mask = (masked == tok.mask_id) & picked
    unchanged = (masked == ids) & picked
    assert 0.77 < to_mask.sum() / n < 0.83
    assert 0.07 < unchanged.sum() / n < 0.13  # ~10 % kept (+ a few random draws of the same id)
    assert torch.all(masked[~picked] == ids[~picked])
    assert not torch.any((masked <= 4) & picked & ~to_mask)  # random replacements are never special


def test_mask_tokens_is_deterministic(trained):
    tok, _ = trained
    batch = tok(CORPUS[:20], max_length=15, padding="max_length")
    a = mask_tokens(batch["input_ids"], batch["attention_mask"], tok, 0.15, torch.Generator().manual_seed(7))
    b = mask_tokens(batch["input_ids"], batch["attention_mask"], tok, 0.15, torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
