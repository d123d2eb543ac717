"""AdamW with the release's parameter groups and a per-step cosine schedule with linear warm-up."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from egovlp.config import at_least, greater_than, rule
from egovlp.errors import ConfigError


def _in_unit_interval(v: float) -> bool:
    return 0.0 <= v <= 1.0


def _betas_ok(v: tuple[float, float]) -> bool:
    return len(v) == 2 and all(0.0 <= b < 1.0 for b in v)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = greater_than(0, 3e-5)
    new_param_lr_mult: float = greater_than(0, 4.0)  # x4 for projectors, heads and all fusion parameters (release)
    weight_decay: float = at_least(0, 0.01)  # none on biases, norms, gates and token embeddings
    betas: tuple[float, float] = rule((0.9, 0.98), "must be two numbers in [0, 1)", _betas_ok)
    eps: float = greater_than(0, 1e-8)
    warmup_fraction: float = rule(0.1, "must be in [0, 1]", _in_unit_interval)  # of the total steps, linear from 0
    min_lr_ratio: float = rule(0.0, "must be in [0, 1]", _in_unit_interval)  # cosine floor as a fraction of the peak
    grad_clip: float = at_least(0, 0.0)  # max global grad norm; 0 = off
    # Towers whose own parameters stay fixed ("video", "text"); their fusion modules still train (e.g. a locked,
    # already pre-trained text tower).
    freeze: tuple[str, ...] = rule((), "must name towers among text, video", lambda v: set(v) <= {"text", "video"})


def param_groups(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    new_param_lr_mult: float = 1.0,
    is_new: Callable[[str], bool] | None = None,
    no_decay: Callable[[str, torch.Tensor], bool] | None = None,
) -> list[dict]:
    """Up to four AdamW groups: {pretrained, new} x {decay, no decay}; frozen parameters are left out.

    ``is_new(name)`` marks parameters that get ``lr * new_param_lr_mult``; ``no_decay(name, p)`` those without weight
    decay (default: 1-D tensors such as biases and norm weights).
    """
    is_new = is_new or (lambda name: False)
    no_decay = no_decay or (lambda name, p: p.ndim <= 1)
    groups: dict[tuple[bool, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        new, nd = is_new(name), no_decay(name, p)
        group = groups.setdefault(
            (new, nd),
            {
                "name": f"{'new' if new else 'pretrained'}/{'no_decay' if nd else 'decay'}",
                "params": [],
                "param_names": [],
                "lr": lr * (new_param_lr_mult if new else 1.0),
                "weight_decay": 0.0 if nd else weight_decay,
            },
        )
        group["params"].append(p)
        group["param_names"].append(name)
    return [groups[k] for k in sorted(groups)]


TOWERS = {"video": "video_model.", "text": "text_model."}


def freeze_towers(
    module: nn.Module, towers: tuple[str, ...] | list[str], is_new: Callable[[str], bool] | None = None
) -> list[str]:
    """Set ``requires_grad=False`` on the own parameters of the named towers; returns the frozen names.

    A parameter belongs to tower ``t`` when its name contains ``<t>_model.`` (``video_model.``, ``text_model.``, at
    any nesting, e.g. ``model.text_model.`` inside a task module). Parameters that ``is_new(name)`` marks as new (the
    fusion modules inside the towers; pass the module's ``is_new_parameter`` hook) are left trainable.
    """
    unknown = sorted(set(towers) - set(TOWERS))
    if unknown:
        raise ConfigError(f"optim.freeze: unknown tower(s) {unknown}; choose from {sorted(TOWERS)}")
    is_new = is_new or (lambda name: False)
    prefixes = [TOWERS[t] for t in towers]
    frozen = []
    for name, p in module.named_parameters():
        if any(f".{pre}" in f".{name}" for pre in prefixes) and not is_new(name):
            p.requires_grad_(False)
            frozen.append(name)
    if towers and not frozen:
        raise ConfigError(f"optim.freeze={list(towers)} matched no parameter of {type(module).__name__}")
    return frozen


def build_optimizer(
    model: nn.Module,
    cfg: OptimConfig,
    is_new: Callable[[str], bool] | None = None,
    no_decay: Callable[[str, torch.Tensor], bool] | None = None,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` with the hooks ``is_new`` / ``no_decay`` (e.g. a
    :class:`~egovlp.train.task.TaskModule`'s ``is_new_parameter`` / ``no_weight_decay``)."""
    groups = param_groups(model, cfg.lr, cfg.weight_decay, cfg.new_param_lr_mult, is_new, no_decay)
    for g in groups:
        g.pop("param_names")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.betas[0], cfg.betas[1]), eps=cfg.eps)


def cosine_with_warmup(step: int, total_steps: int, warmup_steps: int, min_ratio: float = 0.0) -> float:
    """LR multiplier: linear 0 -> 1 over ``warmup_steps``, then cosine 1 -> ``min_ratio`` at ``total_steps``."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step :func:`cosine_with_warmup` schedule (``scheduler.step()`` after every optimiser step)."""
    warmup = round(cfg.warmup_fraction * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: cosine_with_warmup(step, total_steps, warmup, cfg.min_lr_ratio)
    )
