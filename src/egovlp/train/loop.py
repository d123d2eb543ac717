"""The one training loop every task runs on.

A task (``egovlp.tasks``) supplies the dataset, the collate function, a :class:`~egovlp.train.task.TaskModule`
whose ``forward(batch)`` returns named 0-d losses (``"loss"`` is optimised), and an ``evaluate`` hook. The loop adds
data-parallel training (DDP; gloo on CPU, NCCL on CUDA), AdamW with parameter groups, a per-step cosine schedule,
gradient accumulation, mixed precision on CUDA (fp32 on CPU), gradient clipping, periodic evaluation, atomic
checkpoints with exact resume, a progress bar and logs (text file, ``metrics.jsonl``, TensorBoard scalars, and
``loss_curve.png`` at the end). The output folder holds one run, locked while it trains; a resume must match the
config that ran (:mod:`egovlp.train.rundir`). :class:`Trainer` builds the parts (:class:`LoopParts`) and the
:class:`_Loop` advances a :class:`LoopState` (step, epoch, position in the epoch, skipped samples).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from egovlp.config import at_least, one_of, rule
from egovlp.errors import ConfigError
from egovlp.train.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from egovlp.train.datasets import TrainingDataset
from egovlp.train.distributed import DistInfo, all_reduce_sum, broadcast_object, gather_objects
from egovlp.train.optim import OptimConfig, build_optimizer, build_scheduler, freeze_towers
from egovlp.train.plots import plot_losses
from egovlp.train.rundir import RunLock, prepare_output_dir
from egovlp.train.sampler import ResumableDistributedSampler
from egovlp.train.task import Task, TaskModule
from egovlp.train.writer import MetricsWriter

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "fp16", "bf16")
#: ``train.num_threads: 0`` on the CPU gives a model with fewer parameters than this one thread: torch's default (one
#: per core) made a tiny run 3.6x slower on a busy 2-core machine, where the threads wait for each other.
TINY_MODEL_PARAMS = 5_000_000


def _is_device(spec: str) -> bool:
    head, _, index = spec.partition(":")
    return spec in ("auto", "cpu", "cuda") or (head == "cuda" and index.isdigit())


@dataclass(frozen=True)
class TrainConfig:
    output_dir: str = "runs/run"
    epochs: int = at_least(1, 1)
    max_steps: int = at_least(0, 0)  # optimiser steps; 0 = epochs x steps per epoch
    accum_steps: int = at_least(1, 1)  # micro-batches per optimiser step
    precision: str = one_of(PRECISIONS, "auto")  # auto (fp16 on CUDA as the release, fp32 on CPU) | fp32 | fp16 | bf16
    device: str = rule("auto", "must be auto, cpu, cuda or cuda:N", _is_device)
    # CPU threads of this process; 0 = auto: 1 for a tiny model (< 5 M parameters) on the CPU, else torch's default
    num_threads: int = at_least(0, 0)
    seed: int = 0
    log_every: int = at_least(1, 10)  # optimiser steps between log lines / scalars
    eval_every: int = at_least(0, 0)  # optimiser steps between evaluations; 0 = at the end only
    save_every: int = at_least(0, 0)  # optimiser steps between checkpoints; 0 = at the end only
    keep_last: int = at_least(0, 2)  # checkpoints kept (0 = all)
    resume: str = ""  # "" (fresh), "auto" (latest in output_dir, else fresh) or a checkpoint directory
    overwrite: bool = False  # clear another run's checkpoints / metrics / config in output_dir (else it is refused)
    progress: bool = True  # progress bar on rank 0
    tensorboard: bool = True
    plot: bool = True  # <output_dir>/loss_curve.png at the end (needs matplotlib)

    def check_config(self) -> Iterator[tuple[str, str]]:
        if self.overwrite and self.resume:
            yield "overwrite", f"clears the run that train.resume={self.resume!r} would continue: set one of them"


@dataclass
class FitResult:
    step: int
    history: list[dict[str, float]] = field(default_factory=list)  # one entry per optimiser step (rank 0)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    checkpoint: Path | None = None
    skipped_samples: int = 0  # over all ranks and, after a resume, the whole run


@dataclass
class LoopState:
    """Where the run is; saved in every checkpoint (``train_state.pt`` top-level keys)."""

    step: int = 0  # optimiser steps done
    epoch: int = 0
    micro_in_epoch: int = 0  # micro-batches of this epoch done (the sampler skips them on resume)
    skipped: int = 0  # replaced samples of this rank (rank 0 also carries the run's total before a resume)


@dataclass
class LoopParts:
    """What :meth:`Trainer.fit` built for the loop."""

    task: Task
    model: nn.Module  # the bare model (checkpoints, evaluation)
    module: TaskModule  # model + task heads
    ddp: nn.Module  # ``module``, wrapped in DistributedDataParallel when distributed
    dataset: TrainingDataset
    loader: DataLoader
    sampler: ResumableDistributedSampler
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    total: int  # optimiser steps of the whole run


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices): model initialisation and everything after is reproducible."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None = full fp32); a :class:`ConfigError` if unsupported."""
    if precision == "auto":
        return torch.float16 if device.type == "cuda" else None
    if precision == "fp32":
        return None
    if precision in ("fp16", "bf16"):
        if device.type == "cpu" and precision == "fp16":
            raise ConfigError(
                "config key 'train.precision' is fp16, which needs CUDA (fp16 autocast is not supported on the CPU); "
                "use train.precision=fp32 or bf16"
            )
        return torch.float16 if precision == "fp16" else torch.bfloat16
    raise ConfigError(f"config key 'train.precision' must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def choose_num_threads(num_threads: int, model: nn.Module, device: torch.device) -> int | None:
    """Threads for ``torch.set_num_threads`` (None = keep torch's default); see :data:`TINY_MODEL_PARAMS`."""
    if num_threads > 0:
        return num_threads
    if device.type == "cpu" and sum(p.numel() for p in model.parameters()) < TINY_MODEL_PARAMS:
        return 1
    return None


class Trainer:
    """Runs a task's training to ``max_steps`` with evaluation, checkpoints and exact resume."""

    def __init__(self, cfg: TrainConfig, optim: OptimConfig, dist: DistInfo, config_yaml: str | None = None) -> None:
        self.cfg, self.optim_cfg, self.dist = cfg, optim, dist
        self.out = Path(cfg.output_dir)
        self.config_yaml = config_yaml  # what runs; compared with a resumed run's config.yaml
        self.amp_dtype = autocast_dtype(cfg.precision, dist.device)

    # ------------------------------------------------------------------------------------------------ set-up
    def _loader(self, task: Task, dataset: TrainingDataset, sampler: ResumableDistributedSampler) -> DataLoader:
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
        return path if path.exists() else None

    def autocast(self) -> AbstractContextManager:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.dist.device.type, dtype=self.amp_dtype)

    def _prepare_output(self, resume: Path | None) -> RunLock | None:
        """Rank 0 checks and locks the output folder (:mod:`egovlp.train.rundir`); every rank gets its verdict."""
        lock, error = None, None
        if self.dist.is_main:
            try:
                lock = prepare_output_dir(self.out, resume, self.cfg.resume, self.cfg.overwrite, self.config_yaml)
            except Exception as e:
                error = e
        verdict = broadcast_object(None if error is None else (type(error).__name__, str(error)))
        if error is not None:
            raise error
        if verdict is not None:  # rank > 0: rank 0 refused
            raise ConfigError(f"rank 0 refused the output folder: {verdict[1]}")  # type: ignore[index]
        return lock

    # -------------------------------------------------------------------------------------------------- fit
    def fit(self, task: Task, model: nn.Module) -> FitResult:
        """Train ``model`` on ``task``; returns the per-step loss history and evaluations (rank 0)."""
        threads = choose_num_threads(self.cfg.num_threads, model, self.dist.device)
        if threads is not None:
            torch.set_num_threads(threads)
        resume = self._resume_path()
        lock = self._prepare_output(resume)
        try:
            parts, state = self._build(task, model, resume)
            result = _Loop(self, parts, state).run()
        finally:
            if lock is not None:
                lock.release()
        if self.dist.is_main and self.cfg.plot:
            plot_losses(self.out / "metrics.jsonl", self.out / "loss_curve.png", f"{task.name}: training losses")
        return result

    def _build(self, task: Task, model: nn.Module, resume: Path | None) -> tuple[LoopParts, LoopState]:
        cfg, dist = self.cfg, self.dist
        torch.manual_seed(cfg.seed + dist.rank)  # dropout differs per rank; data order is seeded separately
        module = task.build_module(model).to(dist.device)
        dataset = task.train_dataset()
        sampler = ResumableDistributedSampler(len(dataset), dist.rank, dist.world_size, cfg.seed)
        loader = self._loader(task, dataset, sampler)
        micro_per_epoch = sampler.per_rank // task.batch_size
        steps_per_epoch = micro_per_epoch // cfg.accum_steps
        if steps_per_epoch == 0:
            raise ConfigError(
                f"an epoch of {sampler.per_rank} samples per rank gives no full optimiser step at batch size "
                f"{task.batch_size} x train.accum_steps={cfg.accum_steps}"
            )
        total = cfg.max_steps or cfg.epochs * steps_per_epoch
        if self.optim_cfg.freeze:
            frozen = freeze_towers(module, self.optim_cfg.freeze, module.is_new_parameter)
            log.info("frozen: %d tensors of the %s tower(s)", len(frozen), "+".join(self.optim_cfg.freeze))
        optimizer = build_optimizer(module, self.optim_cfg, module.is_new_parameter, module.no_weight_decay)
        scheduler = build_scheduler(optimizer, self.optim_cfg, total)
        scaler = torch.amp.GradScaler(dist.device.type, enabled=self.amp_dtype == torch.float16)
        state = LoopState()
        if resume is not None:
            saved = load_checkpoint(resume, model)
            module.load_extra_state_dict(saved.get("module_extra", {}))
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            scaler.load_state_dict(saved["scaler"])
            state = LoopState(**{f.name: int(saved[f.name]) for f in dataclasses.fields(LoopState)})
            if not dist.is_main:  # the saved count is the run's total (summed over ranks): rank 0 carries it
                state.skipped = 0
            if len(saved["rng"]) != dist.world_size:
                log.warning(
                    "checkpoint from %d ranks resumed on %d: random streams restart", len(saved["rng"]), dist.world_size
                )
            else:  # every rank continues its own random streams (dropout, masking, negative sampling)
                task.load_state_dict(saved["task"][dist.rank])
                set_rng_state(saved["rng"][dist.rank])
            log.info("resumed from %s at step %d (epoch %d)", resume, state.step, state.epoch)
        ddp: nn.Module = module
        if dist.distributed:
            ids = [dist.device.index] if dist.device.type == "cuda" else None
            ddp = DistributedDataParallel(module, device_ids=ids, find_unused_parameters=module.has_unused_parameters)
        log.info(
            "training %s: %d steps (%d per epoch), batch %d x %d ranks x %d accumulation, %s on %s, %d threads",
            task.name, total, steps_per_epoch, task.batch_size, dist.world_size, cfg.accum_steps,
            self.amp_dtype or "fp32", dist.device, torch.get_num_threads(),
        )  # fmt: skip
        parts = LoopParts(task, model, module, ddp, dataset, loader, sampler, optimizer, scheduler, scaler, total)
        return parts, state


