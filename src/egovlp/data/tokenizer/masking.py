"""BERT-style MLM masking, for any :class:`~egovlp.data.tokenizer.Tokenizer` (special ids from the tokenizer)."""

from __future__ import annotations

import torch

from egovlp.data.tokenizer.base import Tokenizer

__all__ = ["mask_tokens"]


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    tokenizer: Tokenizer,
    probability: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT-style masking for MLM: pick ``probability`` of the non-special, non-pad tokens; of those 80 % become
    the mask token, 10 % a random non-special token, 10 % stay.

    Args:
        input_ids, attention_mask: ``(B, L)`` LongTensors.
        tokenizer: gives ``special_ids``, ``mask_id`` and the random-replacement pool ``non_special_ids()``.

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
