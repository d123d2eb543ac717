"""One pre-training step with shared lower layers vs the release's three full passes, on the same batch, in one run.

    python benchmarks/pretrain_step.py                           # egovlpv2-base, 4 frames, batch 4, CPU
    python benchmarks/pretrain_step.py --arch egovlpv2-tiny --batch 16 --iters 10
    python benchmarks/pretrain_step.py --device cuda --batch 16

A step is ``PretrainModule.forward`` (EgoNCE + MLM + VTM) plus ``backward``, with the model in eval mode (dropout
off, so both modes compute the same function) and gradients on. ``loss.share_lower_layers=True`` computes the unfused
lower video blocks once for the MLM and VTM fused passes, skips the last video block for MLM and computes only the CLS
of the last video block for VTM and the dual pass; ``False`` runs three full passes (dual, MLM-fused, VTM-fused).

Both modes see the same random batch and the same MLM masks and VTM negatives (the module's generator is reseeded
before every step). The script first checks that the losses agree to 1e-5 (relative to their magnitude) and that
the gradients agree, and exits non-zero otherwise; then it times the steps (modes interleaved, so a change in the
machine's load hits both) and prints a markdown table. GMACs per step (forward + backward) are counted with
``torch.utils.flop_counter`` on meta tensors (shapes only, no compute; ``--no-macs`` skips them).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from torch.utils.flop_counter import FlopCounterMode

from egovlp.data.tokenizer import Tokenizer
from egovlp.models import create_model
from egovlp.models.config import ModelConfig
from egovlp.models.model import EgoVLPv2
from egovlp.tasks.pretrain import LossConfig, PretrainModule

LOSS_TOL = 1e-5  # |a - b| <= LOSS_TOL * max(1, |a|) per loss term
GRAD_TOL = 1e-4  # max over parameters of max|g_a - g_b| / max(max|g_a|, floor) (float32 round-off)
GRAD_FLOOR = 1e-2  # that floor, relative to the largest gradient entry of the model
MODES = {"shared lower layers": True, "three full passes": False}

_WORDS = (
    "c", "picks", "up", "puts", "down", "cuts", "opens", "closes", "washes", "knife", "bowl", "cup", "door", "tap",
    "onion", "pan", "lid", "drawer", "sponge",
)  # fmt: skip


def train_tokenizer(out_dir: str, vocab_size: int = 400) -> Tokenizer:
    """A small byte-level BPE trained on made-up narrations (MLM masking needs its special and non-special ids)."""
    g = torch.Generator().manual_seed(0)
    texts = [" ".join(_WORDS[i] for i in torch.randint(len(_WORDS), (6,), generator=g).tolist()) for _ in range(2000)]
    return Tokenizer.train(texts, vocab_size, out_dir, min_frequency=1)


def make_batch(model: EgoVLPv2, tokenizer: Tokenizer, batch: int, frames: int, tokens: int, seed: int = 0) -> dict:
    """Random video, token ids inside both vocabularies (one padded row) and multi-hot tags with collisions."""
    if tokenizer.vocab_size > model.cfg.text.vocab_size:
        raise ValueError(f"tokenizer vocab {tokenizer.vocab_size} > model vocab {model.cfg.text.vocab_size}")
    g = torch.Generator().manual_seed(seed)
    size = model.cfg.video.img_size
    video = torch.randn(batch, frames, 3, size, size, generator=g)
    # ids below the tokenizer's size are valid for the model too, and the MLM random replacements come from there
    ids = torch.randint(len(tokenizer.special_ids), tokenizer.vocab_size, (batch, tokens), generator=g)
    ids[:, 0], ids[:, -1] = 0, 2  # <s> ... </s>
    mask = torch.ones_like(ids)
    if batch > 1 and tokens > 4:  # one shorter narration: </s> then <pad>
        cut = tokens // 2
        ids[1, cut], ids[1, cut + 1 :], mask[1, cut + 1 :] = 2, 1, 0
    num_verbs, num_nouns = 8, 12  # few classes: some pairs share a verb and a noun (EgoNCE positives)
    verb = (torch.rand(batch, num_verbs, generator=g) < 0.1).float()
    noun = (torch.rand(batch, num_nouns, generator=g) < 0.1).float()
    verb[torch.arange(batch), torch.randint(num_verbs, (batch,), generator=g)] = 1.0  # at least one tag each
    noun[torch.arange(batch), torch.randint(num_nouns, (batch,), generator=g)] = 1.0
    if batch > 1:  # a guaranteed EgoNCE positive pair besides the diagonal
        verb[1], noun[1] = verb[0], noun[0]
    return {"video": video, "input_ids": ids, "attention_mask": mask, "verb": verb, "noun": noun}


def train_step(module: PretrainModule, batch: dict, seed: int) -> dict[str, torch.Tensor]:
    """Forward + backward on ``batch`` with the module's random stream reset to ``seed`` (same masks, negatives)."""
    module.generator.manual_seed(seed)
    module.zero_grad(set_to_none=True)
    out = module(batch)
    out["loss"].backward()
    return {k: v.detach() for k, v in out.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class Agreement(NamedTuple):
    losses: dict[str, tuple[float, float]]  # term -> (value, max abs difference between the modes)
    grad_rel: float  # max over parameters of max|g_a - g_b| / max(max|g_a|, floor)
    grad_where: str  # the parameter where it is reached
    grad_vector_rel: float  # ||g_a - g_b|| / ||g_a|| over all parameters together


def check_equal(modules: dict[str, PretrainModule], batch: dict, seed: int) -> Agreement:
    """Run one step per mode and compare losses and gradients; exit with a message beyond LOSS_TOL / GRAD_TOL."""
    (name_a, mod_a), (name_b, mod_b) = modules.items()
    out_a = train_step(mod_a, batch, seed)
    grads = {n: p.grad.clone() for n, p in mod_a.named_parameters() if p.grad is not None}
    out_b = train_step(mod_b, batch, seed)
    loss_diff = {k: (out_a[k] - out_b[k]).abs().item() for k in out_a}
    bad = [k for k in out_a if loss_diff[k] > LOSS_TOL * max(1.0, out_a[k].abs().item())]
    got = {n for n, p in mod_b.named_parameters() if p.grad is not None}
    # a parameter's error is measured against its largest gradient entry, but at least GRAD_FLOOR x the model's
    # largest: near-zero gradients (e.g. of the time attention's qkv, ~1e-8 here) are round-off-sized sums
    floor = GRAD_FLOOR * max(g.abs().max().item() for g in grads.values())
    worst, where, diff_sq, norm_sq = 0.0, "", 0.0, 0.0
    for n, p in mod_b.named_parameters():
        if n not in grads or p.grad is None:
            continue
        diff = grads[n] - p.grad
        rel = diff.abs().max().item() / max(grads[n].abs().max().item(), floor, 1e-30)
        diff_sq, norm_sq = diff_sq + diff.square().sum().item(), norm_sq + grads[n].square().sum().item()
        if rel > worst:
            worst, where = rel, n
    problems = []
    if bad:
        problems.append(
            "losses differ: " + ", ".join(f"{k} {out_a[k].item():.6g} vs {out_b[k].item():.6g}" for k in bad)
        )
    if got != set(grads):
        problems.append(f"different parameters got gradients: {sorted(got ^ set(grads))[:5]}")
    if worst > GRAD_TOL:
        problems.append(f"gradients differ: max relative difference {worst:.3g} (> {GRAD_TOL}) at {where}")
    if problems:
        sys.exit(f"FAILED: {name_a!r} and {name_b!r} disagree:\n  " + "\n  ".join(problems))
    losses = {k: (out_a[k].item(), loss_diff[k]) for k in out_a}
    return Agreement(losses, worst, where, (diff_sq / max(norm_sq, 1e-30)) ** 0.5)


def count_gmacs(cfg: ModelConfig, batch: int, frames: int, tokens: int, share: bool) -> float:
    """GMACs (FLOPs / 2) of one forward + backward of the model calls a pre-training step makes, on meta tensors.

    Mirrors ``PretrainModule.forward`` (dual pass, MLM fused pass, VTM fused pass, heads; the loss functions'
    few MACs are left out), counted by ``FlopCounterMode`` on shapes only, with the explicit attention so every
    attention matmul is counted. ``share``: lower layers once, MLM without the last video block, CLS-only VTM.
    (On egovlpv2-tiny this agrees with counting a real ``PretrainModule`` step to 1e-5.)
    """
    with torch.device("meta"):
        model = EgoVLPv2(dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, num_frames=frames)))
        video = torch.empty(batch, frames, 3, cfg.video.img_size, cfg.video.img_size)
        ids = torch.zeros(batch, tokens, dtype=torch.long)
        mask = torch.ones(batch, tokens, dtype=torch.long)
    model.set_attention_impl("reference")
    with FlopCounterMode(display=False) as counter:
        t = model.encode_text(ids, mask)
        if share:
            v = model.encode_video(video)
            lower = model.video_lower(video)
            mlm = model.fuse_upper(lower, model.text_lower(ids, mask), mask, frames, video_out="none")
            vtm = model.fuse_upper(lower, model.text_lower(ids, mask), mask, frames, video_out="cls")
        else:
            vm = model.video_model
            v = model.vid_proj(vm.norm(vm.forward_features(video))[:, 0])
            mlm, vtm = model.fuse(video, ids, mask), model.fuse(video, ids, mask)
        total = v.sum() + t.sum() + model.mlm_logits(mlm).sum() + model.vtm_logits(vtm).sum()
        total.backward()
    return counter.get_total_flops() / 2e9


