"""Real-data video preprocessing: resize to a short side and cut into fixed-length chunks (EgoVLP's layout).

``prepare_videos(src, dst)`` turns every ``src/<video_uid>.<ext>`` into ``dst/<video_uid>/<k>.mp4``, chunk ``k``
holding ``[k * chunk_seconds, (k + 1) * chunk_seconds)`` of the source (by presentation time) with timestamps shifted
by ``-k * chunk_seconds`` (so a frame keeps its time within the chunk), resized to
``short_side`` (even sizes, aspect kept) and encoded with H.264 (audio is dropped). Each chunk is written under a
temporary name and renamed when complete, so an interrupted run resumes: finished chunks are skipped and decoding
starts with a seek to the first missing one. The chunk length is recorded in ``dst/chunks.json`` (readers use it when
their ``chunk_seconds`` is 0, and refuse a configured value that disagrees); resuming into ``dst`` with another
chunk length is refused.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import av
from tqdm import tqdm

from egovlp.data.video_io import CHUNKS_FILE, probe, read_chunks_file, write_chunks_file
from egovlp.errors import ConfigError, DataError, VideoReadError

log = logging.getLogger(__name__)

__all__ = ["VIDEO_EXTENSIONS", "PrepareStats", "chunk_video", "output_size", "prepare_videos"]

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".mov", ".webm", ".avi", ".m4v")


@dataclass
class PrepareStats:
    videos: int = 0
    chunks_written: int = 0
    chunks_skipped: int = 0
    failed: int = 0


def output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """``(width, height)`` with the short side ``short_side`` and the other side rounded to an even number."""
    scale = short_side / min(width, height)
    return max(2, 2 * round(width * scale / 2)), max(2, 2 * round(height * scale / 2))


class _ChunkWriter:
    """One output chunk: written to a temporary file, renamed on :meth:`close`."""

    def __init__(self, path: Path, src_stream, size: tuple[int, int], crf: int, preset: str) -> None:
        self.path, self.tmp = path, path.with_name(f".{path.stem}.tmp.mp4")
        self.container = av.open(str(self.tmp), mode="w", format="mp4")
        self.stream = self.container.add_stream("libx264", rate=src_stream.average_rate or src_stream.guessed_rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = size[0], size[1], "yuv420p"
        self.stream.codec_context.time_base = src_stream.time_base  # keep the source's timestamps (VFR safe)
        self.stream.options = {"crf": str(crf), "preset": preset}
        self.size, self.time_base = size, src_stream.time_base

    def write(self, frame: av.VideoFrame, pts: int) -> None:
        out = frame.reformat(width=self.size[0], height=self.size[1], format="yuv420p", interpolation="BILINEAR")
        out.pts, out.time_base = pts, self.time_base
        self.container.mux(self.stream.encode(out))

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()
        os.replace(self.tmp, self.path)


def chunk_video(
    src: str | os.PathLike,
    dst_dir: str | os.PathLike,
    short_side: int = 256,
    chunk_seconds: float = 600.0,
    crf: int = 23,
    preset: str = "veryfast",
) -> tuple[int, int]:
    """Write the missing chunks of ``src`` into ``dst_dir/<k>.mp4``; returns ``(written, skipped)``."""
    info = probe(src)
    if info.duration <= 0:
        raise VideoReadError(f"{src}: unknown duration, cannot plan chunks")
    num_chunks = max(1, math.ceil(info.duration / chunk_seconds))
    dst = Path(dst_dir)
    dst.mkdir(parents=True, exist_ok=True)
    missing = [k for k in range(num_chunks) if not (dst / f"{k}.mp4").is_file()]
    if not missing:
        return 0, num_chunks
    size = output_size(info.width, info.height, short_side)
    written, writer, current = 0, None, -1
    with av.open(str(src)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = stream.time_base
        if tb is None:
            raise VideoReadError(f"{src}: the video stream has no time base, cannot place frames in chunks")
        if missing[0] > 0:
            container.seek(int(missing[0] * chunk_seconds / tb), stream=stream, backward=True)
        try:
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                k = min(max(int(frame.pts * tb // chunk_seconds), 0), num_chunks - 1)
                if k != current:
                    if writer is not None:
                        writer.close()
                        written += 1
                    writer = _ChunkWriter(dst / f"{k}.mp4", stream, size, crf, preset) if k in missing else None
                    current = k
                if writer is not None:
                    writer.write(frame, frame.pts - round(k * chunk_seconds / tb))
        except av.FFmpegError as e:
            raise VideoReadError(
                f"{src}: decoding failed in chunk {current} ({current * chunk_seconds:.0f} s+): {e}"
            ) from None
        if writer is not None:
            writer.close()
            written += 1
    return written, num_chunks - len(missing)


def prepare_videos(
    src_dir: str | os.PathLike,
    dst_dir: str | os.PathLike,
    short_side: int = 256,
    chunk_seconds: float = 600.0,
    crf: int = 23,
    preset: str = "veryfast",
    progress: bool = True,
    stop_on_error: bool = False,
) -> PrepareStats:
    """Resize and chunk every video of ``src_dir`` into ``dst_dir/<video_uid>/<k>.mp4`` (resumable); the chunk
    length goes to ``dst_dir/chunks.json``.

    The video uid is the file name without its extension. A video that fails is logged and counted (or raises with
    ``stop_on_error``); its finished chunks stay, its partial chunk is left as a temporary file.
    """
    src_dir, dst_dir = Path(src_dir), Path(dst_dir)
    files = sorted(p for p in src_dir.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS) if src_dir.is_dir() else []
    if not files:
        raise VideoReadError(f"{src_dir}: no video files ({', '.join(VIDEO_EXTENSIONS)})")
    if chunk_seconds <= 0:
        raise ConfigError(f"chunk_seconds must be > 0, got {chunk_seconds:g}")
    recorded = read_chunks_file(dst_dir) if dst_dir.is_dir() else None
    if recorded is not None and not math.isclose(recorded, chunk_seconds, rel_tol=1e-6):
        raise DataError(
            f"{dst_dir / CHUNKS_FILE}: {dst_dir} holds {recorded:g} s chunks, not {chunk_seconds:g} s; resume with "
            f"chunk_seconds={recorded:g} or write to another folder"
        )
    write_chunks_file(dst_dir, chunk_seconds)
    stats = PrepareStats()
    bar = tqdm(files, desc="prepare-videos", unit="video", disable=not progress)
    for path in bar:
        bar.set_postfix_str(path.name)
        try:
            written, skipped = chunk_video(path, dst_dir / path.stem, short_side, chunk_seconds, crf, preset)
        except VideoReadError as e:
            if stop_on_error:
                raise
            stats.failed += 1
            log.error("%s", e)
            continue
        stats.videos += 1
        stats.chunks_written += written
        stats.chunks_skipped += skipped
    log.info("prepared %d videos: %d chunks written, %d already there, %d videos failed", stats.videos,
             stats.chunks_written, stats.chunks_skipped, stats.failed)  # fmt: skip
    return stats
