"""EgoMCQ accuracy per question type (REFERENCE §4): argmax over the 5 option scores, first index on ties.

Type ids: 1 = inter-video (options from different videos), 2 = intra-video (options from the same video). Older
releases printed these two labels swapped; the fields here are named by type id, so there is nothing to swap.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._utils import Array, as_numpy, check_no_nan

__all__ = ["INTER_VIDEO", "INTRA_VIDEO", "MCQAccuracy", "egomcq_accuracy"]

INTER_VIDEO, INTRA_VIDEO = 1, 2


@dataclass(frozen=True)
class MCQAccuracy:
    """Accuracy (fractions in [0, 1]; ``None`` when there is no question of that kind) and the counts behind it.

    ``per_type`` maps every type id present to ``(correct, total)``.
    """

    inter_video: float | None
    intra_video: float | None
    overall: float | None
    per_type: dict[int, tuple[int, int]]

    @property
    def num_questions(self) -> int:
        return sum(total for _, total in self.per_type.values())

    def to_dict(self, percent: bool = True) -> dict[str, float | None]:
        scale = 100.0 if percent else 1.0
        values = {"Inter-video": self.inter_video, "Intra-video": self.intra_video, "Overall": self.overall}
        return {k: None if v is None else scale * v for k, v in values.items()}


def egomcq_accuracy(scores: Array, answers: Array, types: Array) -> MCQAccuracy:
    """Accuracy of ``argmax(scores)`` against ``answers``, per question type and overall.

    Args:
        scores: ``(N, K)`` option scores (K = 5 for EgoMCQ), numpy or torch, no NaN.
        answers: ``(N,)`` index of the correct option.
        types: ``(N,)`` question type ids (1 inter-video, 2 intra-video).
    """
    s = as_numpy(scores, "scores", ndim=2)
    a = as_numpy(answers, "answers", ndim=1).astype(np.int64)
    t = as_numpy(types, "types", ndim=1).astype(np.int64)
    if not (s.shape[0] == a.shape[0] == t.shape[0]):
        raise ValueError(f"scores {s.shape}, answers {a.shape} and types {t.shape} disagree on N")
    check_no_nan(s, "scores")
    if a.size and (a.min() < 0 or a.max() >= s.shape[1]):
        raise ValueError(f"answers must lie in [0, {s.shape[1]})")
    correct = s.argmax(axis=1) == a  # argmax returns the first index among equal maxima
    per_type = {int(k): (int(correct[t == k].sum()), int((t == k).sum())) for k in np.unique(t)}

    def accuracy(mask: np.ndarray) -> float | None:
        return float(correct[mask].mean()) if mask.any() else None

    everything = np.ones_like(correct)
    return MCQAccuracy(accuracy(t == INTER_VIDEO), accuracy(t == INTRA_VIDEO), accuracy(everything), per_type)
