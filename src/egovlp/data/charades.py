"""Charades-Ego annotations: first-person video CSVs, class names, multi-hot labels and zero-shot prompts.

Files (official release, REFERENCE §3):

- ``CharadesEgo_v1_{train,test}_only1st.csv``: one row per video, columns ``id, subject, scene, quality, relevance,
  verified, script, objects, descriptions, actions, length, ...``; ``actions`` is ``;``-separated ``cNNN start end``
  (seconds), possibly empty. First-person video ids end in ``EGO``. Only ``id`` and ``actions`` are required; the
  other columns are kept (in file order) so a written file reads back the same.
- ``Charades_v1_classes.txt``: ``c000 Holding some clothes`` per line (157 classes). The class names are the
  zero-shot text prompts, as in the official evaluation.

Videos: ``<root>/<id>.mp4``. Fine-tuning samples are the action segments (video, class, start, end), as in the
official ``metadata_train.csv`` that is derived from the same CSV.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from egovlp.data.epic_mir import read_csv_records
from egovlp.errors import DataError

__all__ = [
    "CHARADES_COLUMNS",
    "NUM_CLASSES",
    "CharadesAction",
    "CharadesEgoAnnotations",
    "CharadesVideo",
    "charades_video_path",
    "format_actions",
    "load_charades_ego",
    "multi_hot_labels",
    "parse_actions",
    "read_charades_classes",
    "read_charades_csv",
    "write_charades_classes",
    "write_charades_csv",
]

logger = logging.getLogger(__name__)

NUM_CLASSES = 157
CHARADES_COLUMNS = (
    "id", "subject", "scene", "quality", "relevance", "verified", "script", "objects", "descriptions", "actions",
    "length",
)  # fmt: skip
_CLASS_ID = re.compile(r"c(\d{3})")
_CLASS_LINE = re.compile(r"c(\d{3}) (\S.*)")


@dataclass(frozen=True)
class CharadesAction:
    """One labelled action: class index (``cNNN`` -> NNN) and its time span in seconds."""

    class_index: int
    start: float
    end: float

    @property
    def class_id(self) -> str:
        return f"c{self.class_index:03d}"


@dataclass(frozen=True)
class CharadesVideo:
    """One row of a Charades(-Ego) CSV. ``fields`` holds every column other than ``id``/``actions`` as written."""

    id: str
    actions: tuple[CharadesAction, ...]
    fields: tuple[tuple[str, str], ...] = ()

    @property
    def is_first_person(self) -> bool:
        return self.id.endswith("EGO")

    def field(self, name: str, default: str = "") -> str:
        return dict(self.fields).get(name, default)

    @property
    def script(self) -> str:
        return self.field("script")

    @property
    def length(self) -> float | None:
        """Video length in seconds from the ``length`` column (None when absent or empty)."""
        text = self.field("length").strip()
        return float(text) if text else None


@dataclass(frozen=True)
class CharadesEgoAnnotations:
    """Videos of a split and the class names (index = class id)."""

    videos: tuple[CharadesVideo, ...]
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def prompts(self) -> list[str]:
        """The zero-shot text of each class: its name, e.g. ``"Holding some clothes"``."""
        return list(self.class_names)

    def labels(self) -> np.ndarray:
        """``(num_videos, num_classes)`` uint8 multi-hot labels (a video without actions is all zeros)."""
        return multi_hot_labels(self.videos, len(self.class_names))

    def action_segments(self) -> list[tuple[int, CharadesAction]]:
        """``(video index, action)`` for every labelled action: the fine-tuning samples."""
        return [(i, a) for i, v in enumerate(self.videos) for a in v.actions]

    def video_path(self, root: str | Path, index: int) -> Path:
        return charades_video_path(root, self.videos[index])


def charades_video_path(root: str | Path, video: CharadesVideo) -> Path:
    """``<root>/<id>.mp4``."""
    return Path(root) / f"{video.id}.mp4"


def multi_hot_labels(videos: Sequence[CharadesVideo], num_classes: int = NUM_CLASSES) -> np.ndarray:
    """``(len(videos), num_classes)`` uint8 with ones at every class a video has an action of."""
    out = np.zeros((len(videos), num_classes), dtype=np.uint8)
    for i, video in enumerate(videos):
        out[i, [a.class_index for a in video.actions]] = 1
    return out


def parse_actions(text: str, num_classes: int = NUM_CLASSES) -> tuple[CharadesAction, ...]:
    """``"c092 11.90 21.20;c147 0.00 12.60"`` -> actions; ``""`` -> ``()``. Raises ValueError when malformed."""
    text = text.strip()
    if not text:
        return ()
    actions = []
    for entry in text.split(";"):
        parts = entry.split()
        if len(parts) != 3 or not _CLASS_ID.fullmatch(parts[0]):
            raise ValueError(f"expected 'cNNN start end', got {entry!r}")
        index, start, end = int(parts[0][1:]), float(parts[1]), float(parts[2])
        if index >= num_classes:
            raise ValueError(f"class {parts[0]} is outside the {num_classes} classes")
        if not (math.isfinite(start) and math.isfinite(end)):
            raise ValueError(f"non-finite time in {entry!r}")
        actions.append(CharadesAction(index, start, end))
    return tuple(actions)


def format_actions(actions: Sequence[CharadesAction]) -> str:
    """Actions -> ``"c092 11.90 21.20;c147 0.00 12.60"`` (inverse of :func:`parse_actions`)."""
    return ";".join(f"{a.class_id} {_format_seconds(a.start)} {_format_seconds(a.end)}" for a in actions)


def read_charades_csv(
    path: str | Path, num_classes: int = NUM_CLASSES, first_person_only: bool = False
) -> tuple[CharadesVideo, ...]:
    """Read a Charades(-Ego) video CSV. Raises DataError naming file, line and column.

    Args:
        num_classes: class ids must be below it.
        first_person_only: keep only ids ending in ``EGO`` (the count dropped is logged).
    """
    path = Path(path)
    videos: list[CharadesVideo] = []
    seen: dict[str, int] = {}  # video id -> line
    dropped = 0
    for line, rec in read_csv_records(path, ("id", "actions")):
        vid = rec["id"].strip()
        if not vid:
            raise DataError(f"{path}, line {line}, column 'id': empty video id")
        if vid in seen:
            raise DataError(f"{path}, line {line}, column 'id': {vid!r} repeats line {seen[vid]}")
        seen[vid] = line
        try:
            actions = parse_actions(rec["actions"], num_classes)
        except ValueError as exc:
            raise DataError(f"{path}, line {line}, column 'actions': {exc}") from None
        length = rec.get("length", "").strip()
        if length and not _is_float(length):
            raise DataError(f"{path}, line {line}, column 'length': expected seconds, got {length!r}")
        if first_person_only and not vid.endswith("EGO"):
            dropped += 1
            continue
        videos.append(CharadesVideo(vid, actions, tuple((k, v) for k, v in rec.items() if k not in ("id", "actions"))))
    if dropped:
        logger.info("%s: dropped %d third-person video(s) (ids not ending in EGO)", path, dropped)
    return tuple(videos)


def _is_float(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def read_charades_classes(path: str | Path) -> tuple[str, ...]:
    """Class names from ``Charades_v1_classes.txt`` (``cNNN name`` per line, ids 0, 1, 2, ... in order)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: class list not found")
    names: list[str] = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        match = _CLASS_LINE.fullmatch(line.strip())
        if match is None:
            raise DataError(f"{path}, line {line_no}: expected 'cNNN class name', got {line!r}")
        if int(match.group(1)) != len(names):
            raise DataError(f"{path}, line {line_no}: expected class c{len(names):03d}, got c{match.group(1)}")
        names.append(match.group(2).strip())
    return tuple(names)


