"""EgoClip items with OA-Trans's object streams: tag sentence, object-centric anchor frame, box patch masks.

Per clip (families.md §3a, §3f), from the clip's detected frames:

1. **anchor frame**: the detected frame (with at least one box) whose time is closest to the mean of the clip's
   sampled frame times. The release uses the sampled indices of the item; the mean of F random times, one per equal
   segment, is the clip middle in expectation and exactly under uniform sampling, so egovlp takes the middle.
2. **objects**: the anchor frame's top ``top_k`` boxes by confidence (stable order); fewer boxes are not padded
   by repetition (the release repeats the last one), a validity flag marks the padding instead.
3. **tag sentence**: the objects' tag words joined by spaces, in confidence order (the release's
   ``" ".join(words)``).
4. **patch masks**: box ``o`` covers patches ``rows floor(y1*g) .. ceil(y2*g)-1``, ``cols floor(x1*g) ..
   ceil(x2*g)-1`` of the ``g x g`` grid (g = 14 for 224 px and patch 16), the release's ``patch_all_masks_from_bbox``.
5. **masked anchor frame**: the anchor frame resized to ``size x size`` (squashed, so the normalised boxes stay
   exact; OA-Trans's eval resize), normalised, and every patch outside the union of the boxes set to 0 (the mean
   colour): the object-irrelevant regions masked out.

A clip with no usable detections has ``has_objects = False`` (its object streams leave the loss; see
:mod:`egovlp.losses.oa`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from egovlp.data.collate import flatten_pairs
from egovlp.data.detections import BUTDDetections, FrameDetections, JSONDetections
from egovlp.data.transforms import as_clip_tensor, normalize, resized_crop
from egovlp.data.video_io import read_clip
from egovlp.errors import VideoReadError

__all__ = [
    "ObjectAwareClips",
    "ObjectCollate",
    "box_patch_masks",
    "select_anchor",
    "tag_sentence",
    "tag_token_spans",
    "top_objects",
]


def select_anchor(frames: Sequence[FrameDetections], time: float) -> int | None:
    """Index of the frame with boxes closest in time to ``time`` (the first of equals); None when none has boxes."""
    best, best_gap = None, math.inf
    for i, frame in enumerate(frames):
        gap = abs(frame.time - time)
        if len(frame.labels) and gap < best_gap:
            best, best_gap = i, gap
    return best


def top_objects(frame: FrameDetections, k: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """The ``k`` most confident boxes ``(k', 4)`` and their tag words, by descending score (stable for ties)."""
    order = np.argsort(-frame.scores, kind="stable")[:k]
    return frame.boxes[order], tuple(frame.labels[i] for i in order)


def tag_sentence(labels: Sequence[str]) -> str:
    return " ".join(labels)


def box_patch_masks(boxes: np.ndarray, grid: int) -> np.ndarray:
    """Normalised boxes ``(K, 4)`` -> ``(K, grid, grid)`` bool: the patches each box covers (any overlap)."""
    masks = np.zeros((len(boxes), grid, grid), dtype=bool)
    for o, (x1, y1, x2, y2) in enumerate(boxes):
        r0, r1 = math.floor(y1 * grid), math.ceil(y2 * grid)
        c0, c1 = math.floor(x1 * grid), math.ceil(x2 * grid)
        masks[o, max(r0, 0) : min(r1, grid), max(c0, 0) : min(c1, grid)] = True
    return masks


def tag_token_spans(
    tokenizer: Any, caption: str, labels: Sequence[str], max_length: int
) -> tuple[list[int], np.ndarray]:
    """Token ids of ``caption + " " + tags`` framed ``bos ... eos`` (truncated to ``max_length``) and the positions
    of each tag's word pieces, ``(K, max_length)`` bool (the released global-local variant's ``pad_text``).

    Each piece is encoded on its own (a tag with a leading space, as it follows a word), so a tag's span is exact.
    """
    ids = [tokenizer.bos_id, *tokenizer.encode(caption)]
    spans = np.zeros((len(labels), max_length), dtype=bool)
    for o, label in enumerate(labels):
        piece = tokenizer.encode(" " + label)
        start = len(ids)
        ids.extend(piece)
        spans[o, min(start, max_length - 1) : min(len(ids), max_length - 1)] = True
    ids = [*ids[: max_length - 1], tokenizer.eos_id]
    return ids, spans


class ObjectAwareClips(Dataset):
    """An :class:`~egovlp.data.egoclip.EgoClipDataset` whose items also carry the object streams.

    Added per item: ``tags`` str, ``anchor (3, size, size)`` float masked anchor frame, ``object_boxes (K, 4)``,
    ``object_valid (K,)`` bool, ``object_labels`` list of K words ("" for padding), ``object_masks (K, g, g)``
    bool, ``has_objects`` bool. Clips are looked up by ``str(clip_idx)`` in the detections.
    """

    def __init__(
        self,
        base: Any,
        detections: BUTDDetections | JSONDetections,
        top_k: int,
        size: int,
        patch_size: int,
        keep_unmasked_anchor: bool = False,
    ) -> None:
        self.base, self.detections, self.top_k = base, detections, int(top_k)
        self.size, self.grid = int(size), int(size) // int(patch_size)
        self.keep_unmasked_anchor = keep_unmasked_anchor
        table = base.table
        self.row_of_clip = {int(c): i for i, c in enumerate(table.clip_idx)}

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> Any:
        item = self.base[i]
        if item is None:
            return None
        return self.base.policy.load(lambda: self._add_objects(item), f"EgoClip sample {i} (anchor frame)")

    def _add_objects(self, item: Any) -> Any:
        if isinstance(item, tuple):
            return tuple(self._one(it) for it in item)
        return self._one(item)

    def _one(self, item: dict) -> dict:
        t, k, g = self.base.table, self.top_k, self.grid
        row = self.row_of_clip[int(item["clip_idx"])]
        start, end = float(t.clip_start[row]), float(t.clip_end[row])
        frames = self.detections.clip(str(item["clip_idx"]), start, end)
        anchor = select_anchor(frames, (start + end) / 2)
        boxes = np.zeros((k, 4), dtype=np.float32)
        valid = np.zeros(k, dtype=bool)
        labels: tuple[str, ...] = ()
        image = torch.zeros(3, self.size, self.size)
        unmasked = image
        if anchor is not None:
            top, labels = top_objects(frames[anchor], k)
            boxes[: len(top)], valid[: len(top)] = top, True
            unmasked = self._read_frame(item["video_uid"], frames[anchor].time)
        masks = box_patch_masks(boxes, g) & valid[:, None, None]
        union = torch.from_numpy(masks.any(0))
        pixel_mask = union.repeat_interleave(self.size // g, 0).repeat_interleave(self.size // g, 1)
        out = {
            **item,
            "tags": tag_sentence(labels),
            "anchor": unmasked * pixel_mask,  # (3, size, size): patches outside every box are 0
            "object_boxes": torch.from_numpy(boxes),
            "object_valid": torch.from_numpy(valid),
            "object_labels": [*labels, *[""] * (k - len(labels))],
            "object_masks": torch.from_numpy(masks),
            "has_objects": anchor is not None,
        }
        if self.keep_unmasked_anchor:
            out["anchor_full"] = unmasked
        return out

    def _read_frame(self, video_uid: str, time: float) -> torch.Tensor:
        b = self.base
        try:
            frame = read_clip(b.video_root, video_uid, time, time, 1, "uniform", b.chunk_seconds)
        except VideoReadError as e:
            raise VideoReadError(f"{e} [anchor frame of {video_uid} at {time:.3f} s]") from None
        clip = as_clip_tensor(frame)
        h, w = clip.shape[-2:]
        return normalize(resized_crop(clip, 0, 0, h, w, self.size))[0]


class ObjectCollate:
    """Wraps an :class:`~egovlp.data.collate.EgoClipCollate`: its batch plus the object streams of the same items.

    Adds ``tag_input_ids`` / ``tag_attention_mask (N, L)`` (the tag sentences), ``anchor (N, 3, H, W)``,
    ``object_valid (N, K)``, ``object_masks (N, K, g, g)``, ``has_objects (N,)`` and, with ``caption_tags``,
    ``caption_tag_ids`` / ``caption_tag_mask (N, L)`` and ``tag_spans (N, K, L)`` (the global-local variant's text)
    and ``anchor_full`` where the items hold it.
    """

    def __init__(self, base: Callable, tokenizer: Any, max_length: int, caption_tags: bool = False) -> None:
        self.base, self.tokenizer, self.max_length, self.caption_tags = base, tokenizer, max_length, caption_tags

    def __call__(self, batch: Sequence[Any]) -> dict[str, Any]:
        out = self.base(batch)
        items, _ = flatten_pairs(batch)
        if not items:
            return out
        tags = self.tokenizer([it["tags"] for it in items], max_length=self.max_length, padding="max_length")
        out.update(
            tag_input_ids=tags["input_ids"],
            tag_attention_mask=tags["attention_mask"],
            anchor=torch.stack([it["anchor"] for it in items]),
            object_valid=torch.stack([it["object_valid"] for it in items]),
            object_masks=torch.stack([it["object_masks"] for it in items]),
            has_objects=torch.tensor([it["has_objects"] for it in items], dtype=torch.bool),
        )
        if "anchor_full" in items[0]:
            out["anchor_full"] = torch.stack([it["anchor_full"] for it in items])
        if self.caption_tags:
            length = 2 * self.max_length
            pad = self.tokenizer.pad_id
            ids = torch.full((len(items), length), pad, dtype=torch.long)
            spans = torch.zeros(len(items), len(items[0]["object_labels"]), length, dtype=torch.bool)
            for n, it in enumerate(items):
                labels = [w for w, ok in zip(it["object_labels"], it["object_valid"].tolist()) if ok]
                row, span = tag_token_spans(self.tokenizer, it["text"], labels, length)
                ids[n, : len(row)] = torch.tensor(row)
                spans[n, : len(labels)] = torch.from_numpy(span)
            out.update(caption_tag_ids=ids, caption_tag_mask=(ids != pad).long(), tag_spans=spans)
        return out
