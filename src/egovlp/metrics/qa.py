"""EgoTaskQA accuracy per reasoning type, per question type (open / binary) and overall (downstream.md §1).

Definitions (the release's ``ReasongingTypeAccCalculator`` and the paper's table):

- A question is correct when the predicted answer class equals ``answer_encode`` (the argmax of the logits, first
  index on ties, when logits are given).
- Per reasoning type: a question counts once for EVERY type in its ``reasoning_type`` list (``$``-joined, e.g.
  ``descriptive$intent``), so the per-type totals add up to more than the number of questions. As in the release,
  a name listed twice in one question counts twice; an empty string names no type.
- Per question type (the record's ``type``, ``open`` / ``binary``): accuracy over those questions; "All" = over
  every question of the split.
- A reasoning type of ``all_reasoning_types`` (``all_reasoning_types.txt``) with no question: the release reports
  accuracy 0; here its accuracy is ``None`` and its count 0. A type outside that list is an error (the release
  fails with a ``KeyError``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from ._utils import as_numpy, check_no_nan

__all__ = ["QUESTION_TYPES", "QAAccuracy", "TypeAccuracy", "egotaskqa_accuracy", "split_reasoning_types"]

QUESTION_TYPES = ("open", "binary")


@dataclass(frozen=True)
class TypeAccuracy:
    """``correct`` of ``total`` questions; ``accuracy`` is ``None`` when there is none."""

    correct: int
    total: int

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.total if self.total else None


@dataclass(frozen=True)
class QAAccuracy:
    """EgoTaskQA accuracy overall, per question type and per reasoning type.

    Attributes:
        overall: every question.
        by_type: ``open`` and ``binary`` (always present), then any other ``type`` value seen.
        by_reasoning: every type of ``all_reasoning_types`` (in its order), then any other seen (first-seen order).
    """

    overall: TypeAccuracy
    by_type: dict[str, TypeAccuracy]
    by_reasoning: dict[str, TypeAccuracy]

    def to_dict(self, percent: bool = True) -> dict[str, float | int | None]:
        """``{"All": ..., "All/count": N, "open": ..., "reasoning/descriptive": ..., ...}``: the accuracy (in
        percent by default; ``None`` without questions) and the count of each group."""
        scale = 100.0 if percent else 1.0
        groups = {"All": self.overall, **self.by_type, **{f"reasoning/{k}": v for k, v in self.by_reasoning.items()}}
        out: dict[str, float | int | None] = {}
        for name, group in groups.items():
            acc = group.accuracy
            out[name] = None if acc is None else scale * acc
            out[f"{name}/count"] = group.total
        return out


def split_reasoning_types(value: str | Sequence[str]) -> list[str]:
    """A record's ``reasoning_type`` (``"a$b"`` or an already split list) as the list of names (empty names dropped)."""
    names = value.split("$") if isinstance(value, str) else list(value)
    return [n for n in names if n]


def egotaskqa_accuracy(
    predictions: ArrayLike,
    answers: ArrayLike,
    question_types: Sequence[str],
    reasoning_types: Sequence[str | Sequence[str]],
    all_reasoning_types: Sequence[str] | None = None,
) -> QAAccuracy:
    """Accuracy of the predicted answers, overall, per ``type`` and per reasoning type.

    Args:
        predictions: ``(N,)`` predicted answer class ids, or ``(N, A)`` logits / scores (argmax, first on ties).
        answers: ``(N,)`` ground-truth class ids (the records' ``answer_encode``).
        question_types: ``N`` record ``type`` values (``"open"`` / ``"binary"``).
        reasoning_types: ``N`` record ``reasoning_type`` values (``"descriptive$intent"``, or lists of names).
        all_reasoning_types: the names of ``all_reasoning_types.txt`` (reported even without a question); ``None``:
            the names seen.

    Raises:
        ValueError: the inputs disagree on N, or a reasoning type is not in ``all_reasoning_types``.
    """
    p = as_numpy(predictions, "predictions")
    if p.ndim == 2:
        check_no_nan(p, "predictions")
        p = p.argmax(axis=1)  # first index among equal maxima
    p = p.reshape(-1).astype(np.int64)
    a = as_numpy(answers, "answers", ndim=1).astype(np.int64)
    n = len(a)
    if not (len(p) == n == len(question_types) == len(reasoning_types)):
        raise ValueError(
            f"predictions ({len(p)}), answers ({n}), question_types ({len(question_types)}) and reasoning_types "
            f"({len(reasoning_types)}) disagree on N"
        )
    correct = (p == a).tolist()
    known = None if all_reasoning_types is None else set(all_reasoning_types)
    by_type: dict[str, list[int]] = {t: [0, 0] for t in QUESTION_TYPES}
    by_reasoning: dict[str, list[int]] = {t: [0, 0] for t in (all_reasoning_types or ())}
    for i, (ok, qtype, reasoning) in enumerate(zip(correct, question_types, reasoning_types)):
        counts = by_type.setdefault(str(qtype), [0, 0])
        counts[0] += ok
        counts[1] += 1
        for name in split_reasoning_types(reasoning):
            if known is not None and name not in known:
                raise ValueError(f"question {i}: reasoning type {name!r} is not in all_reasoning_types")
            counts = by_reasoning.setdefault(name, [0, 0])
            counts[0] += ok
            counts[1] += 1
    return QAAccuracy(
        TypeAccuracy(int(sum(correct)), n),
        {k: TypeAccuracy(*v) for k, v in by_type.items()},
        {k: TypeAccuracy(*v) for k, v in by_reasoning.items()},
    )
