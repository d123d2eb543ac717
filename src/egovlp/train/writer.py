"""``metrics.jsonl`` and TensorBoard scalars of a run (rank 0), one row per step also across resumes.

A resumed run continues from its checkpoint's step ``N``; the rows the interrupted run wrote after ``N`` are
dropped (``metrics.jsonl`` is rewritten atomically with the rows up to ``N``; TensorBoard events from step
``N + 1`` on are purged), so the resumed steps are not drawn twice.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from egovlp.utils.files import atomic_write

log = logging.getLogger(__name__)


def truncate_metrics(path: Path, step: int) -> int:
    """Keep the rows of ``path`` with ``step <= step`` (and drop a torn last line); returns how many were dropped."""
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    kept = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and int(record.get("step", 0)) <= step:
            kept.append(line)
    dropped = len(lines) - len(kept)
    if dropped:
        atomic_write(path, lambda tmp: tmp.write_text("".join(f"{line}\n" for line in kept)))
        log.info("%s: dropped %d rows after step %d (written by the interrupted run)", path, dropped, step)
    return dropped


class MetricsWriter:
    """Appends ``{"kind", "step", **values}`` rows to ``metrics.jsonl`` and scalars to TensorBoard (if enabled)."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool, start_step: int = 0) -> None:
        self.enabled = enabled
        self.path = out / "metrics.jsonl"
        self.jsonl = None
        self.tb: Any = None
        if not enabled:
            return
        truncate_metrics(self.path, start_step)
        self.jsonl = self.path.open("a")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                log.warning('tensorboard is not installed (pip install "egovlp[viz]"); scalars in metrics.jsonl only')
            else:
                tb_dir = out / "tensorboard"
                purge = start_step + 1 if tb_dir.is_dir() else None  # events after the resumed step are purged
                self.tb = SummaryWriter(str(tb_dir), purge_step=purge)

    def write(self, kind: str, step: int, values: dict[str, float]) -> None:
        if self.jsonl is None:
            return
        self.jsonl.write(json.dumps({"kind": kind, "step": step, **values}) + "\n")
        self.jsonl.flush()
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{kind}/{k}", v, step)

    def close(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
            self.jsonl = None
        if self.tb is not None:
            self.tb.close()
            self.tb = None
