"""The one training loop every task runs on.

A task (``egovlp.tasks``) supplies the dataset, the collate function, a :class:`~egovlp.tasks.base.TaskModule`
whose ``forward(batch)`` returns named 0-d losses (``"loss"`` is optimised), and an ``evaluate`` hook. The loop adds
data-parallel training (DDP; gloo on CPU, NCCL on CUDA), AdamW with parameter groups, a per-step cosine schedule,
gradient accumulation, mixed precision on CUDA (fp32 on CPU), gradient clipping, periodic evaluation, atomic
checkpoints with exact resume, a progress bar and logs (text file, ``metrics.jsonl``, TensorBoard scalars).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from egovlp.train.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from egovlp.train.distributed import DistInfo, all_reduce_sum, gather_objects
from egovlp.train.optim import OptimConfig, build_optimizer, build_scheduler, freeze_towers
from egovlp.train.sampler import ResumableDistributedSampler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    output_dir: str = "runs/run"
    epochs: int = 1
    max_steps: int = 0  # optimiser steps; 0 = epochs x steps per epoch
    accum_steps: int = 1  # micro-batches per optimiser step
    precision: str = "auto"  # auto (fp16 on CUDA as the release, fp32 on CPU) | fp32 | fp16 | bf16
    device: str = "auto"
    num_threads: int = 0  # CPU threads of this process (0 = torch's default); 1 avoids oversubscribing small CPUs
    seed: int = 0
    log_every: int = 10  # optimiser steps between log lines / scalars
    eval_every: int = 0  # optimiser steps between evaluations; 0 = at the end only
    save_every: int = 0  # optimiser steps between checkpoints; 0 = at the end only
    keep_last: int = 2  # checkpoints kept
    resume: str = ""  # "" (fresh), "auto" (latest in output_dir, else fresh) or a checkpoint directory
    progress: bool = True  # progress bar on rank 0
    tensorboard: bool = True


@dataclass
class FitResult:
    step: int
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per optimiser step (rank 0)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None
    skipped_samples: int = 0


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices): model initialisation and everything after is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None = full fp32)."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    if precision == "fp32":
        return None
    if precision in ("fp16", "bf16"):
        if device.type == "cpu" and precision == "fp16":
            raise ValueError("fp16 autocast is not supported on the CPU; use precision=fp32 or bf16")
        return torch.float16 if precision == "fp16" else torch.bfloat16
    raise ValueError(f"train.precision must be auto, fp32, fp16 or bf16; got {precision!r}")


class _Writer:
    """``metrics.jsonl`` + TensorBoard scalars, rank 0 only."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.jsonl = (out / "metrics.jsonl").open("a") if enabled else None
        self.tb = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:  # tensorboard is optional
                log.warning("tensorboard is not installed; scalars go to metrics.jsonl only")

    def write(self, kind: str, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.jsonl.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self.jsonl:
            self.jsonl.close()
        if self.tb is not None:
            self.tb.close()


class Trainer:
    """Runs a task's training to ``max_steps`` with evaluation, checkpoints and exact resume."""

    def __init__(self, cfg: TrainConfig, optim: OptimConfig, dist: DistInfo, config_yaml: str | None = None) -> None:
        self.cfg, self.optim_cfg, self.dist = cfg, optim, dist
        self.out = Path(cfg.output_dir)
        self.config_yaml = config_yaml
        self.amp_dtype = autocast_dtype(cfg.precision, dist.device)

    # ------------------------------------------------------------------------------------------------ set-up
    def _loader(self, task, dataset, sampler) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=task.batch_size,
            sampler=sampler,
            num_workers=task.num_workers,
            collate_fn=task.collate_fn(),
            drop_last=True,
            pin_memory=self.dist.device.type == "cuda",
            generator=torch.Generator().manual_seed(self.cfg.seed),
        )

    def _resume_path(self) -> Path | None:
        if not self.cfg.resume:
            return None
        if self.cfg.resume == "auto":
            return latest_checkpoint(self.out / "checkpoints")
        path = Path(self.cfg.resume)
        if path.is_dir() and (path / "latest").is_file():
            path = latest_checkpoint(path) or path
        return path

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.dist.device.type, dtype=self.amp_dtype)

    # -------------------------------------------------------------------------------------------------- fit
    def fit(self, task, model) -> FitResult:
        """Train ``model`` on ``task``; returns the per-step loss history and evaluations (rank 0)."""
        cfg, dist = self.cfg, self.dist
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        if dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.config_yaml is not None:
                (self.out / "config.yaml").write_text(self.config_yaml)
        torch.manual_seed(cfg.seed + dist.rank)  # dropout differs per rank; data order is seeded separately
        module = task.build_module(model).to(dist.device)
        dataset = task.train_dataset()
        sampler = ResumableDistributedSampler(len(dataset), dist.rank, dist.world_size, cfg.seed)
        loader = self._loader(task, dataset, sampler)
        micro_per_epoch = sampler.per_rank // task.batch_size
        steps_per_epoch = micro_per_epoch // cfg.accum_steps
        if steps_per_epoch == 0:
            raise ValueError(
                f"an epoch of {sampler.per_rank} samples per rank gives no full optimiser step at batch size "
                f"{task.batch_size} x {cfg.accum_steps} accumulation steps"
            )
        total = cfg.max_steps or cfg.epochs * steps_per_epoch
        if self.optim_cfg.freeze:
            frozen = freeze_towers(module, self.optim_cfg.freeze)
            log.info("frozen: %d tensors of the %s tower(s)", len(frozen), "+".join(self.optim_cfg.freeze))
        optimizer = build_optimizer(module, self.optim_cfg)
        scheduler = build_scheduler(optimizer, self.optim_cfg, total)
        scaler = torch.amp.GradScaler(dist.device.type, enabled=self.amp_dtype == torch.float16)
        state = {"step": 0, "epoch": 0, "micro_in_epoch": 0, "skipped": 0}
        resume = self._resume_path()
        if resume is not None:
            saved = load_checkpoint(resume, model)
            module.load_extra_state_dict(saved.get("module_extra", {}))
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            scaler.load_state_dict(saved["scaler"])
            state.update({k: saved[k] for k in state})
            if len(saved["rng"]) != dist.world_size:
                log.warning(
                    "checkpoint from %d ranks resumed on %d: random streams restart", len(saved["rng"]), dist.world_size
                )
            else:  # every rank continues its own random streams (dropout, masking, negative sampling)
                task.load_state_dict(saved["task"][dist.rank])
                set_rng_state(saved["rng"][dist.rank])
            log.info("resumed from %s at step %d (epoch %d)", resume, state["step"], state["epoch"])
        elif cfg.resume and cfg.resume != "auto":
            raise FileNotFoundError(f"no checkpoint to resume from at {cfg.resume}")
        ddp = module
        if dist.distributed:
            ids = [dist.device.index] if dist.device.type == "cuda" else None
            unused = bool(getattr(module, "has_unused_parameters", False))
            ddp = DistributedDataParallel(module, device_ids=ids, find_unused_parameters=unused)
        log.info(
            "training %s: %d steps (%d per epoch), batch %d x %d ranks x %d accumulation, %s on %s",
            task.name, total, steps_per_epoch, task.batch_size, dist.world_size, cfg.accum_steps,
            self.amp_dtype or "fp32", dist.device,
        )  # fmt: skip
        loop = _Loop(self, task, model, module, ddp, optimizer, scheduler, scaler, loader, sampler, state, total)
        return loop.run(dataset)


