"""``egovlp info MODEL``: parameter counts per part and GMACs per path (dual video, dual text, fused)."""

from __future__ import annotations

import argparse
import json

import torch


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="parameter and compute table of a model", description=__doc__)
    p.add_argument("model", nargs="?", help="registry name (see --list), a .safetensors weight file or a model YAML")
    p.add_argument("--frames", type=int, default=None, help="frames per clip (default: the model's)")
    p.add_argument("--text-tokens", type=int, default=15, help="text length for the text and fused paths")
    p.add_argument("--list", action="store_true", help="list the registered architectures")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from egovlp.cli.common import resolve_model_config
    from egovlp.models.model import EgoVLPv2
    from egovlp.models.profile import count_macs, count_parameters
    from egovlp.models.registry import list_models

    if args.list or not args.model:
        for name, desc in list_models().items():
            print(f"{name:28s} {desc}")
        return 0
    cfg = resolve_model_config(args.model)
    with torch.device("meta"):
        params = count_parameters(EgoVLPv2(cfg))
    macs = count_macs(cfg, args.frames, args.text_tokens)
    if args.json:
        print(json.dumps({"arch": cfg.arch, "parameters": params, "gmacs": macs.__dict__}, indent=2))
        return 0
    print(f"{cfg.arch}: {cfg.video.img_size}px, {macs.num_frames} frames, {macs.text_tokens} text tokens, batch 1")
    print(f"{'part':<14}{'parameters (M)':>16}")
    for part, n in params.items():
        print(f"{part:<14}{n / 1e6:>16.2f}")
    print(f"\n{'path':<14}{'GMACs':>16}")
    rows = (("dual video", macs.dual_video), ("dual text", macs.dual_text), ("fused", macs.fused))
    for name, value in rows:
        print(f"{name:<14}{value:>16.2f}")
    print(f"(encode_video runs {macs.dual_video_executed:.2f} GMACs: its last block computes the CLS state only)")
    return 0
