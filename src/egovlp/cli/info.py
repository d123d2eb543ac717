"""``egovlp info MODEL``: parameter counts per part and GMACs per path (dual video, dual text, fused)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="parameter and compute table of a model", description=__doc__)
    p.add_argument("model", nargs="?", help="registry name (see --list), a .safetensors weight file or a model YAML")
    p.add_argument("--frames", type=_at_least(1), default=None, help="frames per clip (default: the model's)")
    p.add_argument("--text-tokens", type=_at_least(2), default=15, help="text length for the text and fused paths")
    p.add_argument("--list", action="store_true", help="list the registered architectures")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def _at_least(minimum: int):
    def parse(value: str) -> int:
        number = int(value)
        if number < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {number}")
        return number

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def run(args: argparse.Namespace) -> int:
    from egovlp.cli.common import resolve_model_config
    from egovlp.models.registry import get_family, list_families, list_models

    if args.list or not args.model:
        for name, family in list_families().items():
            print(f"family {name}: {family.description}")
        for name, desc in list_models().items():
            print(f"  {name:28s} {desc}")
        return 0
    cfg = resolve_model_config(args.model)
    family = get_family(cfg.family)
    params = family.parameter_table(cfg)
    macs = family.mac_table(cfg, args.frames, args.text_tokens)
    frames = args.frames or getattr(getattr(cfg, "video", None), "num_frames", None)
    if args.json:
        payload = {"arch": cfg.arch, "family": cfg.family, "num_frames": frames, "text_tokens": args.text_tokens}
        print(json.dumps({**payload, "parameters": params, "gmacs": macs}, indent=2))
        return 0
    size = getattr(getattr(cfg, "video", None), "img_size", "?")
    print(f"{cfg.arch} ({cfg.family}): {size}px, {frames} frames, {args.text_tokens} text tokens, batch 1")
    print(f"{'part':<14}{'parameters (M)':>16}")
    for part, n in params.items():
        print(f"{part:<14}{n / 1e6:>16.2f}")
    print(f"\n{'path':<14}{'GMACs':>16}")
    for name, value in macs.items():
        print(f"{name:<14}{value:>16.2f}")
    if "dual video run" in macs:
        print("(dual video run: what encode_video runs; its last block computes the CLS state only)")
    return 0