class _Loop:
    """The state of one ``fit`` call (kept apart so each method stays short)."""

    def __init__(self, trainer, task, model, module, ddp, optimizer, scheduler, scaler, loader, sampler, state, total):
        self.t, self.task, self.model, self.module, self.ddp = trainer, task, model, module, ddp
        self.optimizer, self.scheduler, self.scaler = optimizer, scheduler, scaler
        self.loader, self.sampler, self.state, self.total = loader, sampler, state, total
        self.cfg, self.dist = trainer.cfg, trainer.dist
        self.result = FitResult(step=state["step"])
        self.writer = _Writer(trainer.out, self.dist.is_main, self.cfg.tensorboard)
        self.window: list[dict[str, float]] = []
        self.items, self.tick = 0, time.perf_counter()

    def run(self, dataset) -> FitResult:
        bar = None
        if self.dist.is_main and self.cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.total, initial=self.state["step"], desc=self.task.name, dynamic_ncols=True)
        try:
            while self.state["step"] < self.total:
                self._epoch(dataset, bar)
            if bar is not None:
                bar.close()
                bar = None
            if self.cfg.eval_every == 0 or self.state["step"] % self.cfg.eval_every:
                self._evaluate()
            if self.cfg.save_every == 0 or self.state["step"] % self.cfg.save_every:
                self._save()
        finally:
            if bar is not None:
                bar.close()
            self.writer.close()
        self.result.step = self.state["step"]
        self.result.skipped_samples = self.state["skipped"]
        if self.state["skipped"]:
            log.warning("%d samples were skipped (unreadable); see the log for each one", self.state["skipped"])
        return self.result

    def _epoch(self, dataset, bar) -> None:
        st = self.state
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(st["epoch"])
        self.sampler.set_epoch(st["epoch"], start=st["micro_in_epoch"] * self.task.batch_size)
        accum, losses = self.cfg.accum_steps, []
        for batch in self.loader:
            st["micro_in_epoch"] += 1
            st["skipped"] += int(batch.pop("num_skipped", 0) if isinstance(batch, dict) else 0)
            losses.append(self._micro_step(batch, last=len(losses) + 1 == accum))
            if len(losses) == accum:
                self._optimizer_step(losses, bar)
                losses = []
                if st["step"] >= self.total:
                    return
        st["epoch"] += 1
        st["micro_in_epoch"] = 0

    def _micro_step(self, batch, last: bool) -> dict[str, float]:
        batch = self.task.to_device(batch, self.dist.device)
        sync = self.ddp.no_sync() if (self.dist.distributed and not last) else nullcontext()
        with sync:
            with self.t._autocast():
                out = self.ddp(batch)
            self.scaler.scale(out["loss"] / self.cfg.accum_steps).backward()
        self.items += self.task.batch_items(batch)
        return {k: float(v.detach()) for k, v in out.items()}

    def _optimizer_step(self, losses: list[dict[str, float]], bar) -> None:
        if self.t.optim_cfg.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.t.optim_cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.state["step"] += 1
        step = self.state["step"]
        mean = {k: sum(d[k] for d in losses) / len(losses) for k in losses[0]}
        mean["lr"] = self.optimizer.param_groups[0]["lr"]
        self.result.history.append({"step": step, **mean})
        self.window.append(mean)
        if bar is not None:
            bar.update(1)
        if step % self.cfg.log_every == 0 or step == self.total:
            self._log(bar)
        if self.cfg.eval_every and step % self.cfg.eval_every == 0:
            self._evaluate()
        if self.cfg.save_every and step % self.cfg.save_every == 0:
            self._save()

    def _log(self, bar) -> None:
        keys = list(self.window[0])
        # on the run's device: NCCL cannot reduce CPU tensors
        local = torch.tensor([[d[k] for k in keys] for d in self.window], dtype=torch.float64, device=self.dist.device)
        local = local.mean(0)
        values = (all_reduce_sum(local) / self.dist.world_size).tolist()  # mean over ranks
        elapsed = time.perf_counter() - self.tick
        rate = self.items * self.dist.world_size / max(elapsed, 1e-9)
        scalars = {**dict(zip(keys, values)), "items_per_s": rate}
        step = self.state["step"]
        self.t_log_line(step, scalars, bar)
        self.writer.write("train", step, scalars)
        self.window, self.items, self.tick = [], 0, time.perf_counter()

    def t_log_line(self, step: int, scalars: dict[str, float], bar) -> None:
        text = " ".join(f"{k}={v:.4g}" for k, v in scalars.items() if k != "lr")
        if bar is not None:
            bar.set_postfix_str(text[:120])
        log.info("step %d/%d %s lr=%.3g", step, self.total, text, scalars.get("lr", float("nan")))

    def _evaluate(self) -> None:
        self.model.eval()
        with torch.no_grad():
            metrics = self.task.evaluate(self.model, self.dist) or {}
        self.model.train()
        if self.dist.is_main and metrics:
            step = self.state["step"]
            self.result.evaluations.append({"step": step, **metrics})
            self.writer.write("eval", step, {k: v for k, v in metrics.items() if isinstance(v, (int, float))})
            log.info(
                "eval at step %d: %s",
                step,
                " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float))),
            )

    def _save(self) -> None:
        rngs = gather_objects(rng_state())  # collective: every rank's random streams
        task_states = gather_objects(self.task.state_dict())
        if not self.dist.is_main:
            return
        state = {
            **self.state,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "task": task_states,
            "rng": rngs,
            "module_extra": self.module.extra_state_dict(),
        }
        self.result.checkpoint = save_checkpoint(
            self.t.out / "checkpoints", self.state["step"], self.model, state, self.cfg.keep_last
        )
