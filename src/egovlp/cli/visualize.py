"""``egovlp visualize``: the text-to-video cross-attention of the fused layers on a moment of a video, per word and
for the whole sentence (mean over heads), as heat maps over each frame's patches, in one PNG grid.

egovlp visualize --checkpoint W.safetensors VIDEO.mp4 --start 12 --end 16 --text "#C C cuts the onion" \\
    --tokenizer /models/roberta-base --out map.png [--layer 11|all]
"""

from __future__ import annotations

import argparse
import logging
from typing import Any

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "visualize",
        help="draw the cross-attention maps of a text on a moment of a video (PNG)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("video", metavar="VIDEO", help="a video file")
    p.add_argument("--checkpoint", required=True, metavar="W.safetensors", help="egovlp weight file (with fusion)")
    p.add_argument("--tokenizer", required=True, metavar="DIR", help="the tokenizer folder of the model")
    p.add_argument("--text", required=True, help="the sentence whose attention is drawn")
    p.add_argument("--start", type=float, required=True, help="moment start (seconds)")
    p.add_argument("--end", type=float, required=True, help="moment end (seconds)")
    p.add_argument("--out", required=True, metavar="PNG", help="output image")
    p.add_argument("--layer", default="all", help="a fused text layer index, or 'all' (their mean; default)")
    p.add_argument("--num-frames", type=int, default=None, help="frames sampled (default: the model's)")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from egovlp.data.tokenizer import Tokenizer
    from egovlp.errors import ConfigError
    from egovlp.features.sources import VideoRef
    from egovlp.models.weights import load_model
    from egovlp.viz import attention_maps, draw_attention
    from egovlp.viz.attention import moment_frames

    if args.num_frames is not None and args.num_frames < 1:
        raise ConfigError(f"--num-frames must be >= 1, got {args.num_frames}")
    ref = VideoRef("file", args.video)
    model: Any = load_model(args.checkpoint, num_frames=args.num_frames, device=args.device).eval()
    num_frames = args.num_frames or model.cfg.video.num_frames
    clip = moment_frames(ref, args.start, args.end, num_frames)  # bad ranges and videos stop here
    tokenizer = Tokenizer.from_dir(args.tokenizer)
    tokenizer.check_model(model.cfg.text.vocab_size)
    maps = attention_maps(model, tokenizer, clip, args.text, args.layer, args.device)
    title = f'"{args.text}"  {args.video} {args.start:g}-{args.end:g} s'
    draw_attention(maps, args.out, title)
    print(f"attention maps of {len(maps.labels) - 1} word(s) and the sentence over {num_frames} frames: {args.out}")
    return 0
