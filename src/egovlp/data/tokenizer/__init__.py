"""Tokenizers behind one interface, and MLM masking.

:class:`Tokenizer` is the interface (``tok(texts, max_length, padding) -> {input_ids, attention_mask}``, ``encode``,
``decode``, the special ids, ``non_special_ids``); :meth:`Tokenizer.from_dir` loads a folder of either kind and
:meth:`Tokenizer.train` trains one offline:

* ``"bpe"``: :class:`BPETokenizer`, RoBERTa's byte-level BPE (``tokenizer.json`` or ``vocab.json`` +
  ``merges.txt``), ``<s> A </s>``;
* ``"wordpiece"``: :class:`WordPieceTokenizer`, BERT / DistilBERT WordPiece uncased (``tokenizer.json`` or
  ``vocab.txt``), ``[CLS] A [SEP]``.

:func:`mask_tokens` masks for MLM with the tokenizer's own special ids.
"""

from egovlp.data.tokenizer.base import TOKENIZER_FILES, SpecialTokens, Tokenizer, detect_kind, tokenizer_kinds
from egovlp.data.tokenizer.bpe import SPECIAL_TOKENS, BPETokenizer
from egovlp.data.tokenizer.masking import mask_tokens
from egovlp.data.tokenizer.wordpiece import WORDPIECE_SPECIAL_TOKENS, WordPieceTokenizer

__all__ = [
    "SPECIAL_TOKENS",
    "TOKENIZER_FILES",
    "WORDPIECE_SPECIAL_TOKENS",
    "BPETokenizer",
    "SpecialTokens",
    "Tokenizer",
    "WordPieceTokenizer",
    "detect_kind",
    "mask_tokens",
    "tokenizer_kinds",
]