def time_steps(
    steps: dict[str, Callable[[], object]], iters: int, device: torch.device
) -> dict[str, list[tuple[float, float]]]:
    """(wall, process CPU) seconds per call of each step, interleaved (a, b, a, b, ...) so load changes hit all modes.

    The process CPU time is what the step cost this process; on a CPU shared with other jobs it varies much less
    than the wall time (with one thread it is the step's compute time; with more it also counts spin-waiting).
    """
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
    for _ in range(iters):
        for name, fn in steps.items():
            _sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            _sync(device)
            times[name].append((time.perf_counter() - t0, time.process_time() - c0))
    return times


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="egovlpv2-base")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4, help="items per step")
    parser.add_argument("--text-tokens", type=int, default=15)
    parser.add_argument("--iters", type=int, default=2, help="timed steps per mode")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per mode (the check step is one)")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-macs", dest="macs", action="store_false", help="do not count GMACs")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows up when piped to a file
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_flush_denormal(True)  # as the training loop does on the CPU
    model = create_model(args.arch)
    if args.frames != model.cfg.video.num_frames:
        model.resize_temporal_embed(args.frames)
    model.to(device)
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = train_tokenizer(tmp)
    batch = make_batch(model, tokenizer, args.batch, args.frames, args.text_tokens, args.seed)
    batch = {k: v.to(device) for k, v in batch.items()}
    modules = {
        name: PretrainModule(model, dataclasses.replace(LossConfig(), share_lower_layers=share), tokenizer).eval()
        for name, share in MODES.items()
    }
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# {args.arch}, {args.frames} frames, batch {args.batch}, {args.text_tokens} tokens, {device} "
        f"({args.threads} threads), fp32, torch {torch.__version__}, load average {load:.2f} at start"
    )

    t0 = time.perf_counter()
    agree = check_equal(modules, batch, args.seed)  # also the first warmup step of each mode
    print(f"check step (one per mode): {time.perf_counter() - t0:.1f} s; the modes agree:")
    print("\n| term | value | max abs difference |\n|---|---|---|")
    for k, (value, diff) in agree.losses.items():
        print(f"| {k} | {value:.6f} | {diff:.2e} |")
    print(
        f"\ngradients: max relative difference {agree.grad_rel:.2e} (tolerance {GRAD_TOL:g}; at {agree.grad_where}), "
        f"whole gradient vector {agree.grad_vector_rel:.2e}"
    )

    shape = (model.cfg, args.batch, args.frames, args.text_tokens)
    gmacs = {name: count_gmacs(*shape, share) for name, share in MODES.items()} if args.macs else {}
    steps = {name: (lambda m=mod: train_step(m, batch, args.seed)) for name, mod in modules.items()}
    time_steps(steps, max(args.warmup - 1, 0), device)
    times = time_steps(steps, args.iters, device)

    wall = {name: statistics.median(w for w, _ in t) for name, t in times.items()}
    cpu = {name: statistics.median(c for _, c in t) for name, t in times.items()}
    full = "three full passes"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"\n{args.iters} timed steps per mode (interleaved); load average {load:.2f} at the end")
    header = ["mode", "step seconds (median)", "items/s", "speed-up", "CPU seconds (median)", "CPU speed-up"]
    header += ["GMACs per step"] if gmacs else []
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for name in wall:
        row = [name, f"{wall[name]:.3f}", f"{args.batch / wall[name]:.2f}", f"{wall[full] / wall[name]:.2f}x"]
        row += [f"{cpu[name]:.3f}", f"{cpu[full] / cpu[name]:.2f}x"]
        row += [f"{gmacs[name]:.4g} ({gmacs[full] / gmacs[name]:.2f}x)"] if gmacs else []
        print("| " + " | ".join(row) + " |")
    for name, t in times.items():
        print(f"{name}: wall " + ", ".join(f"{w:.2f}" for w, _ in t) + " s; CPU " + ", ".join(f"{c:.2f}" for _, c in t))
    if device.type == "cuda":
        print(f"peak memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB allocated")
    elif Path("/proc/self/status").exists():
        hwm = [ln for ln in Path("/proc/self/status").read_text().splitlines() if ln.startswith("VmHWM:")]
        print(f"peak memory: {int(hwm[0].split()[1]) / 2**20:.1f} GiB resident" if hwm else "")


if __name__ == "__main__":
    main()
