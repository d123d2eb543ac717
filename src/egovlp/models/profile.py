"""Parameter counts per part and multiply-accumulates (MACs) per path, without running real compute.

MACs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on ``meta`` tensors (shapes only, no memory) with
the explicit reference attention, so every matmul of attention is counted (MACs = FLOPs / 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from egovlp.models.config import ModelConfig
from egovlp.models.model import EgoVLPv2

_FUSION_MARKERS = ("_i2t", "crossattention_t2i.", "alpha_t2i")


def parameter_part(name: str) -> str:
    """Which part of EgoVLPv2 a parameter belongs to."""
    if any(m in name for m in _FUSION_MARKERS) or name in ("cls_token", "norm.weight", "norm.bias"):
        return "fusion"
    if name.startswith("video_model."):
        return "video tower"
    if name.startswith("text_model."):
        return "text tower"
    if name.startswith(("txt_proj.", "vid_proj.")):
        return "projectors"
    if name.startswith("mlm_score."):
        return "MLM head"
    return "VTM head"  # cross_modal_* transforms and poolers, itm_score


def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """Parameter counts per part (see :func:`parameter_part`) plus ``total``."""
    counts: dict[str, int] = {}
    for name, p in model.named_parameters():
        part = parameter_part(name)
        counts[part] = counts.get(part, 0) + p.numel()
    counts["total"] = sum(counts.values())
    return counts


@dataclass(frozen=True)
class MacReport:
    num_frames: int
    text_tokens: int
    dual_video: float  # GMACs per clip of the dual video path (whole tower + projector), as the paper counts
    dual_text: float  # GMACs per text of the dual text path (tower + projector)
    fused: float  # GMACs of one fused pass (both towers with cross-attention, every output token, no heads)
    dual_video_executed: float  # what encode_video runs: the last block computes the CLS state only


def _gmacs(fn) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops() / 2e9


def count_macs(cfg: ModelConfig, num_frames: int | None = None, text_tokens: int = 15) -> MacReport:
    """GMACs per path for batch 1 at ``num_frames`` (default: the config's) and ``text_tokens`` tokens."""
    num_frames = num_frames or cfg.video.num_frames
    with torch.device("meta"):
        model = EgoVLPv2(cfg).eval()
    if num_frames != cfg.video.num_frames:
        model.video_model.temporal_embed = torch.nn.Parameter(
            torch.empty(1, num_frames, cfg.video.width, device="meta")
        )
    model.set_attention_impl("reference")
    size = cfg.video.img_size
    video = torch.empty(1, num_frames, 3, size, size, device="meta")
    ids = torch.zeros(1, text_tokens, dtype=torch.long, device="meta")
    mask = torch.ones(1, text_tokens, dtype=torch.long, device="meta")
    fused = _gmacs(lambda: model.fuse(video, ids, mask)) if cfg.has_fusion else float("nan")
    vm = model.video_model
    return MacReport(
        num_frames=num_frames,
        text_tokens=text_tokens,
        dual_video=_gmacs(lambda: model.vid_proj(vm.norm(vm.forward_features(video))[:, 0])),
        dual_text=_gmacs(lambda: model.encode_text(ids, mask)),
        fused=fused,
        dual_video_executed=_gmacs(lambda: model.encode_video(video)),
    )
