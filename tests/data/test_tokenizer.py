"""Tokenizer interface + the RoBERTa BPE: training, both file forms, kind detection, parity with HuggingFace's
RobertaTokenizerFast (same local files), ids read from the vocabulary, round trips, MLM masking."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch
from tokenizers import Tokenizer as HFTokenizer

from egovlp.data.tokenizer import BPETokenizer, Tokenizer, WordPieceTokenizer, detect_kind, mask_tokens
from egovlp.errors import ConfigError, DataError

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


def _copy(out, dst, names=("vocab.json", "merges.txt")):
    dst.mkdir()
    for name in names:
        shutil.copy(out / name, dst / name)
    return dst


def test_special_tokens_are_robertas(trained):
    tok, _ = trained
    assert isinstance(tok, BPETokenizer) and tok.kind == "bpe"
    assert (tok.bos_id, tok.pad_id, tok.eos_id, tok.unk_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert tok.special_ids == (0, 1, 2, 3, 4)
    assert tok.special_token_ids() == {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 4}
    assert tok.vocab_size <= 300


def test_both_file_forms_load_and_agree(trained, tmp_path):
    tok, out = trained
    pair = _copy(out, tmp_path / "pair")
    assert detect_kind(out) == detect_kind(pair) == "bpe"
    a, b = Tokenizer.from_dir(out), Tokenizer.from_dir(pair)
    for t in (a, b):
        assert isinstance(t, BPETokenizer)
        assert torch.equal(t(TEXTS, 15, "max_length")["input_ids"], tok(TEXTS, 15, "max_length")["input_ids"])


def test_kind_detection_errors_name_the_folder_and_its_files(trained, tmp_path):
    _, out = trained
    with pytest.raises(DataError, match="missing: tokenizer folder not found"):
        Tokenizer.from_dir(tmp_path / "missing")
    with pytest.raises(DataError, match="tokenizer.json: a file, not a tokenizer folder"):
        Tokenizer.from_dir(out / "tokenizer.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no tokenizer .* the folder holds nothing"):
        Tokenizer.from_dir(tmp_path / "empty")
    half = _copy(out, tmp_path / "half", ("vocab.json",))
    (half / "notes.md").write_text("x")
    with pytest.raises(DataError, match=r"half: no tokenizer .*holds notes.md, vocab.json$"):
        Tokenizer.from_dir(half)
    uni = tmp_path / "unigram"
    uni.mkdir()
    (uni / "tokenizer.json").write_text(json.dumps({"model": {"type": "Unigram", "vocab": []}}))
    with pytest.raises(DataError, match=r"unigram/tokenizer.json: model type 'Unigram' is not supported"):
        Tokenizer.from_dir(uni)
    (uni / "tokenizer.json").write_text("{ not json")
    with pytest.raises(DataError, match=r"unigram/tokenizer.json: not a tokenizers file"):
        Tokenizer.from_dir(uni)
    with pytest.raises(DataError, match="holds a bpe tokenizer, not a wordpiece one"):
        WordPieceTokenizer.from_dir(out)
    with pytest.raises(TypeError, match="interface"):
        Tokenizer(HFTokenizer.from_file(str(out / "tokenizer.json")))


def test_vocab_without_special_tokens_is_refused(trained, tmp_path):
    _, out = trained
    pair = _copy(out, tmp_path / "nomask")
    vocab = json.loads((pair / "vocab.json").read_text())
    del vocab["<mask>"]
    (pair / "vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(DataError, match=r"vocab.json: the bpe vocabulary lacks the special tokens \['<mask>'\]"):
        Tokenizer.from_dir(pair)


def _hf_roberta(folder):
    transformers = pytest.importorskip("transformers")
    return transformers.RobertaTokenizerFast.from_pretrained(str(folder))


def _assert_same_batches(ours, hf):
    expect = hf(TEXTS, max_length=15, padding="max_length", truncation=True, return_tensors="pt")
    got = ours(TEXTS, max_length=15, padding="max_length")
    assert torch.equal(got["input_ids"], expect["input_ids"])
    assert torch.equal(got["attention_mask"], expect["attention_mask"])
    expect = hf(TEXTS, padding="longest", return_tensors="pt")
    got = ours(TEXTS)
    assert torch.equal(got["input_ids"], expect["input_ids"])
    assert torch.equal(got["attention_mask"], expect["attention_mask"])
    expect = hf(TEXTS, max_length=6, padding="longest", truncation=True, return_tensors="pt")
    assert torch.equal(ours(TEXTS, max_length=6)["input_ids"], expect["input_ids"])


def test_parity_with_transformers_roberta(trained, tmp_path):
    tok, out = trained
    pair = _copy(out, tmp_path / "hf")
    hf = _hf_roberta(pair)
    assert hf.mask_token_id == tok.mask_id and len(hf) == tok.vocab_size
    _assert_same_batches(Tokenizer.from_dir(pair), hf)
    saved = tmp_path / "saved"  # HuggingFace's own folder (tokenizer.json first) loads the same
    hf.save_pretrained(str(saved))
    assert (saved / "tokenizer.json").is_file() and detect_kind(saved) == "bpe"
    _assert_same_batches(Tokenizer.from_dir(saved), hf)


def test_special_ids_come_from_the_vocabulary(trained, tmp_path):
    """roberta-base puts <mask> last (50264); any other order must be read, not assumed (here <pad> 0, <s> 1)."""
    _, out = trained
    vocab = json.loads((out / "vocab.json").read_text())
    order = sorted(vocab, key=vocab.get)
    order.remove("<mask>")
    order[0], order[1] = order[1], order[0]  # <pad> 0, <s> 1
    order.append("<mask>")
    moved = _copy(out, tmp_path / "moved", ("merges.txt",))
    (moved / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(order)}))
    ours = Tokenizer.from_dir(moved)
    last = len(order) - 1
    assert (ours.pad_id, ours.bos_id, ours.eos_id, ours.unk_id, ours.mask_id) == (0, 1, 2, 3, last)
    assert ours.special_ids == (0, 1, 2, 3, last)
    batch = ours(["C picks", "C picks up the red cube"])
    assert batch["input_ids"][0].tolist()[0] == 1 and batch["input_ids"][0].tolist()[-1] == 0  # <s> 1, <pad> 0
    hf = _hf_roberta(moved)
    assert (hf.pad_token_id, hf.bos_token_id, hf.mask_token_id) == (0, 1, last)
    _assert_same_batches(ours, hf)
    masked, labels = mask_tokens(
        batch["input_ids"], batch["attention_mask"], ours, 0.9, torch.Generator().manual_seed(0)
    )
    assert not torch.any((labels != -100) & (batch["input_ids"] <= 3))
    assert torch.any(masked == last)


def test_settings_saved_in_tokenizer_json_do_not_leak(trained, tmp_path):
    """A tokenizer.json saved with truncation/padding enabled (HF's files may be) must not change the framing."""
    tok, out = trained
    raw = HFTokenizer.from_file(str(out / "tokenizer.json"))
    raw.enable_truncation(3)
    raw.enable_padding(length=40)
    folder = tmp_path / "settings"
    folder.mkdir()
    raw.save(str(folder / "tokenizer.json"))
    again = Tokenizer.from_dir(folder)
    assert torch.equal(again(TEXTS)["input_ids"], tok(TEXTS)["input_ids"])


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
    with pytest.raises(ValueError, match="room for <s> and </s>"):
        tok(["a"], max_length=1)
    with pytest.raises(TypeError):
        tok("a single string")


def test_check_model(trained):
    tok, _ = trained
    tok.check_model(tok.vocab_size, 1)
    with pytest.raises(ConfigError, match=f"has {tok.vocab_size} tokens but model.text.vocab_size is 100"):
        tok.check_model(100)
    with pytest.raises(ConfigError, match="pads with id 1 but model.text.pad_token_id is 0"):
        tok.check_model(1000, 0)


def test_pickle_round_trip(trained):
    tok, _ = trained
    again = pickle.loads(pickle.dumps(tok))
    assert type(again) is BPETokenizer
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