class _Loop:
    """One ``fit`` call's loop over :class:`LoopParts`, advancing a :class:`LoopState`."""

    def __init__(self, trainer: Trainer, parts: LoopParts, state: LoopState) -> None:
        self.t, self.p, self.state = trainer, parts, state
        self.cfg, self.dist = trainer.cfg, trainer.dist
        self.result = FitResult(step=state.step)
        self.writer = MetricsWriter(trainer.out, self.dist.is_main, self.cfg.tensorboard, start_step=state.step)
        self.window: list[dict[str, float]] = []
        self.items, self.tick = 0, time.perf_counter()

    def run(self) -> FitResult:
        bar = None
        if self.dist.is_main and self.cfg.progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=self.p.total, initial=self.state.step, desc=self.p.task.name, dynamic_ncols=True)
        try:
            while self.state.step < self.p.total:
                self._epoch(bar)
            if bar is not None:
                bar.close()
                bar = None
            # save first: a failing evaluation must not lose the trained steps
            if self.cfg.save_every == 0 or self.state.step % self.cfg.save_every:
                self._save()
            if self.cfg.eval_every == 0 or self.state.step % self.cfg.eval_every:
                self._evaluate()
        finally:
            if bar is not None:
                bar.close()
            self.writer.close()
        self.result.step = self.state.step
        self.result.skipped_samples = self._total_skipped()
        if self.result.skipped_samples and self.dist.is_main:
            log.warning(
                "%d samples were skipped (unreadable) over %d rank(s); see the log for each one",
                self.result.skipped_samples, self.dist.world_size,
            )  # fmt: skip
        return self.result

    def _total_skipped(self) -> int:
        """Replaced samples of the whole run, summed over ranks (a collective: every rank calls it)."""
        local = torch.tensor([self.state.skipped], dtype=torch.float64, device=self.dist.device)
        return int(all_reduce_sum(local).item())

    def _epoch(self, bar: Any) -> None:
        st, p = self.state, self.p
        p.dataset.set_epoch(st.epoch)
        p.sampler.set_epoch(st.epoch, start=st.micro_in_epoch * p.task.batch_size)
        accum = self.cfg.accum_steps
        losses: list[dict[str, float]] = []
        for batch in p.loader:
            st.micro_in_epoch += 1
            st.skipped += int(batch.pop("num_skipped", 0) if isinstance(batch, dict) else 0)
            losses.append(self._micro_step(batch, last=len(losses) + 1 == accum))
            if len(losses) == accum:
                self._optimizer_step(losses, bar)
                losses = []
                if st.step >= p.total:
                    return
        st.epoch += 1
        st.micro_in_epoch = 0

    def _micro_step(self, batch: dict[str, Any], last: bool) -> dict[str, float]:
        p = self.p
        batch = p.task.to_device(batch, self.dist.device)
        sync = p.ddp.no_sync() if (self.dist.distributed and not last) else nullcontext()  # type: ignore[operator]
        with sync:
            with self.t.autocast():
                out = p.ddp(batch)
            p.scaler.scale(out["loss"] / self.cfg.accum_steps).backward()
        self.items += p.task.batch_items(batch)
        return {k: float(v.detach()) for k, v in out.items()}

    def _optimizer_step(self, losses: list[dict[str, float]], bar: Any) -> None:
        p = self.p
        if self.t.optim_cfg.grad_clip > 0:
            p.scaler.unscale_(p.optimizer)
            torch.nn.utils.clip_grad_norm_(p.module.parameters(), self.t.optim_cfg.grad_clip)
        p.scaler.step(p.optimizer)
        p.scaler.update()
        p.scheduler.step()
        p.optimizer.zero_grad(set_to_none=True)
        self.state.step += 1
        step = self.state.step
        mean = {k: sum(d[k] for d in losses) / len(losses) for k in losses[0]}
        mean["lr"] = p.optimizer.param_groups[0]["lr"]
        self.result.history.append({"step": step, **mean})
        self.window.append(mean)
        if bar is not None:
            bar.update(1)
        if step % self.cfg.log_every == 0 or step == p.total:
            self._log(bar)
        if self.cfg.save_every and step % self.cfg.save_every == 0:
            self._save()  # before the evaluation, which may fail (a bad validation file) or take long
        if self.cfg.eval_every and step % self.cfg.eval_every == 0:
            self._evaluate()

    def _log(self, bar: Any) -> None:
        keys = list(self.window[0])
        # on the run's device: NCCL cannot reduce CPU tensors. One collective: the window's means and the skip count
        local = torch.tensor([[d[k] for k in keys] for d in self.window], dtype=torch.float64, device=self.dist.device)
        local = torch.cat([local.mean(0), local.new_tensor([self.state.skipped])])
        reduced = all_reduce_sum(local)
        values = (reduced[:-1] / self.dist.world_size).tolist()  # mean over ranks
        skipped = int(reduced[-1].item())  # sum over ranks
        elapsed = time.perf_counter() - self.tick
        rate = self.items * self.dist.world_size / max(elapsed, 1e-9)
        scalars = {**dict(zip(keys, values)), "items_per_s": rate}
        if skipped:
            scalars["skipped"] = skipped
        step = self.state.step
        self._log_line(step, scalars, bar)
        self.writer.write("train", step, scalars)
        self.window, self.items, self.tick = [], 0, time.perf_counter()

    def _log_line(self, step: int, scalars: dict[str, float], bar: Any) -> None:
        text = " ".join(f"{k}={v:.4g}" for k, v in scalars.items() if k != "lr")
        if bar is not None:
            bar.set_postfix_str(text[:120])
        log.info("step %d/%d %s lr=%.3g", step, self.p.total, text, scalars.get("lr", float("nan")))

    def _evaluate(self) -> None:
        """Evaluate without touching the training's random streams (a DataLoader draws its workers' seeds from
        torch's), so that a run resumed from a checkpoint saved before this evaluation continues exactly."""
        model = self.p.model
        streams = rng_state()
        model.eval()
        try:
            with torch.no_grad():
                metrics = self.p.task.evaluate(model, self.dist) or {}
        finally:
            model.train()
            set_rng_state(streams)
        if self.dist.is_main and metrics:
            step = self.state.step
            self.result.evaluations.append({"step": step, **metrics})
            self.writer.write("eval", step, {k: v for k, v in metrics.items() if isinstance(v, (int, float))})
            log.info(
                "eval at step %d: %s",
                step,
                " ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, (int, float))),
            )

    def _save(self) -> None:
        p = self.p
        rngs = gather_objects(rng_state())  # collective: every rank's random streams
        task_states = gather_objects(p.task.state_dict())
        skipped = self._total_skipped()  # collective: the run's total is saved, rank 0 carries it on resume
        if not self.dist.is_main:
            return
        state = {
            **dataclasses.asdict(self.state),
            "skipped": skipped,
            "optimizer": p.optimizer.state_dict(),
            "scheduler": p.scheduler.state_dict(),
            "scaler": p.scaler.state_dict(),
            "task": task_states,
            "rng": rngs,
            "module_extra": p.module.extra_state_dict(),
        }
        self.result.checkpoint = save_checkpoint(
            self.t.out / "checkpoints", self.state.step, p.model, state, self.cfg.keep_last
        )
