"""Batch collation: tokenise narrations, flatten scene-negative pairs, drop skipped samples, MLM-mask.

Collates are picklable objects (they hold the tokenizer), so they run inside DataLoader workers. They draw no random
numbers: MLM masking of a row uses the ``mlm_seed`` its dataset item drew from the item's own random stream.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch

from egovlp.data.tokenizer import Tokenizer, mask_tokens

log = logging.getLogger(__name__)

__all__ = ["EgoClipCollate", "EgoMCQCollate", "flatten_pairs", "mask_rows"]


def flatten_pairs(batch: Sequence[Any]) -> tuple[list[dict], int]:
    """Drop None items; turn ``(sample, negative)`` pairs into ``[samples..., negatives...]``.

    Returns the flat list and the number of None items dropped. With pairs, the first half of the result is the
    samples in batch order and the second half their negatives in the same order (as the official trainer
    concatenates ``video`` and ``video_neg``), so item ``i`` and ``i + B`` come from the same scene.
    """
    kept = [b for b in batch if b is not None]
    skipped = len(batch) - len(kept)
    if kept and isinstance(kept[0], (tuple, list)):
        return [p[0] for p in kept] + [p[1] for p in kept], skipped
    return list(kept), skipped


class EgoClipCollate:
    """Collate EgoClip items (dicts or pairs of dicts) into a training batch.

    Args:
        tokenizer: a :class:`~egovlp.data.tokenizer.Tokenizer`.
        max_length, padding: text length (15, padded to ``max_length`` in pre-training).
        mlm_probability: add ``mlm_input_ids`` / ``mlm_labels`` masked at this rate (None: no MLM); each row is
            masked with a generator seeded by its item's ``mlm_seed``.

    Returns a dict (N = items kept, 2x the pairs with scene negatives): ``video (N, F, 3, H, W)``, ``input_ids`` and
    ``attention_mask`` ``(N, L)``, ``verb (N, num_verbs)``, ``noun (N, num_nouns)``, ``clip_idx (N,)``, ``text``
    and ``video_uid`` lists, ``num_skipped`` int (samples dropped as None in this batch) and, with MLM,
    ``mlm_input_ids``, ``mlm_labels`` ``(N, L)``. When every sample was skipped the dict holds only
    ``num_skipped`` (check ``"video" in batch``).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        max_length: int | None = 15,
        padding: str = "max_length",
        mlm_probability: float | None = 0.15,
    ) -> None:
        self.tokenizer, self.max_length, self.padding = tokenizer, max_length, padding
        self.mlm_probability = mlm_probability

    def __call__(self, batch: Sequence[Any]) -> dict[str, Any]:
        items, skipped = flatten_pairs(batch)
        if skipped:
            log.debug("collate dropped %d skipped samples", skipped)
        if not items:
            return {"num_skipped": skipped}
        texts = [it["text"] for it in items]
        out: dict[str, Any] = {
            "video": torch.stack([it["video"] for it in items]),
            **self.tokenizer(texts, max_length=self.max_length, padding=self.padding),
            "verb": torch.stack([it["verb"] for it in items]),
            "noun": torch.stack([it["noun"] for it in items]),
            "clip_idx": torch.tensor([it["clip_idx"] for it in items], dtype=torch.long),
            "text": texts,
            "video_uid": [it["video_uid"] for it in items],
            "num_skipped": skipped,
        }
        if self.mlm_probability:
            out["mlm_input_ids"], out["mlm_labels"] = mask_rows(
                out["input_ids"], out["attention_mask"], [it["mlm_seed"] for it in items], self.tokenizer,
                self.mlm_probability,
            )  # fmt: skip
        return out


def mask_rows(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    seeds: Sequence[int],
    tokenizer: Tokenizer,
    probability: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`~egovlp.data.tokenizer.mask_tokens` of each row ``(L,)`` with a generator seeded by its seed: the
    masking of an item does not depend on the batch it lands in. Returns ``(masked_ids, labels)``, both ``(B, L)``."""
    rows = [
        mask_tokens(ids[None], mask[None], tokenizer, probability, torch.Generator().manual_seed(int(seed)))
        for ids, mask, seed in zip(input_ids, attention_mask, seeds)
    ]
    return torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])


class EgoMCQCollate:
    """Collate EgoMCQ items: ``video (B, 5, F, 3, H, W)``, query ``input_ids`` / ``attention_mask`` ``(B, L)``
    (padded to the longest), ``answer``, ``type``, ``index`` ``(B,)`` LongTensors, ``text`` list, ``num_skipped``."""

    def __init__(self, tokenizer: Tokenizer, max_length: int | None = None, padding: str = "longest") -> None:
        self.tokenizer, self.max_length, self.padding = tokenizer, max_length, padding

    def __call__(self, batch: Sequence[Any]) -> dict[str, Any]:
        items = [b for b in batch if b is not None]
        skipped = len(batch) - len(items)
        if not items:
            return {"num_skipped": skipped}
        texts = [it["text"] for it in items]
        return {
            "video": torch.stack([it["video"] for it in items]),
            **self.tokenizer(texts, max_length=self.max_length, padding=self.padding),
            "answer": torch.tensor([it["answer"] for it in items], dtype=torch.long),
            "type": torch.tensor([it["type"] for it in items], dtype=torch.long),
            "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
            "text": texts,
            "num_skipped": skipped,
        }
