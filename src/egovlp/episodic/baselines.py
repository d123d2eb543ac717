"""The trivial MQ baseline a trained detector must beat: uniform proposals.

For every clip and every class, segments of one fixed length (the mean length of the training moments) tiled over
the clip every ``stride_fraction`` of that length; each scored by its class's share of the training moments (so the
ranking across classes follows the class prior and, within a class, the earlier segment on ties). It knows the
length and class statistics of the training set and nothing of the video.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from egovlp.data.moments import MQClip

__all__ = ["uniform_proposals"]


def uniform_proposals(
    clips: Sequence[MQClip], train: Sequence[MQClip], num_classes: int, stride_fraction: float = 0.5
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """``(clip_uids (K,), labels (K,), segments (K, 2) seconds, scores (K,))`` of the uniform-proposal baseline.

    Args:
        clips: the clips to propose segments in; train: the training clips (length and class statistics).
        num_classes: C (class ids ``0..C-1``); stride_fraction: the step between proposals, as a part of the length.
    """
    lengths = np.array([e - s for c in train for s, e in c.segments], np.float64)
    counts = np.bincount(np.array([lab for c in train for lab in c.labels], np.int64), minlength=num_classes)
    if not lengths.size:
        raise ValueError("the training clips hold no moment: no length to propose")
    length = float(lengths.mean())
    prior = counts / counts.sum()
    uids: list[str] = []
    labels, segments, scores = [], [], []
    for clip in clips:
        starts = np.arange(0.0, max(clip.duration - length, 0.0) + 1e-9, stride_fraction * length)
        seg = np.stack([starts, np.minimum(starts + length, clip.duration)], axis=1)  # (S, 2)
        for c in range(num_classes):
            uids += [clip.clip_uid] * len(seg)
            labels.append(np.full(len(seg), c, np.int64))
            segments.append(seg)
            scores.append(np.full(len(seg), prior[c]))
    if not uids:
        return [], np.zeros(0, np.int64), np.zeros((0, 2)), np.zeros(0)
    return uids, np.concatenate(labels), np.concatenate(segments), np.concatenate(scores)
