"""Shared data fixtures: videos whose pixels carry their frame index, a small synthetic world, EgoClip CSV text."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from egovlp.data.synthetic import SynthConfig, generate

BITS = 10  # frame index in 10 vertical bars: up to 1023 frames
BAR = 8  # bar width (px)
INDEX_FPS = Fraction(25, 2)  # deliberately not 30 (and not an integer)


def index_frame(i: int, height: int = 48) -> np.ndarray:
    """A grey frame whose bar ``b`` is white when bit ``b`` of ``i`` is set, ``(H, BITS * BAR, 3)`` uint8."""
    frame = np.zeros((height, BITS * BAR, 3), np.uint8)
    for b in range(BITS):
        if (i >> b) & 1:
            frame[:, b * BAR : (b + 1) * BAR] = 255
    return frame


def decode_index(frame: np.ndarray) -> int:
    """Inverse of :func:`index_frame` (robust to compression and resizing: reads each bar's middle)."""
    width = frame.shape[1]
    bar = width / BITS
    return sum(int(frame[:, int((b + 0.5) * bar), 0].mean() > 127) << b for b in range(BITS))


def write_index_video(path: Path, first: int, count: int, fps=INDEX_FPS, gop: int = 10) -> Path:
    """Encode frames ``first .. first + count - 1`` (lossless luma) with keyframes every ``gop`` frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = BITS * BAR, 48, "yuv420p"
        stream.codec_context.gop_size = gop
        stream.options = {"qp": "0", "preset": "veryfast", "threads": "1"}
        for n in range(count):
            frame = av.VideoFrame.from_ndarray(index_frame(first + n), format="rgb24")
            frame.pts = n
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="session")
def index_video(tmp_path_factory) -> Path:
    """A plain 12.5 fps file of 100 frames (8 s) whose frame ``i`` shows ``i``."""
    return write_index_video(tmp_path_factory.mktemp("index") / "index.mp4", 0, 100)


@pytest.fixture(scope="session")
def chunked_index_video(tmp_path_factory) -> tuple[Path, str, float, int]:
    """``(root, uid, chunk_seconds, total_frames)``: 4 s chunks (50 frames) of a 130-frame video showing its global
    frame index."""
    root = tmp_path_factory.mktemp("chunked")
    uid, chunk_seconds, total = "vid-0", 4.0, 130
    per_chunk = int(chunk_seconds * INDEX_FPS)
    for k in range(math.ceil(total / per_chunk)):
        write_index_video(root / uid / f"{k}.mp4", k * per_chunk, min(per_chunk, total - k * per_chunk))
    return root, uid, chunk_seconds, total


SMALL_WORLD = SynthConfig(
    seed=3,
    num_videos=5,
    video_seconds=60.0,
    chunk_seconds=10.0,
    mcq_pairs_per_video=3,
    num_mcq_inter=8,
    num_mcq_intra=8,
    tokenizer_vocab_size=300,
)


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """A small synthetic world (5 videos of about a minute, 10 s chunks); returns its SynthSummary."""
    return generate(tmp_path_factory.mktemp("world"), SMALL_WORLD)


EGOCLIP_HEADER = (
    "clip_idx\tvideo_uid\tvideo_dur\tnarration_source\tnarration_ind\tnarration_time\tclip_start\tclip_end\t"
    "clip_text\ttag_verb\ttag_noun\n"
)


def egoclip_line(
    idx: int = 0,
    uid: str = "vid-0",
    t: float = 3.3445,
    start: float = 2.967651,
    end: float = 3.721266,
    text: str = "#C C picks a bag of clothes from the floor",
    verb: str = "[93]",
    noun: str = "[192, 115, 12]",
) -> str:
    """One TAB-separated EgoClip row (the REFERENCE example by default)."""
    return f"{idx}\t{uid}\t128.033333\tnarration_pass_1\t{idx}\t{t}\t{start}\t{end}\t{text}\t{verb}\t{noun}\n"
