"""RoBERTa byte-level BPE tokenizer (the ``tokenizers`` library) and MLM masking.

A tokenizer directory holds ``tokenizer.json`` or the classic ``vocab.json`` + ``merges.txt`` pair (what
HuggingFace's ``roberta-base`` ships). Special tokens and their ids are RoBERTa's: ``<s>`` 0, ``<pad>`` 1,
``</s>`` 2, ``<unk>`` 3 and ``<mask>`` (50264 in RoBERTa; 4 in a tokenizer trained by :meth:`Tokenizer.train`).

Encoding matches HuggingFace's ``RobertaTokenizerFast``: ``<s> tokens </s>``, truncation keeps ``</s>``, padding
with ``<pad>`` on the right.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as _HFTokenizer

from egovlp.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["SPECIAL_TOKENS", "Tokenizer", "mask_tokens"]

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def _roberta_pipeline(tok: _HFTokenizer) -> _HFTokenizer:
    """Byte-level pre-tokenizer/decoder and ``<s> A </s>`` post-processing, as RoBERTa."""
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), add_prefix_space=False)
    tok.add_special_tokens(
        [AddedToken(t, lstrip=False, rstrip=False, normalized=False, special=True) for t in SPECIAL_TOKENS]
    )
    return tok


class Tokenizer:
    """A RoBERTa-style tokenizer: ``tok(texts, max_length, padding)`` gives ``input_ids`` and ``attention_mask``."""

    def __init__(self, tokenizer: _HFTokenizer, source: str = "<memory>") -> None:
        self._tok = tokenizer
        self.source = source
        ids = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise DataError(f"{source}: tokenizer lacks the special tokens {missing}")
        expected = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}
        wrong = {t: ids[t] for t in expected if ids[t] != expected[t]}
        if wrong:
            raise DataError(f"{source}: special token ids {wrong} differ from RoBERTa's {expected}")
        self.bos_id, self.pad_id, self.eos_id, self.unk_id, self.mask_id = (ids[t] for t in SPECIAL_TOKENS)
        self.special_ids: tuple[int, ...] = tuple(sorted(ids.values()))
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        self._non_special: torch.Tensor | None = None

    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> Tokenizer:
        """Load ``path/tokenizer.json``, or ``path/vocab.json`` + ``path/merges.txt`` (a RoBERTa BPE)."""
        path = Path(path)
        if (path / "tokenizer.json").is_file():
            try:
                return cls(_HFTokenizer.from_file(str(path / "tokenizer.json")), str(path / "tokenizer.json"))
            except Exception as e:  # tokenizers raises plain Exception subclasses
                raise DataError(f"{path / 'tokenizer.json'}: cannot load tokenizer: {e}") from None
        vocab, merges = path / "vocab.json", path / "merges.txt"
        if not (vocab.is_file() and merges.is_file()):
            raise DataError(f"{path}: no tokenizer.json and no vocab.json + merges.txt")
        try:
            model = models.BPE.from_file(str(vocab), str(merges))
        except Exception as e:
            raise DataError(f"{path}: cannot load vocab.json/merges.txt: {e}") from None
        return cls(_roberta_pipeline(_HFTokenizer(model)), str(path))

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int, out_dir: str | os.PathLike | None = None, min_frequency: int = 2
    ) -> Tokenizer:
        """Train a byte-level BPE on ``texts`` (offline); save ``tokenizer.json``, ``vocab.json``, ``merges.txt``.

        Special tokens get ids 0-4 (``<s> <pad> </s> <unk> <mask>``); the 256 byte symbols follow, then merges.
        """
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
        tok = _roberta_pipeline(tok)
        if out_dir is not None:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            tok.save(str(out / "tokenizer.json"))
            tok.model.save(str(out))  # vocab.json + merges.txt
            log.info("trained a %d-token BPE tokenizer into %s", tok.get_vocab_size(), out)
        return cls(tok, str(out_dir or "<trained>"))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without special tokens."""
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int] | torch.Tensor, skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` (special tokens dropped by default)."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return self._tok.decode(ids, skip_special_tokens=skip_special_tokens)

    def __call__(
        self, texts: Sequence[str], max_length: int | None = None, padding: str = "longest"
    ) -> dict[str, torch.Tensor]:
        """Encode a batch as ``<s> ... </s>``, truncated to ``max_length`` (``</s>`` kept) and right-padded.

        Args:
            padding: ``"longest"`` (pad to the longest row, at most ``max_length``) or ``"max_length"``.

        Returns:
            ``input_ids`` and ``attention_mask``, LongTensor ``(B, L)``.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not a string")
        if padding not in ("longest", "max_length"):
            raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
        if padding == "max_length" and max_length is None:
            raise ValueError("padding='max_length' needs max_length")
        if max_length is not None and max_length < 2:
            raise ValueError(f"max_length must be >= 2 (room for <s> and </s>), got {max_length}")
        rows = [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]
        keep = None if max_length is None else max_length - 2
        rows = [[self.bos_id, *r[:keep], self.eos_id] for r in rows]
        length = max_length if padding == "max_length" else max((len(r) for r in rows), default=2)
        input_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            attention_mask[i, : len(r)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def non_special_ids(self) -> torch.Tensor:
        """All ids that are not special tokens, ``(V - num_special,)`` (the pool for MLM's random replacement)."""
        if self._non_special is None:
            keep = torch.ones(self.vocab_size, dtype=torch.bool)
            keep[list(self.special_ids)] = False
            self._non_special = torch.nonzero(keep).flatten()
        return self._non_special

    def __repr__(self) -> str:
        return f"Tokenizer(source={self.source!r}, vocab_size={self.vocab_size}, mask_id={self.mask_id})"


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    tokenizer: Tokenizer,
    probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style masking for MLM: pick ``probability`` of the non-special, non-pad tokens; of those 80 % become
    ``<mask>``, 10 % a random non-special token, 10 % stay.

    Args:
        input_ids, attention_mask: ``(B, L)`` LongTensors.

    Returns:
        ``(masked_input_ids, labels)``, both ``(B, L)``; labels hold the original id at picked positions and -100
        elsewhere. Deterministic for a seeded ``generator``.
    """
    special = torch.zeros_like(input_ids, dtype=torch.bool)
    for i in tokenizer.special_ids:
        special |= input_ids == i
    candidates = attention_mask.bool() & ~special
    probs = torch.full(input_ids.shape, probability) * candidates
    picked = torch.bernoulli(probs, generator=generator).bool()
    labels = torch.where(picked, input_ids, torch.full_like(input_ids, -100))
    to_mask = torch.bernoulli(torch.full(input_ids.shape, 0.8), generator=generator).bool() & picked
    to_random = torch.bernoulli(torch.full(input_ids.shape, 0.5), generator=generator).bool() & picked & ~to_mask
    pool = tokenizer.non_special_ids()
    random_ids = pool[torch.randint(len(pool), input_ids.shape, generator=generator)]
    masked = torch.where(to_mask, torch.full_like(input_ids, tokenizer.mask_id), input_ids)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels
