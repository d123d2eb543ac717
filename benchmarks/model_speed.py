"""Throughput and peak memory of EgoVLPv2's three paths, SDPA attention vs the explicit reference, in one run.

    python benchmarks/model_speed.py                       # egovlpv2-base, 4 frames, batch 2, CPU
    python benchmarks/model_speed.py --arch egovlpv2-tiny --batch 16
    python benchmarks/model_speed.py --device cuda --precision bf16 --batch 16

For each path (dual video, dual text, fused) and mode (forward under no_grad; forward+backward in train mode) it
prints items/s and the peak memory above the idle model, for both attention implementations, and their ratios.
CPU peak memory is the process's resident-set high-water mark (reset between measurements through
/proc/self/clear_refs); CUDA peak memory is torch.cuda.max_memory_allocated.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from contextlib import nullcontext, suppress
from pathlib import Path

import torch

from egovlp.models import create_model


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


class PeakMemory:
    """Peak memory (MB) above the level at entry: CUDA allocator stats, or the process RSS high-water mark."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated() / 2**20
        else:
            with suppress(OSError):
                Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            self.base = _rss_mb("VmRSS")
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() / 2**20 - self.base
        else:
            self.peak = _rss_mb("VmHWM") - self.base


def make_inputs(model, batch: int, frames: int, tokens: int, device: torch.device):
    size = model.cfg.video.img_size
    video = torch.randn(batch, frames, 3, size, size, device=device)
    ids = torch.randint(5, model.cfg.text.vocab_size, (batch, tokens), device=device)
    ids[:, 0], ids[:, -1] = 0, 2
    return video, ids, torch.ones_like(ids)


def path_fn(model, path: str, video, ids, mask):
    if path == "dual video":
        return lambda: model.encode_video(video)
    if path == "dual text":
        return lambda: model.encode_text(ids, mask)
    return lambda: model.vtm_logits(model.fuse(video, ids, mask))


def measure(model, fn, train: bool, iters: int, warmup: int, device, autocast) -> tuple[float, float]:
    """(median seconds per call, peak MB) of ``fn`` (+ backward when ``train``)."""
    model.train(train)

    def step():
        with autocast:
            out = fn()
        if train:
            out.float().square().mean().backward()
            model.zero_grad(set_to_none=True)

    ctx = nullcontext() if train else torch.no_grad()
    with ctx:
        for _ in range(warmup):
            step()
        times = []
        with PeakMemory(device) as mem:
            for _ in range(iters):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                step()
                if device.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
    return statistics.median(times), mem.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="egovlpv2-base")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--text-tokens", type=int, default=15)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = create_model(args.arch).to(device)
    if args.frames != model.cfg.video.num_frames:
        model.resize_temporal_embed(args.frames)
    model.to(device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.precision)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
    video, ids, mask = make_inputs(model, args.batch, args.frames, args.text_tokens, device)

    print(
        f"# {args.arch}, {args.frames} frames, batch {args.batch}, {args.text_tokens} tokens, {args.device} "
        f"({args.threads} threads), {args.precision}, torch {torch.__version__}"
    )
    header = ("path", "mode", "sdpa items/s", "ref items/s", "speed-up", "sdpa peak MB", "ref peak MB", "mem ratio")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for path in ("dual video", "dual text", "fused"):
        for train in (False, True):
            res = {}
            for impl in ("sdpa", "reference"):
                model.set_attention_impl(impl)
                fn = path_fn(model, path, video, ids, mask)
                res[impl] = measure(model, fn, train, args.iters, args.warmup, device, autocast)
            (ts, ms), (tr, mr) = res["sdpa"], res["reference"]
            mode = "fwd+bwd" if train else "fwd"
            print(
                f"| {path} | {mode} | {args.batch / ts:.2f} | {args.batch / tr:.2f} | {tr / ts:.2f}x "
                f"| {ms:.0f} | {mr:.0f} | {mr / max(ms, 1e-9):.2f} |"
            )


if __name__ == "__main__":
    main()
