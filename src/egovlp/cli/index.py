"""``egovlp index``: sliding-window dual video embeddings of your videos in a FAISS index, with a thumbnail per
window, for ``egovlp search``. Resumable and incremental: run it again with more videos to add them; finished videos
are skipped; another checkpoint or window setting for the same folder is refused.

egovlp index my_videos/ --checkpoint W.safetensors --tokenizer TOK --out my_index
egovlp index more.mp4 /data/ego4d/v1/chunked/<uid>/ --checkpoint W.safetensors --out my_index
egovlp index my_videos/ --checkpoint W.safetensors --out my_index --window-size 4 --window-stride 2 --index hnsw
egovlp index my_videos/ thumbnail_width=240 index.ef_search=256 --checkpoint W.safetensors --out my_index
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from egovlp.search.config import INDEX_KINDS

log = logging.getLogger(__name__)

# command-line flag -> config key
_FLAGS = {
    "checkpoint": "checkpoint",
    "tokenizer": "tokenizer",
    "out": "out_dir",
    "index": "index.kind",
    "window_size": "window.size",
    "window_stride": "window.stride",
    "num_frames": "window.num_frames",
    "unit": "window.unit",
    "device": "device",
    "batch_size": "batch_size",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "index",
        help="index videos for text search (sliding-window embeddings, FAISS, thumbnails)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "videos", nargs="+", metavar="VIDEO|DIR|KEY=VALUE",
        help="video files, folders of them (recursively) or chunked <uid>/<k>.mp4 folders, and config overrides among "
        "them (before the flags), e.g. window.last=pad thumbnail_width=200",
    )  # fmt: skip
    p.add_argument("--checkpoint", metavar="W.safetensors", help="egovlp weight file (checkpoint=)")
    p.add_argument("--out", metavar="INDEX_DIR", help="the index folder (out_dir=)")
    p.add_argument("--tokenizer", metavar="DIR", help="tokenizer folder, recorded for `egovlp search` (tokenizer=)")
    p.add_argument("--index", choices=INDEX_KINDS, help="FAISS index: exact, ivf, hnsw or auto by size (index.kind=)")
    p.add_argument("--window-size", type=float, metavar="S", help="window length, in --unit (window.size=; 2 s)")
    p.add_argument("--window-stride", type=float, metavar="S", help="between window starts (window.stride=; 1 s)")
    p.add_argument("--num-frames", type=int, metavar="F", help="frames per window (window.num_frames=; 4)")
    p.add_argument("--unit", choices=("seconds", "frames"), help="unit of size and stride (window.unit=; seconds)")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N (device=)")
    p.add_argument("--batch-size", type=int, metavar="N", help="windows per forward pass (batch_size=)")
    p.add_argument("--config", help="a YAML config file (IndexConfig fields)")
    p.set_defaults(func=run)


def split_args(items: list[str]) -> tuple[list[str], list[str]]:
    """``(videos, overrides)``: an item that is not an existing path and holds ``=`` is a ``key=value`` override."""
    videos: list[str] = []
    overrides: list[str] = []
    for item in items:
        (overrides if "=" in item and not Path(item).exists() else videos).append(item)
    return videos, overrides


def run(args: argparse.Namespace) -> int:
    from egovlp.cli.common import load_experiment_config
    from egovlp.models.weights import load_model
    from egovlp.search import IndexConfig, build_index
    from egovlp.train.distributed import resolve_device

    videos, overrides = split_args(args.videos)
    flags = [f"{key}={getattr(args, name)}" for name, key in _FLAGS.items() if getattr(args, name) is not None]
    cfg = load_experiment_config(IndexConfig, args.config, flags + overrides)
    cfg.validate()
    device = resolve_device(cfg.device)
    model = load_model(cfg.checkpoint, num_frames=cfg.window.num_frames, device=device)
    r = build_index(cfg, videos, model, device)
    rate = f", {r.num_new_windows / r.seconds:.1f} windows/s" if r.num_new_windows and r.seconds > 0 else ""
    failed = f", {len(r.failed)} unreadable (listed in the manifest)" if r.failed else ""
    print(
        f"indexed {len(r.added)} video(s) ({r.num_new_windows} windows{rate}), {len(r.skipped)} done before{failed}; "
        f"{r.num_windows} windows in {r.root} ({r.index['kind']} index)"
    )
    return 0
