"""The fusion-cost claim: fusion in the backbone vs fusion-specific layers on top of the dual encoder, in one run.

    python benchmarks/fusion_cost.py                          # egovlpv2-base, 4 and 16 frames, CPU, batch 1, fp32
    python benchmarks/fusion_cost.py --frames 4 --repeats 5
    python benchmarks/fusion_cost.py --device cuda --repeats 20

The poster of EgoVLPv2 claims that fusion in the backbone needs 45 % fewer GMACs than fusion-specific layers added
on top of a dual encoder. Designs compared, all on the same ``egovlpv2-base`` towers (TimeSformer ViT-B/16 +
RoBERTa-base, width 768), batch 1, every output token computed, no projectors and no heads:

(a) ``backbone``: EgoVLPv2 as it is, ``model.fuse(video, ids, mask)``: 12 video blocks (the top 6 with the gated
    video-to-text cross-attention in their space attention) and 12 text layers (the top 6 with the gated
    text-to-video cross-attention), no extra layer.
(b) ``on top (text)`` -- the design the claim is checked against: the dual encoder with fusion off (the 12 video
    blocks + final norm, every token; the 12 text layers), then 6 stacked fusion layers of width 768 on the text
    output: each is egovlp's own fused RoBERTa layer (``RobertaLayer(fused=True)``: self-attention, cross-attention
    whose queries are the text states and whose keys/values are the dual video tokens, FFN), the usual
    ALBEF / BLIP-style "fusion encoder on top". Video tokens are not updated by these layers.
(c) ``on top (two-stream)`` -- printed for the explanation: (b) plus 6 video-side co-attention layers of the same
    block (full self-attention over all video tokens, cross-attention to the text, FFN), METER-style: at each depth
    each stream attends to the other stream's input at that depth (the order EgoVLPv2's fused layers use).

Every gate (``alpha_i2t``, ``alpha_t2i``) is set to 1 so the backward pass flows through every cross-attention (the
gates do not change the MACs). GMACs are counted with ``torch.utils.flop_counter`` on ``meta`` tensors with the
explicit reference attention (as ``egovlp info`` does, :mod:`egovlp.models.profile`), of exactly the functions that
are timed; (a) is cross-checked against ``count_macs(cfg).fused``. Wall times are medians over ``--repeats``
repetitions in which the designs run interleaved (forward under ``no_grad`` in eval mode, then forward+backward in
train mode, one design after the other, the order reversed every other repetition), after one warm-up of each.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from egovlp.models import get_model_config
from egovlp.models.config import ModelConfig
from egovlp.models.layers import additive_mask, set_attention_impl
from egovlp.models.model import EgoVLPv2
from egovlp.models.profile import _gmacs, count_macs
from egovlp.models.text import RobertaLayer

logger = logging.getLogger("fusion_cost")

Outputs = tuple[torch.Tensor, ...]
Design = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], Outputs]
DESIGNS = ("backbone", "on top (text)", "on top (two-stream)")


class TopFusion(nn.Module):
    """``num_layers`` stacked fusion layers on the dual outputs, built from egovlp's fused RoBERTa layer.

    ``text`` layers: queries from the text ``(B, L, Dt)``, cross-attention keys/values from the video tokens
    ``(B, N, Dv)``. ``two_stream`` adds video layers (video tokens query the text), co-attending layer by layer.
    """

    def __init__(self, cfg: ModelConfig, num_layers: int, two_stream: bool) -> None:
        super().__init__()
        v, t = cfg.video, cfg.text
        self.text_layers = nn.ModuleList(RobertaLayer(t, fused=True, video_dim=v.width) for _ in range(num_layers))
        video_cfg = dataclasses.replace(t, width=v.width, num_heads=v.num_heads, ffn_dim=int(v.width * v.mlp_ratio))
        self.video_layers = nn.ModuleList(
            RobertaLayer(video_cfg, fused=True, video_dim=t.width) for _ in range(num_layers if two_stream else 0)
        )

    def forward(self, video: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor) -> Outputs:
        """``video (B, N, Dv)``, ``text (B, L, Dt)``, additive ``text_mask (B, 1, 1, L)`` -> fused (video, text)."""
        for k, text_layer in enumerate(self.text_layers):
            new_text = text_layer(text, text_mask, video)
            if self.video_layers:  # cross-attention has no key mask: the benchmark's text has no padding
                video = self.video_layers[k](video, None, text)
            text = new_text
        return video, text


def build(cfg: ModelConfig) -> tuple[EgoVLPv2, dict[str, TopFusion]]:
    """The EgoVLPv2 model and the two on-top fusion stacks, every fusion gate set to 1."""
    model = EgoVLPv2(cfg)
    tops = {
        name: TopFusion(cfg, cfg.num_fusion_layers, two_stream=name.endswith("two-stream)")) for name in DESIGNS[1:]
    }
    for module in (model, *tops.values()):
        for name, p in module.named_parameters():
            if name.endswith(("alpha_i2t", "alpha_t2i")):
                with torch.no_grad():
                    p.fill_(1.0)
    return model, tops


def designs(model: EgoVLPv2, tops: dict[str, TopFusion]) -> dict[str, Design]:
    """``{design: (video (B, F, 3, H, W), ids (B, L), mask (B, L)) -> output tensors}``."""
    vm = model.video_model

    def backbone(video: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> Outputs:
        fused = model.fuse(video, ids, mask)
        assert fused.video is not None
        return fused.video, fused.text

    def on_top(top: TopFusion) -> Design:
        def run(video: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> Outputs:
            v = vm.norm(vm.forward_features(video))  # dual video tokens (B, 1 + F*P, Dv), fusion off
            t = model.text_model(ids, mask)  # dual text tokens (B, L, Dt)
            return top(v, t, additive_mask(mask, t.dtype))

        return run

    return {"backbone": backbone, **{name: on_top(top) for name, top in tops.items()}}


def inputs(cfg: ModelConfig, frames: int, tokens: int, device: torch.device | str) -> Outputs:
    """Batch 1: video ``(1, F, 3, H, W)``, ids ``(1, L)`` (``<s> ... </s>``, no padding), mask ``(1, L)``."""
    size = cfg.video.img_size
    video = torch.randn(1, frames, 3, size, size, device=device)
    ids = torch.randint(5, cfg.text.vocab_size, (1, tokens), device=device)
    ids[:, 0], ids[:, -1] = 0, 2
    return video, ids, torch.ones_like(ids)


def count_gmacs(cfg: ModelConfig, frames: int, tokens: int) -> dict[str, float]:
    """GMACs per design (batch 1), counted on the meta device with the explicit attention."""
    with torch.device("meta"):
        model, tops = build(cfg)
    model.eval().set_attention_impl("reference")
    for top in tops.values():
        set_attention_impl(top.eval(), "reference")
    args = inputs(cfg, frames, tokens, "meta")
    macs = {name: _gmacs(lambda fn=fn: fn(*args)) for name, fn in designs(model, tops).items()}
    macs["dual encoder"] = _gmacs(lambda: (model.video_model.forward_features(args[0]), model.text_model(*args[1:])))
    check = count_macs(cfg, frames, tokens).fused
    if not math.isclose(check, macs["backbone"], rel_tol=1e-3):
        raise RuntimeError(f"fused GMACs {macs['backbone']:.2f} differ from egovlp.models.profile's {check:.2f}")
    return macs


def timed(step: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def make_steps(model: EgoVLPv2, tops: dict[str, TopFusion], args: Outputs) -> dict[tuple[str, str], Callable]:
    """``{(design, "fwd" | "fwd+bwd"): step}``; each step sets the modes it needs (eval / train)."""
    modules = [model, *tops.values()]
    steps = {}
    for name, fn in designs(model, tops).items():

        def fwd(fn: Design = fn) -> None:
            for m in modules:
                m.eval()
            with torch.no_grad():
                fn(*args)

        def fwd_bwd(fn: Design = fn) -> None:
            for m in modules:
                m.train()
            torch.stack([out.square().mean() for out in fn(*args)]).sum().backward()
            for m in modules:
                m.zero_grad(set_to_none=True)

        steps[(name, "fwd")], steps[(name, "fwd+bwd")] = fwd, fwd_bwd
    return steps


def measure(cfg: ModelConfig, frames: int, tokens: int, repeats: int, device: torch.device) -> dict:
    """Median seconds per ``(design, mode)``, the designs interleaved within each repetition."""
    torch.manual_seed(0)
    model, tops = build(cfg)
    model.to(device)
    for top in tops.values():
        top.to(device)
    steps = make_steps(model, tops, inputs(cfg, frames, tokens, device))
    times: dict[tuple[str, str], list[float]] = {key: [] for key in steps}
    for step in steps.values():  # warm-up
        step()
    for r in range(repeats):
        order = list(steps) if r % 2 == 0 else list(steps)[::-1]
        for key in order:
            times[key].append(timed(steps[key], device))
        logger.info("%d frames: repetition %d/%d done", frames, r + 1, repeats)
    return {key: statistics.median(ts) for key, ts in times.items()}


def report(frames: int, macs: dict[str, float], secs: dict) -> list[str]:
    """Markdown rows: one per design, with its ratios to the backbone design."""
    a = macs["backbone"]
    rows = []
    for name in DESIGNS:
        m, fwd, fb = macs[name], secs[(name, "fwd")], secs[(name, "fwd+bwd")]
        fa, fba = secs[("backbone", "fwd")], secs[("backbone", "fwd+bwd")]
        rows.append(
            f"| {frames} | {name} | {m:.1f} | {m - macs['dual encoder']:.1f} | {fwd:.2f} | {fb:.2f} "
            f"| {m / a:.3f} | {a / m:.3f} | {1 - a / m:+.1%} | {fwd / fa:.3f} | {fb / fba:.3f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="egovlpv2-base")
    parser.add_argument("--frames", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--text-tokens", type=int, default=15)
    parser.add_argument("--repeats", type=int, nargs="+", default=[3, 1], help="per --frames entry (last repeats)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--macs-only", action="store_true", help="count GMACs, skip the timing")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    base = get_model_config(args.arch)
    header = (
        "frames", "design", "GMACs", "GMACs over dual", "fwd s", "fwd+bwd s", "GMACs x/(a)", "GMACs (a)/x",
        "(a) fewer GMACs", "fwd x/(a)", "fwd+bwd x/(a)",
    )  # fmt: skip
    lines = [
        f"# {args.arch}, batch 1, {args.text_tokens} text tokens, fp32, {device} ({args.threads} threads), "
        f"torch {torch.__version__}; (a) = backbone; medians of repeats {args.repeats}",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for i, frames in enumerate(args.frames):
        repeats = args.repeats[min(i, len(args.repeats) - 1)]
        cfg = dataclasses.replace(base, video=dataclasses.replace(base.video, num_frames=frames))
        macs = count_gmacs(cfg, frames, args.text_tokens)
        logger.info("%d frames: GMACs %s", frames, {k: round(v, 2) for k, v in macs.items()})
        secs = (
            {(d, m): math.nan for d in DESIGNS for m in ("fwd", "fwd+bwd")}
            if args.macs_only
            else measure(cfg, frames, args.text_tokens, repeats, device)
        )
        lines += report(frames, macs, secs)
        print("\n".join(lines), flush=True)  # each frame count's rows as soon as they are measured
        lines = []


if __name__ == "__main__":
    main()
