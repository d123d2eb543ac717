"""Throughput and peak memory of EgoVLPv2's three paths, SDPA attention vs the explicit reference, in one run.

    python benchmarks/model_speed.py                       # egovlpv2-base, 4 frames, batch 2, CPU
    python benchmarks/model_speed.py --arch egovlpv2-tiny --batch 16
    python benchmarks/model_speed.py --device cuda --precision bf16 --batch 16

For each path (dual video, dual text, fused) and mode (forward under no_grad; forward+backward in train mode) it
prints items/s and the peak memory above the idle model, for both attention implementations, and their ratios.
The two implementations are timed interleaved (one step of each in turn, after a warm-up of both), so a change in the
machine's load or the allocator's state hits both alike. Peak memory is measured on a separate step of each: on the
CPU, the process's resident-set high-water mark above its level at the start of the step (freed heap memory is given
back to the OS with glibc's malloc_trim and the mark reset through /proc/self/clear_refs before each measurement); on
CUDA, torch.cuda.max_memory_allocated. For forward+backward it also counts, exactly, the activation memory kept for
the backward pass (distinct tensor storages saved by autograd, parameters excluded): the explicit path keeps every
attention matrix, SDPA does not.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
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
            gc.collect()
            with suppress(OSError, AttributeError):
                ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap pages back, so RSS is what is live
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


def make_step(model, fn, train: bool, autocast):
    def step():
        with autocast:
            out = fn()
        if train:
            out.float().square().mean().backward()
            model.zero_grad(set_to_none=True)

    return step


def timed(step, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def saved_activation_mb(model, fn, autocast) -> float:
    """MB of the distinct non-parameter storages autograd saves for the backward pass of ``fn()``."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
        out = fn()
    del out
    return sum(saved.values()) / 2**20


def measure(model, path: str, inputs, train: bool, iters: int, warmup: int, device, autocast) -> dict:
    """``{impl: (median seconds per call, peak MB, saved MB or nan)}`` of one path, forward (+ backward when
    ``train``)."""
    model.train(train)
    steps = {}
    for impl in ("sdpa", "reference"):
        model.set_attention_impl(impl)
        steps[impl] = make_step(model, path_fn(model, path, *inputs), train, autocast)
    times: dict[str, list[float]] = {impl: [] for impl in steps}
    peaks = {}
    with nullcontext() if train else torch.no_grad():
        for impl, step in steps.items():
            model.set_attention_impl(impl)
            for _ in range(warmup):
                step()
        for i in range(iters):
            order = list(steps) if i % 2 == 0 else list(steps)[::-1]
            for impl in order:
                model.set_attention_impl(impl)
                times[impl].append(timed(steps[impl], device))
        for impl, step in steps.items():
            model.set_attention_impl(impl)
            with PeakMemory(device) as mem:
                step()
            peaks[impl] = mem.peak
    saved = {impl: float("nan") for impl in steps}
    if train:
        for impl in steps:
            model.set_attention_impl(impl)
            saved[impl] = saved_activation_mb(model, path_fn(model, path, *inputs), autocast)
    return {impl: (statistics.median(times[impl]), peaks[impl], saved[impl]) for impl in steps}


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
    header = (
        "path", "mode", "sdpa items/s", "ref items/s", "speed-up", "sdpa peak MB", "ref peak MB", "sdpa saved MB",
        "ref saved MB",
    )  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for path in ("dual video", "dual text", "fused"):
        for train in (False, True):
            res = measure(model, path, (video, ids, mask), train, args.iters, args.warmup, device, autocast)
            (ts, ms, ss), (tr, mr, sr) = res["sdpa"], res["reference"]
            mode = "fwd+bwd" if train else "fwd"
            saved = f"{ss:.0f} | {sr:.0f}" if train else "- | -"
            print(
                f"| {path} | {mode} | {args.batch / ts:.2f} | {args.batch / tr:.2f} | {tr / ts:.2f}x "
                f"| {ms:.0f} | {mr:.0f} | {saved} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