def load_charades_ego(
    annotation_dir: str | Path,
    split: Literal["train", "test"] = "test",
    classes_file: str | Path | None = None,
    first_person_only: bool = True,
) -> CharadesEgoAnnotations:
    """Read ``CharadesEgo_v1_{split}_only1st.csv`` and the class list (default ``Charades_v1_classes.txt``)."""
    root = Path(annotation_dir)
    names = read_charades_classes(classes_file or root / "Charades_v1_classes.txt")
    videos = read_charades_csv(root / f"CharadesEgo_v1_{split}_only1st.csv", len(names), first_person_only)
    logger.info("Charades-Ego %s: %d videos, %d classes", split, len(videos), len(names))
    return CharadesEgoAnnotations(videos, names)


def _format_seconds(value: float) -> str:
    """Two decimals like the official files when that is exact, else the shortest exact repr."""
    text = f"{value:.2f}"
    return text if float(text) == value else repr(float(value))


def write_charades_csv(path: str | Path, videos: Sequence[CharadesVideo]) -> None:
    """Write videos in the Charades CSV format: :data:`CHARADES_COLUMNS` first, then any other kept column."""
    extra: list[str] = []
    for video in videos:
        extra += [k for k, _ in video.fields if k not in CHARADES_COLUMNS and k not in extra]
    header = [*CHARADES_COLUMNS, *extra]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for video in videos:
            actions = ";".join(
                f"{a.class_id} {_format_seconds(a.start)} {_format_seconds(a.end)}" for a in video.actions
            )
            values = {**dict(video.fields), "id": video.id, "actions": actions}
            writer.writerow([values.get(column, "") for column in header])


def write_charades_classes(path: str | Path, class_names: Sequence[str]) -> None:
    """Write ``Charades_v1_classes.txt`` (``cNNN name`` per line)."""
    Path(path).write_text("".join(f"c{i:03d} {name}\n" for i, name in enumerate(class_names)), encoding="utf-8")
