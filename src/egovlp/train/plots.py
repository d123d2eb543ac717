"""The loss curve of a run (``<output_dir>/loss_curve.png``) from its ``metrics.jsonl``; matplotlib is optional."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

#: Scalars of the ``train`` rows that are not losses.
NOT_LOSSES = frozenset({"kind", "step", "lr", "items_per_s", "skipped"})


def train_rows(metrics_jsonl: Path) -> list[dict]:
    """The ``train`` rows of ``metrics.jsonl`` (a torn last line, from a killed run, is ignored)."""
    rows = []
    for line in metrics_jsonl.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and record.get("kind") == "train":
            rows.append(record)
    return rows


def plot_losses(
    metrics_jsonl: Path, png: Path, title: str = "training losses", keys: Sequence[str] | None = None
) -> Path | None:
    """Draw the loss terms (``keys``, default every loss in the rows) against the optimiser step into ``png``.

    Returns ``png``, or None (with a log line) when matplotlib is not installed or there is nothing to draw.
    """
    try:
        import matplotlib  # noqa: F401  (first: a cached submodule import would not notice it is missing)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        log.warning('matplotlib is not installed, so no loss curve was drawn (pip install "egovlp[viz]")')
        return None
    rows = train_rows(Path(metrics_jsonl)) if Path(metrics_jsonl).is_file() else []
    if keys is None:
        keys = [k for k in (rows[0] if rows else {}) if k not in NOT_LOSSES]
    series = {k: [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))] for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        log.info("no training losses in %s yet, so no loss curve", metrics_jsonl)
        return None
    fig = Figure(figsize=(7, 4))  # no pyplot: no global backend or figure state
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for key, points in series.items():
        ax.plot([s for s, _ in points], [v for _, v in points], label=key)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=100)
    log.info("loss curve: %s", png)
    return png
