"""WordPiece (BERT / DistilBERT, uncased): ids read from a bert-base-uncased-shaped vocab.txt, hand-computed
encodings, parity with HuggingFace's BertTokenizerFast on the same local files, training, MLM masking."""

from __future__ import annotations

import json
import pickle
import shutil

import pytest
import torch

from egovlp.data.tokenizer import BPETokenizer, Tokenizer, WordPieceTokenizer, detect_kind, mask_tokens
from egovlp.errors import DataError

# Laid out like bert-base-uncased: [PAD] 0, [unused0..98] 1-99, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103, then
# punctuation, single characters and words with ## continuations.
WORDS = [*"!,.?", *"abcdefghijklmnopqrstuvwxyz", "日", "本", "the", "red", "cube", "up", "pick", "##s", "##ed",
         "put", "down", "ball", "on", "table", "##ly", "quick", "open", "fridge", "door", "un", "##believ", "##able",
         "##o", "##d"]  # fmt: skip
VOCAB = ["[PAD]", *(f"[unused{i}]" for i in range(99)), "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
ID = {t: i for i, t in enumerate(VOCAB)}
TEXTS = [
    "C Picks UP the réd cube!",
    "  C puts down the ball on the table, quickly?",
    "Unbelievable 日本 fridge door openeds",
    "xylophone" * 20,  # longer than WordPiece's 100 characters per word: [UNK]
    "",
    "C opened the fridge door and picked up the red cube and put down the ball on the table",
]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    return folder


def test_special_ids_are_read_from_the_vocabulary(bert_dir):
    tok = Tokenizer.from_dir(bert_dir)
    assert isinstance(tok, WordPieceTokenizer) and tok.kind == "wordpiece" and detect_kind(bert_dir) == "wordpiece"
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id, tok.mask_id) == (0, 100, 101, 102, 103)
    assert tok.special_ids == (0, 100, 101, 102, 103)  # [unusedN] are ordinary tokens, as in HuggingFace
    assert tok.vocab_size == len(VOCAB)


def test_hand_computed_encoding(bert_dir):
    tok = Tokenizer.from_dir(bert_dir)
    # lowercased, accents stripped, split at punctuation, greedy longest-match-first word pieces
    assert tok.encode("C Picks UP the réd cube!") == [
        ID[t] for t in ["c", "pick", "##s", "up", "the", "red", "cube", "!"]
    ]
    assert tok.encode("unbelievable") == [ID["un"], ID["##believ"], ID["##able"]]
    assert tok.encode("日本") == [ID["日"], ID["本"]]
    assert tok.encode("zebra") == [ID["[UNK]"]]  # no "##e..." pieces for the rest of the word: the whole word
    batch = tok(["C picks", "the red cube on the table"], max_length=5, padding="longest")
    assert batch["input_ids"].tolist() == [
        [101, ID["c"], ID["pick"], ID["##s"], 102],
        [101, ID["the"], ID["red"], ID["cube"], 102],  # truncated, [SEP] kept
    ]
    batch = tok(["C picks", "up"], max_length=6, padding="max_length")
    assert batch["input_ids"][1].tolist() == [101, ID["up"], 102, 0, 0, 0]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 0, 0, 0]
    assert tok.decode(tok(["C Picks UP the réd cube!"])["input_ids"][0]) == "c picks up the red cube!"


def _hf_bert(folder, **kwargs):
    transformers = pytest.importorskip("transformers")
    return transformers.BertTokenizerFast.from_pretrained(str(folder), **kwargs)


def _assert_same_batches(ours, hf, texts=TEXTS):
    for kwargs in ({"max_length": 9, "padding": "max_length"}, {"max_length": 7, "padding": "longest"}, {}):
        expect = hf(texts, truncation="max_length" in kwargs, return_tensors="pt", **{"padding": "longest", **kwargs})
        got = ours(texts, **kwargs)
        assert torch.equal(got["input_ids"], expect["input_ids"]), kwargs
        assert torch.equal(got["attention_mask"], expect["attention_mask"]), kwargs
    for row in ours(texts)["input_ids"]:
        assert ours.decode(row) == hf.decode(row, skip_special_tokens=True)


