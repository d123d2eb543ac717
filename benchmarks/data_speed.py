"""Data loading speed: one-seek clip reader vs a reader that seeks for every frame (the official loader's approach).

Generates (once, cached in --workdir) a 600 s chunk like EgoVLP's: short side 256, 30 fps, H.264 with x264's
default keyframe interval (250 frames), moving textured content with noise. Then reads random EgoClip-like clips
(0.5-2 s) with 4 and 16 frames through a DataLoader with 0, 1 and 2 workers, and prints clips/s for both readers.
Optionally (--csv-rows, default 3.85 M) times loading an EgoClip CSV of that many rows and its peak memory.

    python benchmarks/data_speed.py [--clips 24] [--csv-rows 3850000] [--workdir /tmp/egovlp_bench]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from egovlp.data.sampling import sample_times
from egovlp.data.video_io import read_frames_at

WIDTH, HEIGHT, FPS, SECONDS, GOP = 456, 256, 30, 600, 250


def make_chunk(path: Path) -> Path:
    """A 600 s, 456x256, 30 fps H.264 chunk with moving texture and film grain (about 1 Mbit/s, like real chunks)."""
    if path.is_file():
        return path
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:HEIGHT, 0 : WIDTH * 2].astype(np.float32)
    texture = 128 + 60 * np.sin(x / 23.0) * np.cos(y / 17.0) + 40 * np.sin((x + y) / 41.0)
    texture = np.stack([texture, np.roll(texture, 37, 1), np.roll(texture, 91, 0)], -1)
    noise = [rng.normal(0, 10, (2 * HEIGHT, 2 * WIDTH, 3)).astype(np.float32) for _ in range(8)]
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        stream.codec_context.gop_size = GOP
        stream.options = {"preset": "veryfast", "crf": "23"}
        for n in range(SECONDS * FPS):
            shift = int(40 * math.sin(n / 90.0) + n // 3) % WIDTH
            dy, dx = rng.integers(HEIGHT), rng.integers(WIDTH)  # fresh noise every frame (a shifted window)
            grain = noise[n % 8][dy : dy + HEIGHT, dx : dx + WIDTH]
            frame = np.clip(texture[:, shift : shift + WIDTH] + grain, 0, 255).astype(np.uint8)
            vf = av.VideoFrame.from_ndarray(frame, format="rgb24")
            vf.pts = n
            container.mux(stream.encode(vf))
        container.mux(stream.encode(None))
    os.replace(tmp, path)
    return path


def read_per_frame_seek(path: str, times: np.ndarray) -> np.ndarray:
    """Baseline: for every wanted frame, seek to the keyframe before it and decode up to it (as cv2's
    ``CAP_PROP_POS_FRAMES`` does in the official loader); one open per clip."""
    frames = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        for t in times:
            container.seek(int(t / stream.time_base), stream=stream, backward=True)
            prev = None
            for frame in container.decode(stream):
                if frame.time > t + 1e-6:
                    break
                prev = frame
            frames.append((prev or frame).to_ndarray(format="rgb24"))
    return np.stack(frames)


class ClipReads(Dataset):
    """Random EgoClip-like clips of one chunk, read by ``reader(path, times)``: items ``(F, H, W, 3)`` uint8."""

    def __init__(self, path: Path, num_clips: int, num_frames: int, reader) -> None:
        rng = np.random.default_rng(1)
        starts = rng.uniform(0, SECONDS - 3, num_clips)
        self.clips = [(s, s + rng.uniform(0.5, 2.0)) for s in starts]
        self.path, self.num_frames, self.reader = str(path), num_frames, reader

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> torch.Tensor:
        rng = np.random.default_rng(i)
        times = sample_times(*self.clips[i], self.num_frames, "rand", rng)
        return torch.from_numpy(self.reader(self.path, times))


def clips_per_second(path: Path, num_clips: int, num_frames: int, workers: int, reader) -> float:
    loader = DataLoader(ClipReads(path, num_clips, num_frames, reader), batch_size=1, num_workers=workers)
    start = time.perf_counter()
    for _ in loader:
        pass
    return num_clips / (time.perf_counter() - start)


def csv_load(workdir: Path, rows: int) -> dict:
    """Write an EgoClip CSV of ``rows`` rows (cached) and load it in a fresh process: seconds and peak RSS."""
    path = workdir / f"egoclip_{rows}.csv"
    if not path.is_file():
        rng = np.random.default_rng(0)
        header = "clip_idx\tvideo_uid\tvideo_dur\tnarration_source\tnarration_ind\tnarration_time\tclip_start\t"
        with open(path.with_suffix(".tmp"), "w") as f:
            f.write(header + "clip_end\tclip_text\ttag_verb\ttag_noun\n")
            for block in range(0, rows, 100_000):
                t = rng.uniform(0, 1000, min(100_000, rows - block))
                f.writelines(
                    f"{i}\t{i // 400:08x}-2743-47fc-8564-d5efd11f9e90\t1028.033333\tnarration_pass_1\t{i % 400}\t"
                    f"{ti:.4f}\t{ti - 0.38:.6f}\t{ti + 0.38:.6f}\t#C C picks a bag of clothes from the floor\t[93]\t"
                    f"[192, 115, 12]\n"
                    for i, ti in zip(range(block, block + len(t)), t)
                )
        os.replace(path.with_suffix(".tmp"), path)
    code = (
        "import json, resource, time\nfrom egovlp.data.egoclip_table import load_egoclip\n"
        f"t = time.perf_counter(); table = load_egoclip({str(path)!r}); s = time.perf_counter() - t\n"
        "print(json.dumps({'rows': len(table), 'seconds': s, "
        "'peak_rss_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default="/tmp/egovlp_bench")
    parser.add_argument("--clips", type=int, default=24, help="clips per one-seek measurement")
    parser.add_argument("--baseline-clips", type=int, default=8, help="clips per per-frame-seek measurement")
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--csv-rows", type=int, default=3_850_000, help="0 skips the CSV measurement")
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    start = time.perf_counter()
    chunk = make_chunk(workdir / "chunk_600s_256p_30fps.mp4")
    print(f"chunk: {chunk} ({chunk.stat().st_size / 2**20:.0f} MiB, {time.perf_counter() - start:.0f} s to make/find)")
    print(f"{WIDTH}x{HEIGHT}, {FPS} fps, {SECONDS} s, keyframe every {GOP} frames; clips of 0.5-2 s, random frames")
    print("\n| frames | workers | one-seek clips/s | per-frame-seek clips/s | speed-up |\n|---|---|---|---|---|")
    for num_frames in (4, 16):
        for workers in (int(w) for w in args.workers.split(",")):
            ours = clips_per_second(chunk, args.clips, num_frames, workers, read_frames_at)
            base = clips_per_second(chunk, args.baseline_clips, num_frames, workers, read_per_frame_seek)
            print(f"| {num_frames} | {workers} | {ours:.2f} | {base:.2f} | {ours / base:.1f}x |", flush=True)
    if args.csv_rows:
        r = csv_load(workdir, args.csv_rows)
        print(f"\negoclip.csv: {r['rows']:,} rows loaded in {r['seconds']:.1f} s, peak RSS {r['peak_rss_gb']:.2f} GiB")


if __name__ == "__main__":
    main()
