"""The downstream-task registry: every task describes itself once, and the command line is built from it.

A task module calls :func:`register_task` at import time with a :class:`TaskSpec`: its name, a one-line
description, the config schema of ``egovlp evaluate NAME`` (with the keys that must name files), how to build its
evaluator, its result table and, if it can be fine-tuned, the schema and :class:`~egovlp.train.task.Task` of
``egovlp finetune NAME``. ``egovlp evaluate`` / ``egovlp finetune`` and their ``--help`` hold no per-task code.

The built-in tasks are imported on first use (:data:`BUILTIN_TASKS`); other packages add theirs through the
``egovlp.tasks`` entry-point group (``name = "package.module"``, a module that calls :func:`register_task`), and a
test or notebook may register a task directly.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Protocol

from torch import nn

from egovlp.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "BUILTIN_TASKS",
    "Evaluator",
    "TaskSpec",
    "config_value",
    "get_task",
    "list_tasks",
    "register_task",
    "resolve_task",
]

BUILTIN_TASKS = (
    "egovlp.tasks.egomcq",
    "egovlp.tasks.epic_mir",
    "egovlp.tasks.charades",
    "egovlp.tasks.egotaskqa",
    "egovlp.tasks.qfvs",
    "egovlp.tasks.mq",
    "egovlp.tasks.nlq",
    "egovlp.tasks.video_mc",
    "egovlp.tasks.epic_mir_vtm",
    "egovlp.tasks.charades_vtm",
)


class Evaluator(Protocol):
    """Built once per run (data loaded once); ``evaluator(model)`` gives the metrics on rank 0, ``{}`` elsewhere."""

    def __call__(self, model: nn.Module) -> dict[str, Any]: ...


@dataclass(frozen=True)
class TaskSpec:
    """What the command line and the training loop need to know about a downstream task.

    Attributes:
        name: the ``TASK`` of ``egovlp evaluate TASK`` (snake_case; ``-`` is accepted for ``_`` on the command line).
        description: one line for ``--help``.
        eval_schema: frozen config dataclass of ``egovlp evaluate NAME``; it must hold a ``device`` field and the
            frame count at ``frames_key``.
        make_evaluator: ``(cfg, tokenizer, model, dist, progress) -> Evaluator``.
        format_table: ``metrics -> str``, the table printed after an evaluation (percent).
        required: config keys that must be set (paths), e.g. ``("data.metadata", "data.video_root")``.
        tokenizer_key: the config key naming the tokenizer folder.
        frames_key: the config key of the command's one frame count (the model runs at it).
        finetune_schema / make_task / finetune_required: ``egovlp finetune NAME`` (None: not fine-tunable);
            ``make_task(cfg, tokenizer, dist) -> Task``.
    """

    name: str
    description: str
    eval_schema: type
    make_evaluator: Callable[..., Evaluator]
    format_table: Callable[[dict[str, Any]], str]
    required: tuple[str, ...] = ()
    tokenizer_key: str = "data.tokenizer"
    frames_key: str = "data.num_frames"
    finetune_schema: type | None = None
    make_task: Callable[..., Any] | None = None
    finetune_required: tuple[str, ...] = ()

    @property
    def can_finetune(self) -> bool:
        return self.finetune_schema is not None and self.make_task is not None


_TASKS: dict[str, TaskSpec] = {}
_loaded = False


def register_task(spec: TaskSpec) -> TaskSpec:
    """Add ``spec`` to the registry (a second registration of the same name replaces the first)."""
    if spec.name in _TASKS and _TASKS[spec.name] is not spec:
        log.debug("task %r registered again; the new spec replaces the old one", spec.name)
    _TASKS[spec.name] = spec
    return spec


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_TASKS:
        importlib.import_module(module)
    for ep in entry_points(group="egovlp.tasks"):
        try:
            importlib.import_module(ep.value)
        except Exception as e:  # a broken plug-in must not take the built-in tasks down
            log.warning("cannot load task plug-in %s (%s): %s", ep.name, ep.value, e)


def list_tasks(finetune: bool = False) -> dict[str, TaskSpec]:
    """Registered tasks by name (only fine-tunable ones with ``finetune``)."""
    _load_builtin()
    return {k: v for k, v in sorted(_TASKS.items()) if v.can_finetune or not finetune}


def get_task(name: str) -> TaskSpec:
    """The task ``name`` (``-`` and ``_`` alike, any case); ConfigError naming the closest tasks otherwise."""
    return list_tasks()[resolve_task(name)]


def resolve_task(name: str, finetune: bool = False) -> str:
    """The registered name for ``name``, or ConfigError with the known and the closest names."""
    known = list_tasks(finetune)
    task = name.replace("-", "_").lower()
    if task in known:
        return task
    close = difflib.get_close_matches(task, list(known), n=2, cutoff=0.4)
    hint = f"; did you mean {' or '.join(close)}?" if close else ""
    what = "fine-tunable task" if finetune else "task"
    raise ConfigError(f"unknown {what} {name!r} (known: {', '.join(known)}){hint}")


def config_value(cfg: Any, key: str) -> Any:
    """The value at dotted ``key`` of a config dataclass."""
    value = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value