def test_parity_with_transformers_bert(bert_dir, tmp_path):
    hf = _hf_bert(bert_dir)
    ours = Tokenizer.from_dir(bert_dir)
    assert (hf.pad_token_id, hf.unk_token_id, hf.cls_token_id, hf.sep_token_id, hf.mask_token_id) == (
        0, 100, 101, 102, 103,
    )  # fmt: skip
    _assert_same_batches(ours, hf)
    # HuggingFace's own saved folder (tokenizer.json + vocab.txt + tokenizer_config.json) loads the same
    saved = tmp_path / "saved"
    hf.save_pretrained(str(saved))
    assert (saved / "tokenizer.json").is_file()
    again = Tokenizer.from_dir(saved)
    assert isinstance(again, WordPieceTokenizer)
    _assert_same_batches(again, hf)


def test_cased_vocabulary_by_tokenizer_config(bert_dir, tmp_path):
    cased = tmp_path / "cased"
    cased.mkdir()
    (cased / "vocab.txt").write_text("\n".join([*VOCAB, "C", "Picks"]) + "\n", encoding="utf-8")
    (cased / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    ours = Tokenizer.from_dir(cased)
    assert ours.encode("C Picks up") == [len(VOCAB), len(VOCAB) + 1, ID["up"]]
    _assert_same_batches(ours, _hf_bert(cased, do_lower_case=False))
    (cased / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": "no"}))
    with pytest.raises(DataError, match="tokenizer_config.json: do_lower_case must be true or false"):
        Tokenizer.from_dir(cased)


def test_vocab_without_special_tokens_is_refused(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(w for w in VOCAB if w != "[CLS]") + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"vocab.txt: the wordpiece vocabulary lacks the special tokens \['\[CLS\]'\]"):
        Tokenizer.from_dir(tmp_path)
    with pytest.raises(DataError, match="holds a wordpiece tokenizer, not a bpe one"):
        BPETokenizer.from_dir(tmp_path)


CORPUS = [
    "C picks up the red cube",
    "C puts down the blue ball",
    "man X opens the fridge door",
    "C closes the green ring twice",
    "C cuts the onion on the chopping board with a knife",
] * 40


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("wp")
    return Tokenizer.train(CORPUS, 120, out, min_frequency=1, kind="wordpiece"), out


def test_trained_wordpiece(trained, tmp_path):
    tok, out = trained
    assert isinstance(tok, WordPieceTokenizer)
    assert tok.special_token_ids() == {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    assert tok.vocab_size <= 120
    assert sorted(p.name for p in out.iterdir()) == ["tokenizer.json", "vocab.txt"]
    vocab_only = tmp_path / "vocab_only"
    vocab_only.mkdir()
    shutil.copy(out / "vocab.txt", vocab_only / "vocab.txt")
    texts = [*CORPUS[:5], "C Picks up the FRIDGE knife quickly", "zzz"]
    for folder in (out, vocab_only):
        again = Tokenizer.from_dir(folder)
        assert torch.equal(again(texts, 9, "max_length")["input_ids"], tok(texts, 9, "max_length")["input_ids"])
    _assert_same_batches(Tokenizer.from_dir(vocab_only), _hf_bert(vocab_only), texts)
    assert tok.decode(tok.encode("C picks up the red cube")) == "c picks up the red cube"
    assert type(pickle.loads(pickle.dumps(tok))) is WordPieceTokenizer


def test_wordpiece_train_refuses_another_kind():
    with pytest.raises(ValueError, match="trains 'wordpiece', not 'bpe'"):
        WordPieceTokenizer.train(CORPUS, 100, kind="bpe")
    with pytest.raises(ValueError, match="unknown tokenizer kind 'unigram'"):
        Tokenizer.train(CORPUS, 100, kind="unigram")


def test_mask_tokens_uses_the_tokenizers_own_special_ids(bert_dir):
    tok = Tokenizer.from_dir(bert_dir)
    batch = tok(TEXTS * 60, max_length=12, padding="max_length")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    masked, labels = mask_tokens(ids, mask, tok, 0.15, torch.Generator().manual_seed(0))
    special = (ids == 0) | (ids == 100) | (ids == 101) | (ids == 102) | (ids == 103)
    candidates = (mask == 1) & ~special
    picked = labels != -100
    assert not torch.any(picked & ~candidates)  # [CLS], [SEP], [PAD] and [UNK] never picked
    assert 0.12 < picked.sum() / candidates.sum() < 0.18
    to_mask = masked == 103
    assert torch.equal(to_mask, to_mask & picked) and 0.75 < to_mask.sum() / picked.sum() < 0.85
    replaced = picked & ~to_mask & (masked != ids)
    assert replaced.any() and not torch.isin(masked[replaced], torch.tensor(tok.special_ids)).any()
    pool = tok.non_special_ids()
    assert len(pool) == len(VOCAB) - 5 and 1 in pool.tolist() and 100 not in pool.tolist()  # [unused0] may be drawn
