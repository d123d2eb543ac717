"""The tokenizer interface every text tower uses, and the detection of a tokenizer folder's kind.

A :class:`Tokenizer` wraps a ``tokenizers`` pipeline (normaliser, pre-tokenizer, model, decoder) and frames every
text as ``first tokens last`` (``<s> ... </s>`` for a RoBERTa BPE, ``[CLS] ... [SEP]`` for a BERT WordPiece),
truncated to ``max_length`` with the last token kept and right-padded with the pad token, as HuggingFace's fast
tokenizers do with ``truncation=True``. The special-token ids are read from the vocabulary, never assumed.

Kinds register themselves by subclassing with a ``kind`` name; :meth:`Tokenizer.from_dir` picks the kind from the
folder's files (:func:`detect_kind`).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from tokenizers import AddedToken
from tokenizers import Tokenizer as _HFTokenizer

from egovlp.errors import ConfigError, DataError
from egovlp.utils.files import atomic_write

log = logging.getLogger(__name__)

__all__ = ["TOKENIZER_FILES", "SpecialTokens", "Tokenizer", "detect_kind", "tokenizer_kinds"]

# Every file a tokenizer folder may hold (what `train` writes and `egovlp data tokenizer --force` replaces).
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "vocab.txt")
_JSON_MODEL_KINDS = {"BPE": "bpe", "WordPiece": "wordpiece"}


@dataclass(frozen=True)
class SpecialTokens:
    """The special tokens of a kind, in the id order a freshly trained vocabulary gives them (ids 0-4)."""

    order: tuple[str, ...]  # training order, e.g. ("<s>", "<pad>", "</s>", "<unk>", "<mask>")
    bos: str  # opens every text: <s> / [CLS]
    eos: str  # closes every text: </s> / [SEP]
    pad: str
    unk: str
    mask: str

    def roles(self) -> tuple[str, str, str, str, str]:
        return self.bos, self.eos, self.pad, self.unk, self.mask


_KINDS: dict[str, type[Tokenizer]] = {}


def tokenizer_kinds() -> tuple[str, ...]:
    """Names of the registered kinds (``("bpe", "wordpiece")``)."""
    return tuple(_KINDS)


def detect_kind(path: str | os.PathLike) -> str:
    """The kind of the tokenizer in folder ``path``: ``tokenizer.json``'s ``model.type`` (BPE or WordPiece), else
    ``vocab.json`` + ``merges.txt`` = ``"bpe"``, else ``vocab.txt`` = ``"wordpiece"``; :class:`DataError` naming
    the folder and what it holds otherwise."""
    path = Path(path)
    if path.is_file():
        raise DataError(f"{path}: a file, not a tokenizer folder (give the folder that holds it)")
    if not path.is_dir():
        raise DataError(f"{path}: tokenizer folder not found")
    config = path / "tokenizer.json"
    if config.is_file():
        try:
            model_type = json.loads(config.read_text(encoding="utf-8"))["model"]["type"]
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{config}: not a tokenizers file with a model type ({type(e).__name__}: {e})") from None
        if model_type not in _JSON_MODEL_KINDS:
            raise DataError(
                f"{config}: model type {model_type!r} is not supported (expected one of {list(_JSON_MODEL_KINDS)})"
            )
        return _JSON_MODEL_KINDS[model_type]
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        return "bpe"
    if (path / "vocab.txt").is_file():
        return "wordpiece"
    found = sorted(p.name for p in path.iterdir())
    listing = ", ".join(found[:8]) + (f" and {len(found) - 8} more" if len(found) > 8 else "") if found else "nothing"
    raise DataError(
        f"{path}: no tokenizer (expected tokenizer.json, vocab.json + merges.txt for a BPE or vocab.txt for a "
        f"WordPiece); the folder holds {listing}"
    )


class Tokenizer:
    """A text tokenizer: ``tok(texts, max_length, padding)`` gives ``input_ids`` and ``attention_mask``.

    Build one with :meth:`from_dir` (any kind) or :meth:`train`; subclasses (:class:`BPETokenizer`,
    :class:`WordPieceTokenizer`) set ``kind``, ``special_tokens`` and how files are read and a vocabulary trained.

    Attributes:
        kind: ``"bpe"`` or ``"wordpiece"``.
        bos_id, eos_id: the ids that open and close every text (``<s>``/``</s>`` or ``[CLS]``/``[SEP]``).
        pad_id, unk_id, mask_id: padding, unknown and MLM mask ids.
        special_ids: every special id (the five above and any other special token of the file), sorted.
        vocab_size: number of ids (embedding rows a text tower needs).
        source: where the tokenizer came from, for messages.
    """

    kind: ClassVar[str] = ""
    special_tokens: ClassVar[SpecialTokens]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if cls.kind:
            _KINDS[cls.kind] = cls

    def __init__(self, tokenizer: _HFTokenizer, source: str = "<memory>") -> None:
        if not self.kind:
            raise TypeError("Tokenizer is an interface: use Tokenizer.from_dir, Tokenizer.train or a subclass")
        tokenizer.no_truncation()  # a tokenizer.json may carry its own settings; framing is done here
        tokenizer.no_padding()
        self._tok = tokenizer
        self.source = source
        ids = {t: tokenizer.token_to_id(t) for t in self.special_tokens.order}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise DataError(f"{source}: the {self.kind} tokenizer lacks the special tokens {missing}")
        self._special_token_ids = {t: int(i) for t, i in ids.items() if i is not None}
        roles = (self._special_token_ids[t] for t in self.special_tokens.roles())
        self.bos_id, self.eos_id, self.pad_id, self.unk_id, self.mask_id = roles
        added = {i for i, t in tokenizer.get_added_tokens_decoder().items() if t.special}
        self.special_ids: tuple[int, ...] = tuple(sorted(set(self._special_token_ids.values()) | added))
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        self._non_special: torch.Tensor | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dir(cls, path: str | os.PathLike) -> Tokenizer:
        """Load the tokenizer in folder ``path``, of the kind :func:`detect_kind` finds there.

        Called on a subclass, the folder must hold that kind. Raises :class:`DataError` naming the folder.
        """
        kind = detect_kind(path)
        if cls.kind and kind != cls.kind:
            raise DataError(f"{path}: holds a {kind} tokenizer, not a {cls.kind} one")
        impl = _KINDS[kind]
        return impl(impl._load(Path(path)), str(path))

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int,
        out_dir: str | os.PathLike | None = None,
        min_frequency: int = 2,
        kind: str | None = None,
    ) -> Tokenizer:
        """Train a vocabulary of about ``vocab_size`` ids on ``texts`` (offline); with ``out_dir``, save it there.

        Args:
            kind: ``"bpe"`` (default on :class:`Tokenizer`) or ``"wordpiece"``; a subclass trains its own kind.
            min_frequency: a merge (BPE) or subword (WordPiece) needs at least this many occurrences.

        The special tokens get ids 0-4 in ``special_tokens.order``. Every character seen (for BPE: all 256
        bytes) stays in the vocabulary, so a small ``vocab_size`` can be exceeded.
        """
        if cls.kind and kind not in (None, cls.kind):
            raise ValueError(f"{cls.__name__} trains {cls.kind!r}, not {kind!r}")
        name = cls.kind or kind or "bpe"
        if name not in _KINDS:
            raise ValueError(f"unknown tokenizer kind {name!r}; expected one of {list(_KINDS)}")
        if vocab_size < 1 or min_frequency < 1:
            raise ValueError(f"vocab_size and min_frequency must be >= 1, got {vocab_size} and {min_frequency}")
        impl = _KINDS[name]
        tok = impl._train(texts, vocab_size, min_frequency)
        if tok.get_vocab_size(with_added_tokens=True) > vocab_size:
            log.warning(
                "the trained %s vocabulary has %d ids, more than the %d asked for (every character is kept)",
                name,
                tok.get_vocab_size(with_added_tokens=True),
                vocab_size,
            )
        if out_dir is not None:
            _save(tok, Path(out_dir))
            log.info("trained a %d-token %s tokenizer into %s", tok.get_vocab_size(), name, out_dir)
        return impl(tok, str(out_dir or "<trained>"))

    @classmethod
    def _load(cls, path: Path) -> _HFTokenizer:
        """The pipeline of folder ``path`` (``tokenizer.json`` first, then the kind's vocabulary files)."""
        config = path / "tokenizer.json"
        if not config.is_file():
            return cls._load_vocab(path)
        try:
            return _HFTokenizer.from_file(str(config))
        except Exception as e:  # tokenizers raises plain Exception subclasses
            raise DataError(f"{config}: cannot load tokenizer: {e}") from None

    @classmethod
    def _load_vocab(cls, path: Path) -> _HFTokenizer:
        raise NotImplementedError

    @classmethod
    def _train(cls, texts: Iterable[str], vocab_size: int, min_frequency: int) -> _HFTokenizer:
        raise NotImplementedError

    @classmethod
    def _check_vocab_has_specials(cls, vocab: dict[str, int], where: Path) -> None:
        """Refuse a vocabulary file without the kind's special tokens (adding them would invent new ids)."""
        missing = [t for t in cls.special_tokens.roles() if t not in vocab]
        if missing:
            raise DataError(f"{where}: the {cls.kind} vocabulary lacks the special tokens {missing}")

    @classmethod
    def _framing(cls, tok: _HFTokenizer) -> tuple[tuple[str, int], tuple[str, int]]:
        """``((bos, id), (eos, id))`` for a post-processor (the vocabulary was checked to hold both)."""
        pairs = []
        for token in (cls.special_tokens.bos, cls.special_tokens.eos):
            i = tok.token_to_id(token)
            if i is None:
                raise DataError(f"the {cls.kind} vocabulary lacks the special token {token}")
            pairs.append((token, i))
        return pairs[0], pairs[1]

    @classmethod
    def _add_special_tokens(cls, tok: _HFTokenizer) -> _HFTokenizer:
        """Mark the special tokens (never split, dropped by ``decode(skip_special_tokens=True)``)."""
        tok.add_special_tokens(
            [
                AddedToken(t, lstrip=False, rstrip=False, normalized=False, special=True)
                for t in cls.special_tokens.order
            ]
        )
        return tok

    # ------------------------------------------------------------------ use
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
        """Encode a batch as ``bos ... eos``, truncated to ``max_length`` (``eos`` kept) and right-padded.

        Args:
            texts: B strings.
            padding: ``"longest"`` (pad to the longest row, at most ``max_length``) or ``"max_length"``.

        Returns:
            ``input_ids`` and ``attention_mask``, LongTensor ``(B, L)``; padding has id ``pad_id`` and mask 0.
        """
        if isinstance(texts, str):
            raise TypeError("texts must be a list of strings, not a string")
        if padding not in ("longest", "max_length"):
            raise ValueError(f"padding must be 'longest' or 'max_length', got {padding!r}")
        if padding == "max_length" and max_length is None:
            raise ValueError("padding='max_length' needs max_length")
        if max_length is not None and max_length < 2:
            specials = self.special_tokens
            raise ValueError(f"max_length must be >= 2 (room for {specials.bos} and {specials.eos}), got {max_length}")
        rows = [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]
        keep = None if max_length is None else max_length - 2
        rows = [[self.bos_id, *r[:keep], self.eos_id] for r in rows]
        length = max_length if padding == "max_length" and max_length else max((len(r) for r in rows), default=2)
        input_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            attention_mask[i, : len(r)] = 1
        return {"input_ids": input_ids, "attention_mask": attention_mask}

    def non_special_ids(self) -> torch.Tensor:
        """All ids that are not special tokens, ascending, ``(V - num_special,)`` (MLM's random-replacement pool)."""
        if self._non_special is None:
            ids = set(self._tok.get_vocab(with_added_tokens=True).values()) - set(self.special_ids)
            self._non_special = torch.tensor(sorted(ids), dtype=torch.long)
        return self._non_special

    def special_token_ids(self) -> dict[str, int]:
        """``{token: id}`` of the five framing/padding/mask tokens, in ``special_tokens.order``."""
        return dict(self._special_token_ids)

    def check_model(self, vocab_size: int, pad_token_id: int | None = None, key: str = "model.text") -> None:
        """Raise :class:`ConfigError` when a text tower with ``vocab_size`` embedding rows (and, for a tower that
        places positions after padding, ``pad_token_id``) cannot take this tokenizer's ids."""
        if self.vocab_size > vocab_size:
            raise ConfigError(
                f"the tokenizer {self.source} has {self.vocab_size} tokens but {key}.vocab_size is {vocab_size}"
            )
        if pad_token_id is not None and pad_token_id != self.pad_id:
            raise ConfigError(
                f"the tokenizer {self.source} pads with id {self.pad_id} but {key}.pad_token_id is {pad_token_id}"
            )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(source={self.source!r}, vocab_size={self.vocab_size}, pad_id={self.pad_id}, "
            f"mask_id={self.mask_id})"
        )


def _save(tok: _HFTokenizer, out: Path) -> None:
    """Write ``tokenizer.json`` and the model's own vocabulary files (each file atomically)."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "tokenizer.json", lambda p: tok.save(str(p)))
    with tempfile.TemporaryDirectory(dir=out, prefix=".vocab-") as tmp:
        for name in tok.model.save(tmp):
            os.replace(name, out / Path(name).name)
