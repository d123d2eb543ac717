"""Video decoding with PyAV: one seek per file, decode forward, pick frames by presentation time.

Two layouts are read:

* plain files: :func:`read_frames_at` (frames at given times) and :func:`read_video_clip` (a sampled clip);
* the chunked EgoClip layout ``<root>/<video_uid>/<k>.mp4`` where chunk ``k`` holds the video's time
  ``[k * chunk_seconds, (k + 1) * chunk_seconds)`` with its own timestamps starting at 0:
  :func:`read_clip`. A clip that spans two chunks is read from both.

Times are the stream's presentation times in seconds (``pts * time_base``; 0 at the start of a normally muxed file).
The frame shown at time ``t`` is the last frame whose presentation time is ``<= t`` (the first frame for times before
it); the file's own timestamps decide, so any frame rate (or a variable one) is handled without assuming 30 fps.

Every failure raises :class:`~egovlp.errors.VideoReadError` naming the file and the time range asked for.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from egovlp.data.sampling import sample_times
from egovlp.errors import VideoReadError

log = logging.getLogger(__name__)

__all__ = ["VideoInfo", "chunk_path", "probe", "read_clip", "read_frames_at", "read_video_clip"]

# A time up to this many frame durations past the last frame still maps to the last frame (rounding at the end).
_EPS = 1e-6


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a file's first video stream."""

    path: str
    fps: float  # average frame rate from the container (informational; decoding uses real timestamps)
    duration: float  # seconds, from the stream or the container header (0 when unknown)
    num_frames: int  # from the header (0 when unknown)
    width: int
    height: int


def _describe(times: Sequence[float], context: str | None) -> str:
    span = f"{min(times):.3f}-{max(times):.3f} s" if len(times) else "no frames"
    return f"wanted {span}" + (f"; {context}" if context else "")


def _open(path: str | os.PathLike, what: str) -> tuple[av.container.InputContainer, av.video.stream.VideoStream]:
    path = str(path)
    if not os.path.isfile(path):
        raise VideoReadError(f"{path}: no such video file ({what})")
    try:
        container = av.open(path, mode="r")
    except (av.FFmpegError, OSError, ValueError) as e:
        raise VideoReadError(f"{path}: cannot open video, truncated or not a video file? ({what}): {e}") from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{path}: no video stream ({what})")
    return container, container.streams.video[0]


def _stream_duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def probe(path: str | os.PathLike) -> VideoInfo:
    """Read the header of ``path`` (no decoding)."""
    container, stream = _open(path, "probe")
    with container:
        rate = stream.average_rate or stream.guessed_rate or 0
        return VideoInfo(
            path=str(path),
            fps=float(rate),
            duration=_stream_duration(container, stream),
            num_frames=int(stream.frames or 0),
            width=stream.codec_context.width,
            height=stream.codec_context.height,
        )


def _decode_at(container, stream, path: str, times: np.ndarray, end_tolerance: float, what: str) -> np.ndarray:
    """Decode forward from one seek and return the frames shown at ``times`` (sorted ascending), ``(N, H, W, 3)``."""
    rate = float(stream.average_rate or stream.guessed_rate or 0)
    frame_dur = 1.0 / rate if rate > 0 else 0.0
    # One seek to the keyframe at or before the first wanted time (backward=True); then decode forward.
    target = math.floor(times[0] / stream.time_base)
    if times[0] > frame_dur:
        container.seek(target, stream=stream, backward=True, any_frame=False)
    out: list[np.ndarray | None] = [None] * len(times)
    cache: dict[int, np.ndarray] = {}
    rgb = VideoReformatter()  # keeps its conversion context across frames (much faster than frame.to_ndarray)

    def take(frame: av.VideoFrame) -> np.ndarray:
        if frame.pts not in cache:
            cache[frame.pts] = rgb.reformat(frame, format="rgb24").to_ndarray()
        return cache[frame.pts]

    i, prev, prev_t = 0, None, -math.inf
    try:
        for frame in container.decode(stream):
            t = float(frame.pts * stream.time_base) if frame.pts is not None else prev_t + frame_dur
            # Every wanted time before this frame's time is shown by the previous frame (or this one after a seek
            # that landed late, which only happens for times before the first frame).
            while i < len(times) and times[i] + _EPS < t:
                out[i] = take(prev if prev is not None else frame)
                i += 1
            if i == len(times):
                break
            prev, prev_t = frame, t
    except av.FFmpegError as e:
        raise VideoReadError(f"{path}: decoding failed after {max(prev_t, 0):.3f} s ({what}): {e}") from None
    if i < len(times):
        declared = _stream_duration(container, stream)
        if prev is None:
            reason = f"truncated or damaged? the header says {declared:.3f} s" if declared > times[0] else "empty?"
            raise VideoReadError(f"{path}: file is {reason}: no frame could be decoded from {times[0]:.3f} s ({what})")
        if times[-1] > prev_t + frame_dur + end_tolerance:
            if declared > prev_t + 2 * frame_dur + end_tolerance:
                reason = f"file is truncated: decoding stopped at {prev_t:.3f} s but the header says {declared:.3f} s"
            else:
                reason = f"time range is beyond the end of the video (last frame at {prev_t:.3f} s)"
            raise VideoReadError(f"{path}: {reason} ({what})")
        for j in range(i, len(times)):  # within the tolerance: the last frame is shown
            out[j] = take(prev)
    return np.stack(out)  # type: ignore[arg-type]


