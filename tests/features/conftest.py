"""Feature-extraction fixtures: tiny videos whose frames show their index, an NLQ file, a tokenizer, tiny weights.

Everything is small (64 x 48 px, a few seconds) so that the whole folder runs in seconds on one CPU core.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch

BITS = 8  # frame index in 8 vertical bars
BAR = 8  # bar width (px)
HEIGHT = 48
CHUNK_SECONDS = 4.0


def index_frame(i: int) -> np.ndarray:
    """A frame whose bar ``b`` is bright when bit ``b`` of ``i`` is set, over a gradient that moves with ``i``."""
    y = np.arange(HEIGHT)[:, None]
    base = ((y * 3 + i * 5) % 90).astype(np.uint8)
    frame = np.repeat(np.repeat(base, BITS * BAR, axis=1)[:, :, None], 3, axis=2)
    for b in range(BITS):
        if (i >> b) & 1:
            frame[:, b * BAR + 1 : (b + 1) * BAR - 1] = 230
    return frame


def decode_index(frame: np.ndarray) -> int:
    """Inverse of :func:`index_frame` for an un-resized frame ``(H, W, 3)``."""
    return sum(int(frame[:, b * BAR + BAR // 2, 0].mean() > 160) << b for b in range(BITS))


def write_index_video(path: Path, first: int, count: int, fps: Fraction) -> Path:
    """Frames ``first .. first + count - 1`` (near-lossless H.264, keyframe every 10 frames)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = BITS * BAR, HEIGHT, "yuv420p"
        stream.codec_context.gop_size = 10
        stream.options = {"qp": "0", "preset": "ultrafast", "threads": "1"}
        for n in range(count):
            frame = av.VideoFrame.from_ndarray(index_frame(first + n), format="rgb24")
            frame.pts = n
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@dataclass(frozen=True)
class Fixture:
    root: Path
    videos: Path  # a.mp4 (10 fps, 64 frames), sub/b.mp4 (8 fps, 37 frames), notes.txt
    chunked: Path  # vid1/{0,1}.mp4 at 10 fps, 4 s chunks, 65 frames in all
    uids: Path
    nlq: Path  # clips of video "a" (in `videos`)
    tokenizer: Path
    checkpoint: Path


NLQ = {
    "version": "v1",
    "videos": [
        {
            "video_uid": "a",
            "clips": [
                {
                    "clip_uid": "clip-1",
                    "video_start_sec": 1.0,
                    "video_end_sec": 5.3,
                    "annotations": [
                        {
                            "annotation_uid": "ann-1",
                            "language_queries": [
                                {"clip_start_sec": 0.5, "clip_end_sec": 1.5, "query": "Where was the red ball?"},
                                {"clip_start_sec": 2.0, "clip_end_sec": 3.0, "template": "no query text"},
                                {"clip_start_sec": 1.0, "clip_end_sec": 2.0, "query": "what did I put in the box"},
                            ],
                        }
                    ],
                },
                {
                    "clip_uid": "clip-2",
                    "video_start_sec": 0.0,
                    "video_end_sec": 2.0,
                    "annotations": [
                        {"annotation_uid": "ann-2", "language_queries": [{"query": "who opened the door"}]}
                    ],
                },
            ],
        }
    ],
}


def tiny_weights(path: Path) -> Path:
    """``egovlpv2-tiny`` with random non-zero gates (so the query changes fused features), saved as safetensors."""
    from egovlp.models.registry import create_model
    from egovlp.models.weights import save_weights

    torch.manual_seed(0)
    model = create_model("egovlpv2-tiny")
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "alpha" in name or name == "cls_token":
                p.normal_(0.0, 0.5)
    return save_weights(model, path)


@pytest.fixture(scope="session")
def fx(tmp_path_factory) -> Fixture:
    from egovlp.data.tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("features")
    videos = root / "videos"
    write_index_video(videos / "a.mp4", 0, 64, Fraction(10))
    write_index_video(videos / "sub" / "b.mp4", 0, 37, Fraction(8))
    (videos / "notes.txt").write_text("not a video\n")
    chunked = root / "chunked"
    per_chunk, total = 40, 65
    for k in range(math.ceil(total / per_chunk)):
        write_index_video(chunked / "vid1" / f"{k}.mp4", k * per_chunk, min(per_chunk, total - k * per_chunk), 10)
    uids = root / "uids.txt"
    uids.write_text("# video uids\nvid1\n")
    nlq = root / "nlq_val.json"
    nlq.write_text(json.dumps(NLQ))
    texts = ["where was the red ball", "what did i put in the box", "who opened the door"] * 20
    Tokenizer.train(texts, vocab_size=300, out_dir=root / "tokenizer", min_frequency=1)
    checkpoint = tiny_weights(root / "tiny.safetensors")
    return Fixture(root, videos, chunked, uids, nlq, root / "tokenizer", checkpoint)


@pytest.fixture(scope="session")
def tiny(fx):
    """The fixture's model, loaded as extraction loads it (4 frames, eval mode)."""
    from egovlp.models.weights import load_model

    return load_model(fx.checkpoint, num_frames=4).eval()


@pytest.fixture(scope="session")
def tokenizer(fx):
    from egovlp.data.tokenizer import Tokenizer

    return Tokenizer.from_dir(fx.tokenizer)
