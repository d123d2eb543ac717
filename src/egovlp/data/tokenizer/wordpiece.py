"""BERT / DistilBERT WordPiece, uncased: ``tokenizer.json`` or ``vocab.txt`` (``bert-base-uncased``).

The pipeline is BERT's: ``BertNormalizer`` (clean text, spaces around CJK characters, lowercase and strip accents),
``BertPreTokenizer`` (split on whitespace and punctuation), WordPiece with ``##`` continuations and ``[UNK]`` for
a word it cannot split, ``[CLS] A [SEP]``. Special-token ids come from the vocabulary: in ``bert-base-uncased``
``[PAD]`` 0, ``[UNK]`` 100, ``[CLS]`` 101, ``[SEP]`` 102, ``[MASK]`` 103; in a vocabulary trained here 0-4 in
that order. A ``tokenizer_config.json`` with ``"do_lower_case": false`` beside a ``vocab.txt`` turns lowercasing
off (a cased vocabulary). Encoding matches HuggingFace's ``BertTokenizerFast``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from egovlp.data.tokenizer.base import SpecialTokens, Tokenizer
from egovlp.errors import DataError

__all__ = ["WORDPIECE_SPECIAL_TOKENS", "WordPieceTokenizer"]

WORDPIECE_SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


class WordPieceTokenizer(Tokenizer):
    """BERT's WordPiece, uncased by default (``kind = "wordpiece"``)."""

    kind = "wordpiece"
    special_tokens = SpecialTokens(
        WORDPIECE_SPECIAL_TOKENS, bos="[CLS]", eos="[SEP]", pad="[PAD]", unk="[UNK]", mask="[MASK]"
    )

    @classmethod
    def _load_vocab(cls, path: Path) -> _HFTokenizer:
        vocab = path / "vocab.txt"
        try:
            model = models.WordPiece.from_file(str(vocab), unk_token=cls.special_tokens.unk)
        except Exception as e:  # tokenizers raises plain Exception subclasses
            raise DataError(f"{vocab}: cannot load the WordPiece vocabulary: {e}") from None
        tok = _HFTokenizer(model)
        cls._check_vocab_has_specials(tok.get_vocab(), vocab)
        return cls._pipeline(tok, lowercase=_do_lower_case(path))

    @classmethod
    def _train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int) -> _HFTokenizer:
        tok = _HFTokenizer(models.WordPiece(unk_token=cls.special_tokens.unk))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        trainer = trainers.WordPieceTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(WORDPIECE_SPECIAL_TOKENS),
            continuing_subword_prefix="##",
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls._pipeline(tok, lowercase=True)

    @classmethod
    def _pipeline(cls, tok: _HFTokenizer, lowercase: bool) -> _HFTokenizer:
        """BERT normaliser and pre-tokenizer, WordPiece decoder and ``[CLS] A [SEP]`` post-processing."""
        # strip_accents=None follows lowercase, as in BERT
        tok.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=lowercase
        )
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        bos, eos = cls._framing(tok)
        tok.post_processor = processors.BertProcessing(eos, bos)
        return cls._add_special_tokens(tok)


def _do_lower_case(path: Path) -> bool:
    """``do_lower_case`` of ``path/tokenizer_config.json`` (True when absent, as BERT's uncased vocabularies)."""
    config = path / "tokenizer_config.json"
    if not config.is_file():
        return True
    try:
        value = json.loads(config.read_text(encoding="utf-8")).get("do_lower_case", True)
    except (OSError, UnicodeDecodeError, ValueError, AttributeError) as e:
        raise DataError(f"{config}: cannot read do_lower_case ({type(e).__name__}: {e})") from None
    if not isinstance(value, bool):
        raise DataError(f"{config}: do_lower_case must be true or false, got {value!r}")
    return value
