"""Video decoding with PyAV: one seek per file, decode forward, pick frames by presentation time.

Two layouts are read:

* plain files: :func:`read_frames_at` (frames at given times) and :func:`read_video_clip` (a sampled clip);
* the chunked EgoClip layout ``<root>/<video_uid>/<k>.mp4`` where chunk ``k`` holds the video's time
  ``[k * chunk_seconds, (k + 1) * chunk_seconds)`` with its own timestamps starting at 0:
  :func:`read_clip`. A clip that spans two chunks is read from both.

The chunk length is recorded in ``<root>/chunks.json`` (``{"chunk_seconds": 30.0}``) by ``egovlp data synth`` and
``egovlp data prepare-videos``. A configured ``chunk_seconds <= 0`` means "auto": the recorded value, else 600 (the
released EgoClip layout), see :func:`resolve_chunk_seconds`. A wrong chunk length reads the wrong frames, so it is
diagnosed where it shows: a configured value that disagrees with ``chunks.json``, a chunk file much longer than
``chunk_seconds``, or a time past the end of a chunk much shorter than ``chunk_seconds`` while the next chunk exists
all raise a :class:`~egovlp.errors.VideoReadError` saying that the chunk length looks wrong, with both numbers.

Times are the stream's presentation times in seconds (``pts * time_base``; 0 at the start of a normally muxed file).
The frame shown at time ``t`` is the last frame whose presentation time is ``<= t`` (the first frame for times before
it); the file's own timestamps decide, so any frame rate (or a variable one) is handled without assuming 30 fps.

Every failure raises :class:`~egovlp.errors.VideoReadError` naming the file and the time range asked for.
"""

from __future__ import annotations

import functools
import json
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
from egovlp.errors import DataError, VideoReadError

log = logging.getLogger(__name__)

__all__ = [
    "CHUNKS_FILE",
    "DEFAULT_CHUNK_SECONDS",
    "VideoInfo",
    "chunk_path",
    "probe",
    "read_chunks_file",
    "read_clip",
    "read_frames_at",
    "read_video_clip",
    "resolve_chunk_seconds",
    "write_chunks_file",
]

CHUNKS_FILE = "chunks.json"  # <root>/chunks.json: {"chunk_seconds": 30.0}
DEFAULT_CHUNK_SECONDS = 600.0  # the released EgoClip layout (EgoVLP's 10-minute chunks)
# A chunk this much longer than chunk_seconds (fraction, plus the end tolerance) means the chunk length is wrong; the
# same fraction shorter, with a next chunk present, too. (Cutting at keyframes makes real chunks a little uneven.)
_CHUNK_SLACK = 0.1

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


def _describe(times: Sequence[float] | np.ndarray, context: str | None) -> str:
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
    cache: dict[int, np.ndarray] = {}  # by pts; a frame without one gets a fresh key
    rgb = VideoReformatter()  # keeps its conversion context across frames (much faster than frame.to_ndarray)

    def take(frame: av.VideoFrame) -> np.ndarray:
        key = frame.pts if frame.pts is not None else -1 - len(cache)
        if key not in cache:
            cache[key] = rgb.reformat(frame, format="rgb24").to_ndarray()
        return cache[key]

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
    return _read_frames(path, times, end_tolerance, context, threads)


def _read_frames(
    path: str | os.PathLike,
    times: Sequence[float] | np.ndarray,
    end_tolerance: float,
    context: str | None,
    threads: int = 0,
    max_duration: tuple[float, str] | None = None,
) -> np.ndarray:
    """:func:`read_frames_at`; with ``max_duration = (chunk_seconds, hint)`` a file declaring a much longer duration
    raises (a chunk of a layout read with too short a chunk length)."""
    times = np.asarray(times, dtype=np.float64)
    what = _describe(times, context)
    if times.size == 0:
        raise VideoReadError(f"{path}: no frame times asked for")
    if not np.all(np.isfinite(times)) or times.min() < -_EPS:
        raise VideoReadError(f"{path}: frame times must be finite and >= 0 ({what})")
    order = np.argsort(times, kind="stable")
    container, stream = _open(path, what)
    with container:
        if max_duration is not None:
            declared = _stream_duration(container, stream)
            if declared > max_duration[0] * (1 + _CHUNK_SLACK) + end_tolerance:
                raise VideoReadError(
                    f"{path}: the chunk length looks wrong: this chunk lasts {declared:.3f} s but chunk_seconds is "
                    f"{max_duration[0]:g}; {max_duration[1]} ({what})"
                )
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


def write_chunks_file(video_root: str | os.PathLike, chunk_seconds: float) -> Path:
    """Record the chunk length of a chunked layout in ``<root>/chunks.json`` (written atomically)."""
    root = Path(video_root)
    root.mkdir(parents=True, exist_ok=True)
    path, tmp = root / CHUNKS_FILE, root / f".{CHUNKS_FILE}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps({"chunk_seconds": float(chunk_seconds)}) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


