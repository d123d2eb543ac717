"""Drawing :class:`~egovlp.viz.attention.AttentionMaps` as one PNG grid: a row per word (and the sentence), a column
per frame, each cell the frame with its patch heat map over it. matplotlib (the ``viz`` extra) is imported here
only when drawing; the Agg canvas is used directly (no pyplot, no global backend state)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

from egovlp.errors import ConfigError
from egovlp.viz.attention import AttentionMaps

__all__ = ["attention_png", "draw_attention"]


def _matplotlib():
    try:
        import matplotlib  # noqa: F401  (first: a cached submodule import would not notice it is missing)
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError('drawing attention maps needs matplotlib: pip install "egovlp[viz]"') from None
    return Figure, FigureCanvasAgg


def draw_attention(maps: AttentionMaps, out: str | Path | BinaryIO, title: str = "", cell_inches: float = 1.6):
    """Write the grid to ``out`` (a path, or a binary file object) as PNG.

    Each row is scaled to its own maximum over all frames, so the frames of one word compare with each other; the
    label gives the share of attention that went to the video CLS token (not drawn).
    """
    figure, canvas = _matplotlib()
    rows, num_frames = maps.maps.shape[:2]
    fig = figure(figsize=(cell_inches * num_frames + 1.2, cell_inches * rows + (0.4 if title else 0.1)))
    canvas(fig)
    axes = fig.subplots(rows, num_frames, squeeze=False)
    size = maps.frames.shape[1]
    for r in range(rows):
        vmax = float(maps.maps[r].max()) or 1.0
        for f in range(num_frames):
            ax = axes[r][f]
            ax.imshow(maps.frames[f], extent=(0, size, size, 0))
            ax.imshow(maps.maps[r, f], cmap="jet", alpha=0.45, vmin=0.0, vmax=vmax, extent=(0, size, size, 0))
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {f + 1}", fontsize=8)
        axes[r][0].set_ylabel(f"{maps.labels[r]}\nCLS {maps.cls_share[r]:.0%}", fontsize=8, rotation=0, ha="right")
    if title:
        fig.suptitle(title, fontsize=9)
    layers = ", ".join(map(str, maps.layers))
    fig.text(0.99, 0.005, f"text layers {layers}, mean over heads", ha="right", fontsize=6)
    fig.tight_layout()
    if isinstance(out, (str, Path)):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    return out


def attention_png(maps: AttentionMaps, title: str = "") -> bytes:
    """The grid as PNG bytes (what the web page's attention endpoint returns)."""
    buffer = io.BytesIO()
    draw_attention(maps, buffer, title)
    return buffer.getvalue()
