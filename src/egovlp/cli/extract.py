"""``egovlp extract``: EgoVLPv2 features of sliding windows (video, text or fused with a query) for heads such as
Ego4D NLQ and MQ; one file per video or clip plus manifest.json, resumable, rank-sharded under torchrun.

egovlp extract --config extract/mq_video --checkpoint W.safetensors --annotations moments_val.json \\
    --video-root /data/ego4d/v1/full_scale --out features/mq
egovlp extract --config extract/nlq_fused --checkpoint W.safetensors --tokenizer /models/roberta-base \\
    --annotations nlq_val.json --video-root /data/ego4d/v1/full_scale --out features/nlq
egovlp extract --checkpoint W.safetensors --videos DIR --out OUT window.size=2 window.unit=seconds
torchrun --nproc_per_node=8 -m egovlp.cli.main extract ...
"""

from __future__ import annotations

import argparse
import logging
from typing import TYPE_CHECKING

from egovlp.cli.common import add_config_args

if TYPE_CHECKING:
    from egovlp.features import ExtractConfig, ExtractResult

log = logging.getLogger(__name__)

# command-line flag -> config key
_FLAGS = {
    "checkpoint": "checkpoint",
    "tokenizer": "tokenizer",
    "mode": "mode",
    "videos": "source.videos",
    "chunked_root": "source.chunked_root",
    "uids": "source.uids",
    "annotations": "source.annotations",
    "video_root": "source.video_root",
    "out": "out_dir",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "extract",
        help="extract video / text / fused features in sliding windows",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--checkpoint", metavar="W.safetensors", help="egovlp weight file (checkpoint=)")
    p.add_argument("--mode", choices=("video", "text", "fused"), help="what to extract (mode=; default video)")
    p.add_argument("--tokenizer", metavar="DIR", help="tokenizer folder, for text and fused (tokenizer=)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--videos", metavar="DIR", help="a folder of video files, recursively (source.videos=)")
    src.add_argument("--chunked-root", metavar="DIR", help="<DIR>/<video_uid>/<k>.mp4 (source.chunked_root=)")
    src.add_argument("--annotations", metavar="FILE", help="NLQ/MQ JSON, narration.json or .txt (source.annotations=)")
    p.add_argument("--uids", metavar="FILE", help="video uids of --chunked-root, one a line (source.uids=)")
    p.add_argument("--video-root", metavar="DIR", help="videos of --annotations (source.video_root=)")
    p.add_argument("--out", metavar="DIR", help="output folder (out_dir=)")
    add_config_args(p, group="extract", example="window.num_frames=8")
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace) -> list[str]:
    """The flags as ``key=value`` overrides, before the explicit ones (which therefore win)."""
    flags = [f"{key}={getattr(args, name)}" for name, key in _FLAGS.items() if getattr(args, name) is not None]
    return flags + list(args.overrides)


def run(args: argparse.Namespace) -> int:
    from egovlp.cli.common import load_experiment_config
    from egovlp.features import ExtractConfig

    cfg = load_experiment_config(ExtractConfig, args.config, _overrides(args), group="extract")
    cfg.validate()
    result = extract(cfg)
    if result is not None:
        print(summary(result, cfg.out_dir))
    return 0


def summary(result: ExtractResult, out_dir: str) -> str:
    """The run's last line: files written, done before, unreadable, texts left out, the manifest."""
    done = [f"{len(result.skipped)} done before"]
    if result.failed:
        done.append(f"{len(result.failed)} unreadable")
    left_out = []
    if result.num_queries_without_text:
        n = result.num_queries_without_text
        left_out.append(f"{n} {'query' if n == 1 else 'queries'} without text left out")
    if result.items_without_text:
        left_out.append(f"{len(result.items_without_text)} clip(s) with no query text left out")
    listed = " (listed in the manifest)" if result.failed or left_out else ""
    extra = "".join(f"; {x}" for x in left_out)
    return (
        f"{len(result.extracted)} feature file(s) written to {out_dir} ({', '.join(done)}){extra}{listed}; "
        f"manifest: {result.manifest}"
    )


def extract(cfg: ExtractConfig) -> ExtractResult | None:
    """Run :func:`egovlp.features.extract_features` on this process's rank; returns rank 0's result (else None)."""
    from egovlp.data.tokenizer import Tokenizer
    from egovlp.features import collect_run_inputs, extract_features
    from egovlp.models.weights import load_model
    from egovlp.train.distributed import cleanup_distributed, gather_objects, init_distributed
    from egovlp.utils.logging import setup_logging

    dist = init_distributed(cfg.device)
    setup_logging(logging.getLogger("egovlp").level or logging.INFO, rank=dist.rank)
    try:
        inputs = collect_run_inputs(cfg)  # bad inputs and ids stop here, before the model is loaded
        tokenizer = Tokenizer.from_dir(cfg.tokenizer) if cfg.mode != "video" else None
        model = load_model(cfg.checkpoint, num_frames=cfg.window.num_frames, device=dist.device)
        result = extract_features(
            cfg, model, tokenizer, dist.device, dist.rank, dist.world_size, gather_objects, inputs=inputs
        )
        return result if dist.is_main else None
    finally:
        cleanup_distributed()
