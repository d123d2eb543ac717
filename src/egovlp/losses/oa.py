"""OA-Trans object-aware contrast (families.md §3a): the paper's four streams and the released global-local variant.

Every term is NormSoftmax, ``nce(a, b) = t2v + v2t`` of :func:`~egovlp.losses.egonce.egonce_loss` with only the
pair itself positive (temperature 0.05), over the all-gathered batch. With ``V`` the clip, ``T`` the caption,
``O_t`` the tag sentence and ``O_v`` the object-masked anchor frame (each through the shared towers and heads)::

    four-stream (the paper, default):
        L = w_vt * nce(T, V)  +  w_vtag * nce(O_t, V)  +  w_at * nce(T, O_v)
    global-local (the released trainer_global_local.py):
        L = w_vt * nce(T, V)  +  w_ct * nce(T (+) tags, V)  +  w_region * nce(mean_o tag_o, mean_o region_o)
        region_o = vid_local_proj(sum of the anchor frame's final patch states inside box o)
        tag_o    = text_local_proj(sum of the states of tag o's word pieces in "caption tag1 tag2 ...")

The object terms use only the clips with detections (``has_objects``); fewer than two such clips give 0 (no
negative to contrast with). The paper's weights are not public: every weight defaults to 1. The video-text term
may use EgoNCE positives (``vt_positives``) to combine OA-Trans with EgoVLP's loss.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from egovlp.losses.egonce import Positives, egonce_loss

__all__ = ["OAOutput", "masked_nce", "oa_four_stream_loss", "object_region_features", "tag_span_features"]


class OAOutput(NamedTuple):
    loss: Tensor  # () weighted sum of the terms
    terms: dict[str, Tensor]  # name -> () unweighted term


def masked_nce(a: Tensor, b: Tensor, keep: Tensor, temperature: float = 0.05) -> Tensor:
    """NormSoftmax of the rows ``keep (N,) bool`` of ``a, b (N, D)``; 0 with fewer than two rows (no negative)."""
    if int(keep.sum()) < 2:
        return (a.sum() + b.sum()) * 0.0  # keeps the graph (DDP sees every parameter used)
    return egonce_loss(a[keep], b[keep], temperature=temperature, positives="none").loss


def oa_four_stream_loss(
    video: Tensor,
    text: Tensor,
    tags: Tensor,
    anchor: Tensor,
    has_objects: Tensor,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    temperature: float = 0.05,
    verb: Tensor | None = None,
    noun: Tensor | None = None,
    vt_positives: Positives = "none",
) -> OAOutput:
    """The paper's object-aware contrast over one (gathered) batch.

    Args:
        video, text, tags, anchor: ``(N, E)`` embeddings of the clips, captions, tag sentences, masked anchors.
        has_objects: ``(N,)`` bool, clips with detections.
        weights: ``(w_vt, w_vtag, w_at)``.
        verb, noun, vt_positives: EgoNCE positives of the video-text term (``"none"``: NormSoftmax).
    """
    vt = egonce_loss(text, video, verb, noun, temperature, vt_positives).loss
    vtag = masked_nce(tags, video, has_objects, temperature)
    at = masked_nce(text, anchor, has_objects, temperature)
    terms = {"video_text": vt, "video_tags": vtag, "anchor_text": at}
    loss = weights[0] * vt + weights[1] * vtag + weights[2] * at
    return OAOutput(loss, terms)


def object_region_features(patches: Tensor, masks: Tensor) -> Tensor:
    """``patches (N, P, D)`` (the anchor frame's patch states, P = g*g row-major) and ``masks (N, K, g, g)`` ->
    ``(N, K, D)``: the sum of each box's patch states (the release's ``einsum``)."""
    return torch.einsum("nkp,npd->nkd", masks.flatten(2).to(patches.dtype), patches)


def tag_span_features(states: Tensor, spans: Tensor) -> Tensor:
    """``states (N, L, D)`` of the caption-with-tags text and ``spans (N, K, L)`` -> ``(N, K, D)``: the sum of each
    tag's word-piece states."""
    return torch.einsum("nkl,nld->nkd", spans.to(states.dtype), states)


def mean_over_objects(features: Tensor, valid: Tensor) -> Tensor:
    """``(N, K, E)`` and ``valid (N, K)`` -> ``(N, E)``: the mean over each clip's valid objects (0 without any)."""
    w = valid.to(features.dtype)
    return (features * w[..., None]).sum(1) / w.sum(1, keepdim=True).clamp(min=1)
