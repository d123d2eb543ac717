"""RoBERTa byte-level BPE: ``tokenizer.json`` or the classic ``vocab.json`` + ``merges.txt`` (``roberta-base``).

Special tokens ``<s> <pad> </s> <unk> <mask>``: ids 0, 1, 2, 3 and 50264 in ``roberta-base``, 0-4 in a vocabulary
trained here. Encoding matches HuggingFace's ``RobertaTokenizerFast``: ``<s> tokens </s>``, no prefix space.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from egovlp.data.tokenizer.base import SpecialTokens, Tokenizer
from egovlp.errors import DataError

__all__ = ["SPECIAL_TOKENS", "BPETokenizer"]

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


class BPETokenizer(Tokenizer):
    """RoBERTa's byte-level BPE (``kind = "bpe"``)."""

    kind = "bpe"
    special_tokens = SpecialTokens(SPECIAL_TOKENS, bos="<s>", eos="</s>", pad="<pad>", unk="<unk>", mask="<mask>")

    @classmethod
    def _load_vocab(cls, path: Path) -> _HFTokenizer:
        vocab, merges = path / "vocab.json", path / "merges.txt"
        try:
            model = models.BPE.from_file(str(vocab), str(merges))
        except Exception as e:  # tokenizers raises plain Exception subclasses
            raise DataError(f"{path}: cannot load vocab.json/merges.txt: {e}") from None
        tok = _HFTokenizer(model)
        cls._check_vocab_has_specials(tok.get_vocab(), vocab)
        return cls._pipeline(tok)

    @classmethod
    def _train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int) -> _HFTokenizer:
        tok = _HFTokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=min_frequency,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls._pipeline(tok)

    @classmethod
    def _pipeline(cls, tok: _HFTokenizer) -> _HFTokenizer:
        """Byte-level pre-tokenizer and decoder and ``<s> A </s>`` post-processing, as RoBERTa."""
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        bos, eos = cls._framing(tok)
        tok.post_processor = processors.RobertaProcessing(eos, bos, add_prefix_space=False)
        return cls._add_special_tokens(tok)