@functools.lru_cache(maxsize=64)
def _chunks_file(path: str, _mtime_ns: int) -> float:
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)["chunk_seconds"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f'{path}: cannot read the chunk length, expected {{"chunk_seconds": 30.0}}: {e!r}') from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise DataError(f"{path}: 'chunk_seconds' must be a number > 0, got {value!r}")
    return float(value)


def read_chunks_file(video_root: str | os.PathLike) -> float | None:
    """The chunk length recorded in ``<root>/chunks.json``, or None when there is none (cached per file version)."""
    path = os.path.join(video_root, CHUNKS_FILE)
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return None
    return _chunks_file(path, mtime)


def resolve_chunk_seconds(video_root: str | os.PathLike, configured: float = 0.0) -> float:
    """The chunk length to read ``video_root`` with.

    ``configured <= 0`` means auto: the value of ``<root>/chunks.json``, else :data:`DEFAULT_CHUNK_SECONDS` (600).
    A configured value > 0 is used as given, but one that disagrees with ``chunks.json`` raises
    :class:`VideoReadError` naming both numbers.
    """
    recorded = read_chunks_file(video_root)
    if configured is None or configured <= 0:
        return recorded if recorded is not None else DEFAULT_CHUNK_SECONDS
    if recorded is not None and not math.isclose(recorded, configured, rel_tol=1e-6):
        raise VideoReadError(
            f"{video_root}: the chunk length looks wrong: chunk_seconds={configured:g} is configured but "
            f"{os.path.join(video_root, CHUNKS_FILE)} says the videos were cut into {recorded:g} s chunks; set "
            f"chunk_seconds={recorded:g}, or 0 to read it from that file"
        )
    return float(configured)


def read_clip(
    video_root: str | os.PathLike,
    video_uid: str,
    start: float,
    end: float,
    num_frames: int,
    sample: str = "uniform",
    chunk_seconds: float = 0.0,
    rng: np.random.Generator | None = None,
    end_tolerance: float = 0.5,
) -> np.ndarray:
    """A clip of the chunked video ``<root>/<video_uid>/<k>.mp4``, sampled from ``[start, end]`` (video seconds).

    Frames are sampled by :func:`~egovlp.data.sampling.sample_times` (``"rand"``: a random time in each of F equal
    segments, ``"uniform"``: their middles); chunk ``k = floor(t / chunk_seconds)`` holds time ``t``. Each chunk
    file touched is opened and sought once. Clips shorter than F frames repeat frames. ``chunk_seconds <= 0``: read
    it from ``<root>/chunks.json`` (else 600); see :func:`resolve_chunk_seconds` and the module docstring for how a
    wrong chunk length is diagnosed.

    Returns:
        uint8 array ``(F, H, W, 3)``, RGB.
    """
    chunk_seconds = resolve_chunk_seconds(video_root, chunk_seconds)
    times = sample_times(start, end, num_frames, sample, rng)
    chunks = np.floor(times / chunk_seconds).astype(np.int64)
    context = f"clip {video_uid} {start:.3f}-{end:.3f} s"
    hint = f"set chunk_seconds to the length the videos were cut into, or 0 to read {CHUNKS_FILE} of {video_root}"
    parts: list[np.ndarray] = []
    for k in np.unique(chunks):
        local = times[chunks == k] - k * chunk_seconds
        path = chunk_path(video_root, video_uid, int(k))
        if not path.is_file() and k > 0 and local.max() <= end_tolerance:
            # The clip ends a hair after the video's last chunk boundary: show the previous chunk's last frame.
            path, local = chunk_path(video_root, video_uid, int(k) - 1), local + chunk_seconds
        try:
            parts.append(_read_frames(path, local, end_tolerance, context, max_duration=(chunk_seconds, hint)))
        except VideoReadError:
            _check_short_chunk(path, video_root, video_uid, int(k), float(local.max()), chunk_seconds, end_tolerance,
                               f"{hint} ({_describe(local, context)})")  # fmt: skip
            raise
    return np.concatenate(parts)  # chunks ascend and times are sorted, so the order is kept


def _check_short_chunk(
    path: Path, root: str | os.PathLike, uid: str, k: int, wanted: float, chunk_seconds: float, tol: float, hint: str
) -> None:
    """After a failed read at ``wanted`` s of chunk ``k``: raise "the chunk length looks wrong" when the time is past
    the end of a chunk much shorter than ``chunk_seconds`` while the next chunk exists (so it is not the last)."""
    if not path.is_file() or not chunk_path(root, uid, k + 1).is_file():
        return
    try:
        duration = probe(path).duration
    except VideoReadError:
        return
    if 0 < duration < chunk_seconds * (1 - _CHUNK_SLACK) and wanted > duration + tol:
        raise VideoReadError(
            f"{path}: the chunk length looks wrong: this chunk lasts {duration:.3f} s, much less than chunk_seconds="
            f"{chunk_seconds:g}, but the next chunk {k + 1}.mp4 exists, so the videos were cut into about "
            f"{duration:.3g} s chunks; {hint}"
        ) from None
