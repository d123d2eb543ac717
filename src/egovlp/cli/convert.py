"""``egovlp convert``: official EgoVLPv2 checkpoint (.pth pickle) -> egovlp safetensors + config.

The official file is read with a restricted unpickler that only rebuilds tensors: its pickle code never runs.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="import an official checkpoint (EgoVLPv2, Frozen-in-Time, EgoVLP, All-in-one .ckpt)",
        description=__doc__,
    )
    p.add_argument("checkpoint", help="official checkpoint, e.g. EgoVLPv2.pth")
    p.add_argument("--out", required=True, help="output .safetensors path (a .yaml config is written beside it)")
    p.add_argument("--num-frames", type=int, default=None, help="resize the temporal embedding to this many frames")
    p.add_argument("--arch", default=None, help="check against this registered architecture instead of inferring")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from egovlp.models.convert import convert_official_checkpoint

    out = Path(args.out)
    if out.suffix != ".safetensors":
        out = out.with_suffix(".safetensors")
    path = convert_official_checkpoint(args.checkpoint, out, args.num_frames, args.arch)
    print(f"wrote {path} and {path.with_suffix('.yaml')}")
    return 0