def read_frames_at(
    path: str | os.PathLike,
    times: Sequence[float] | np.ndarray,
    end_tolerance: float = 0.5,
    context: str | None = None,
    threads: int = 0,
) -> np.ndarray:
    """The frames of ``path`` shown at ``times`` (seconds of presentation time), in the order given.

    Opens the file once and seeks once, to the keyframe before the earliest time. Repeated times give repeated
    frames. Times up to ``end_tolerance`` seconds past the last frame give the last frame; later ones raise.

    Args:
        threads: decoder threads; 0 lets FFmpeg decide (frame threading is slower for short reads, so the default
            is slice threading only).
        context: extra text for error messages (e.g. the clip's time range in the whole video).

    Returns:
        uint8 array ``(N, H, W, 3)``, RGB.
    """
    times = np.asarray(times, dtype=np.float64)
    what = _describe(times, context)
    if times.size == 0:
        raise VideoReadError(f"{path}: no frame times asked for")
    if not np.all(np.isfinite(times)) or times.min() < -_EPS:
        raise VideoReadError(f"{path}: frame times must be finite and >= 0 ({what})")
    order = np.argsort(times, kind="stable")
    container, stream = _open(path, what)
    with container:
        stream.thread_type = "SLICE"
        if threads:
            stream.codec_context.thread_count = threads
        frames = _decode_at(container, stream, str(path), times[order], end_tolerance, what)
    result = np.empty_like(frames)
    result[order] = frames
    return result


def read_video_clip(
    path: str | os.PathLike,
    start: float,
    end: float,
    num_frames: int,
    sample: str = "uniform",
    rng: np.random.Generator | None = None,
    end_tolerance: float = 0.5,
) -> np.ndarray:
    """``num_frames`` frames of the plain file ``path`` sampled from ``[start, end]`` s: ``(F, H, W, 3)`` uint8."""
    times = sample_times(start, end, num_frames, sample, rng)
    return read_frames_at(path, times, end_tolerance=end_tolerance, context=f"clip {start:.3f}-{end:.3f} s")


def chunk_path(video_root: str | os.PathLike, video_uid: str, chunk: int) -> Path:
    """``<root>/<video_uid>/<chunk>.mp4``."""
    return Path(video_root) / video_uid / f"{chunk}.mp4"


def read_clip(
    video_root: str | os.PathLike,
    video_uid: str,
    start: float,
    end: float,
    num_frames: int,
    sample: str = "uniform",
    chunk_seconds: float = 600.0,
    rng: np.random.Generator | None = None,
    end_tolerance: float = 0.5,
) -> np.ndarray:
    """A clip of the chunked video ``<root>/<video_uid>/<k>.mp4``, sampled from ``[start, end]`` (video seconds).

    Frames are sampled by :func:`~egovlp.data.sampling.sample_times` (``"rand"``: a random time in each of F equal
    segments, ``"uniform"``: their middles); chunk ``k = floor(t / chunk_seconds)`` holds time ``t``. Each chunk
    file touched is opened and sought once. Clips shorter than F frames repeat frames.

    Returns:
        uint8 array ``(F, H, W, 3)``, RGB.
    """
    times = sample_times(start, end, num_frames, sample, rng)
    chunks = np.floor(times / chunk_seconds).astype(np.int64)
    context = f"clip {video_uid} {start:.3f}-{end:.3f} s"
    parts: list[np.ndarray] = []
    for k in np.unique(chunks):
        local = times[chunks == k] - k * chunk_seconds
        path = chunk_path(video_root, video_uid, int(k))
        if not path.is_file() and k > 0 and local.max() <= end_tolerance:
            # The clip ends a hair after the video's last chunk boundary: show the previous chunk's last frame.
            path, local = chunk_path(video_root, video_uid, int(k) - 1), local + chunk_seconds
        parts.append(read_frames_at(path, local, end_tolerance=end_tolerance, context=context))
    return np.concatenate(parts)  # chunks ascend and times are sorted, so the order is kept
