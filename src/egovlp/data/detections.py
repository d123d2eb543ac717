"""Object detections for object-aware pre-training (OA-Trans): the two readers and the class vocabulary.

egovlp runs no detector: the user supplies detections per clip, in either form.

**BUTD per-frame npz** (families.md §3f, the MILVLG bottom-up-attention extractor OA-Trans used):
``<root>/<clip key>/<k>.npz`` (or ``<root>/<clip key>_<k>.npz``) for frames ``k = 0..K-1`` at the middles of K
equal segments of the clip (OA-Trans extracted 8 per WebVid video). Each file holds ``bbox (N, 4)`` in pixels of
the original frame (x1, y1, x2, y2), ``image_h`` / ``image_w`` and ``info``, a pickled dict (``objects_id (N,)``
VG-1600 class ids 0..1599, ``objects_conf (N,)``, ...). The file is read without ``allow_pickle``: ``info`` goes
through the restricted unpickler (:func:`egovlp.utils.safe_pickle.load_npz_safely`: numpy arrays and plain
containers only).

**JSON**::

    {"clips": {"<clip key>": [{"time": 12.4, "boxes": [[x1, y1, x2, y2], ...], "labels": [17, "red cube", ...],
                                "scores": [0.9, ...]}, ...]}}

``time`` in seconds of the video, boxes normalised to [0, 1] (x1 < x2, y1 < y2), labels class ids of the
vocabulary or tag names, ``scores`` optional (default 1).

The **vocabulary** (``objects_vocab.txt`` of VG-1600, given by path): one class per line, synonyms separated by
commas; a class's tag word is its first synonym, lowercased (``"stop sign,stopsign"`` -> ``"stop sign"``); class id
``c`` is line ``c + 1`` (OA-Trans indexes ``['__background__'] + lines`` with ``objects_id + 1``).

Bad records follow ``bad_input``: ``"raise"`` -> :class:`~egovlp.errors.DataError` naming the file, the frame and
the box; ``"skip"`` -> the box (bad box, unknown class id) or the frame (missing file) is dropped and counted in
:class:`DetectionCounts`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from egovlp.errors import DataError

log = logging.getLogger(__name__)

__all__ = [
    "BUTDDetections",
    "DetectionCounts",
    "FrameDetections",
    "JSONDetections",
    "butd_frame_times",
    "load_class_vocab",
    "open_detections",
]

#: a box may overshoot the frame by this much (normalised) before it is bad; it is clipped to [0, 1]
BOX_TOLERANCE = 0.01


@dataclass(frozen=True)
class FrameDetections:
    """The detections of one frame."""

    time: float  # seconds in the video
    boxes: np.ndarray  # (N, 4) float32, normalised x1, y1, x2, y2 in [0, 1]
    labels: tuple[str, ...]  # (N,) tag names
    scores: np.ndarray  # (N,) float32 confidences


@dataclass
class DetectionCounts:
    """What ``bad_input="skip"`` dropped (in this process)."""

    missing_frames: int = 0  # BUTD frame files not found; JSON clips without an entry count 1 each
    bad_boxes: int = 0
    unknown_classes: int = 0
    frames_read: int = 0
    first: dict[str, str] = field(default_factory=dict)  # kind -> the first message of that kind

    def note(self, kind: str, message: str) -> None:
        setattr(self, kind, getattr(self, kind) + 1)
        if kind not in self.first:
            self.first[kind] = message
            log.warning("detections: %s (further ones of this kind are counted, not logged)", message)


def load_class_vocab(path: str | os.PathLike) -> tuple[str, ...]:
    """The tag word of every class of a VG-style ``objects_vocab.txt`` (class id = line index, 0-based)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: object class vocabulary not found")
    names = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        name = line.split(",")[0].strip().lower()
        if not name:
            raise DataError(f"{path}:{number}: empty class name (one class per line, synonyms after commas)")
        names.append(name)
    if not names:
        raise DataError(f"{path}: no classes")
    return tuple(names)


def butd_frame_times(start: float, end: float, num_frames: int) -> np.ndarray:
    """Times of BUTD frames ``k = 0..K-1``: the middles of K equal segments of ``[start, end]`` (OA-Trans's rule)."""
    k = np.arange(num_frames, dtype=np.float64)
    return start + (k + 0.5) * (end - start) / num_frames


class _Reader:
    """What both readers share: the vocabulary, the policy and the counts, and the box / label checks."""

    def __init__(self, vocab: tuple[str, ...] | None, bad_input: str) -> None:
        if bad_input not in ("raise", "skip"):
            raise ValueError(f"bad_input must be 'raise' or 'skip', got {bad_input!r}")
        self.vocab, self.bad_input, self.counts = vocab, bad_input, DetectionCounts()

    def _bad(self, kind: str, message: str) -> None:
        if self.bad_input == "raise":
            raise DataError(message)
        self.counts.note(kind, message)

    def _label(self, label: Any, where: str) -> str | None:
        if isinstance(label, str) and label.strip():
            return label.strip().lower()
        if isinstance(label, (int, np.integer)) and not isinstance(label, bool):
            if self.vocab is None:
                raise DataError(f"{where}: class id {int(label)} but no class vocabulary was given (oa.vocab)")
            if 0 <= label < len(self.vocab):
                return self.vocab[int(label)]
            self._bad("unknown_classes", f"{where}: unknown class id {int(label)} (vocabulary: {len(self.vocab)})")
            return None
        raise DataError(f"{where}: a label must be a class id or a tag name, got {label!r}")

    def _frame(self, time: float, boxes: np.ndarray, labels: list, scores: np.ndarray, where: str) -> FrameDetections:
        """Check every box (finite, ordered, inside the frame up to BOX_TOLERANCE) and label; keep the good ones."""
        keep_boxes, keep_labels, keep_scores = [], [], []
        for n, (box, label, score) in enumerate(zip(boxes, labels, scores)):
            here = f"{where}, box {n}"
            x1, y1, x2, y2 = (float(c) for c in box)
            lo, hi = -BOX_TOLERANCE, 1 + BOX_TOLERANCE
            ok = all(math.isfinite(c) and lo <= c <= hi for c in (x1, y1, x2, y2)) and x1 < x2 and y1 < y2
            if not ok or not math.isfinite(float(score)):
                self._bad("bad_boxes", f"{here}: bad box {[x1, y1, x2, y2]} (score {float(score)}): need finite "
                          "0 <= x1 < x2 <= 1, 0 <= y1 < y2 <= 1")  # fmt: skip
                continue
            name = self._label(label, here)
            if name is None:
                continue
            keep_boxes.append(np.clip([x1, y1, x2, y2], 0.0, 1.0))
            keep_labels.append(name)
            keep_scores.append(float(score))
        self.counts.frames_read += 1
        return FrameDetections(
            float(time),
            np.asarray(keep_boxes, dtype=np.float32).reshape(-1, 4),
            tuple(keep_labels),
            np.asarray(keep_scores, dtype=np.float32),
        )


class BUTDDetections(_Reader):
    """BUTD npz files ``<root>/<clip key>/<k>.npz``, ``k = 0..num_frames-1`` (see the module docstring)."""

    def __init__(
        self, root: str | os.PathLike, vocab: tuple[str, ...] | None, num_frames: int = 8, bad_input: str = "raise"
    ) -> None:
        super().__init__(vocab, bad_input)
        self.root, self.num_frames = Path(root), int(num_frames)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: BUTD detections folder not found")
        if vocab is None:
            raise DataError(f"{self.root}: BUTD detections hold VG class ids: give the class vocabulary (oa.vocab)")

    def clip(self, key: str, start: float, end: float) -> list[FrameDetections]:
        """The frames of clip ``key`` spanning ``[start, end]`` seconds (missing files: raise, or skip and count)."""
        frames = []
        for k, time in enumerate(butd_frame_times(start, end, self.num_frames)):
            path = self.root / key / f"{k}.npz"
            if not path.is_file() and (self.root / f"{key}_{k}.npz").is_file():  # the flat form OA-Trans also reads
                path = self.root / f"{key}_{k}.npz"
            if not path.is_file():
                self._bad("missing_frames", f"{path}: detections of frame {k} of clip {key} not found")
                continue
            frames.append(self.read_frame(path, float(time)))
        return frames

    def read_frame(self, path: Path, time: float) -> FrameDetections:
        from egovlp.utils.safe_pickle import load_npz_safely

        arrays = load_npz_safely(path)
        try:
            info = arrays["info"].item() if "info" in arrays else {}
            if not isinstance(info, dict):
                raise DataError(f"{path}: 'info' is a {type(info).__name__}, expected the BUTD dict")
            height = float(np.asarray(arrays.get("image_h", info.get("image_h"))).reshape(()))
            width = float(np.asarray(arrays.get("image_w", info.get("image_w"))).reshape(()))
            boxes = np.asarray(arrays["bbox"], dtype=np.float64).reshape(-1, 4)
            ids = np.asarray(info["objects_id"]).reshape(-1)
            scores = np.asarray(info.get("objects_conf", np.ones(len(ids))), dtype=np.float64).reshape(-1)
        except KeyError as e:
            raise DataError(f"{path}: field {e} missing (a BUTD record has bbox, image_h, image_w, info)") from None
        except (TypeError, ValueError) as e:
            raise DataError(f"{path}: malformed BUTD record ({e})") from None
        if not (height > 0 and width > 0):
            raise DataError(f"{path}: image size {width} x {height} is not positive")
        if not len(boxes) == len(ids) == len(scores):
            raise DataError(f"{path}: {len(boxes)} boxes, {len(ids)} class ids and {len(scores)} scores differ")
        if not np.issubdtype(ids.dtype, np.integer):
            raise DataError(f"{path}: objects_id must be integers, got {ids.dtype}")
        normalised = boxes / np.array([width, height, width, height])
        return self._frame(time, normalised, [int(i) for i in ids], scores, str(path))


class JSONDetections(_Reader):
    """All clips' detections in one JSON file (see the module docstring)."""

    def __init__(self, path: str | os.PathLike, vocab: tuple[str, ...] | None, bad_input: str = "raise") -> None:
        super().__init__(vocab, bad_input)
        self.path = Path(path)
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{self.path}: detections file not found") from None
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise DataError(f"{self.path}: not a JSON file ({e})") from None
        if not isinstance(data, dict) or not isinstance(data.get("clips"), dict):
            raise DataError(f'{self.path}: expected {{"clips": {{clip key: [frames]}}}}')
        self.clips: dict[str, Any] = data["clips"]

    def clip(self, key: str, start: float, end: float) -> list[FrameDetections]:
        """The frames of clip ``key`` (``[start, end]`` is unused: the JSON gives each frame's time)."""
        if key not in self.clips:
            self._bad("missing_frames", f"{self.path}: clip {key!r} has no detections")
            return []
        frames = self.clips[key]
        if not isinstance(frames, list):
            raise DataError(f"{self.path}: clip {key!r}: expected a list of frames, got {type(frames).__name__}")
        return [self._parse(frame, f"{self.path}: clip {key!r}, frame {n}") for n, frame in enumerate(frames)]

    def _parse(self, frame: Any, where: str) -> FrameDetections:
        if not isinstance(frame, dict) or "time" not in frame or "boxes" not in frame or "labels" not in frame:
            raise DataError(f"{where}: a frame is {{'time', 'boxes', 'labels'[, 'scores']}}, got {frame!r:.80}")
        try:
            time = float(frame["time"])
            boxes = np.asarray(frame["boxes"], dtype=np.float64).reshape(-1, 4)
            labels = list(frame["labels"])
            scores = np.asarray(frame.get("scores", [1.0] * len(labels)), dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as e:
            raise DataError(f"{where}: malformed frame ({e})") from None
        if not len(boxes) == len(labels) == len(scores):
            raise DataError(f"{where}: {len(boxes)} boxes, {len(labels)} labels and {len(scores)} scores differ")
        return self._frame(time, boxes, labels, scores, where)


def open_detections(
    path: str | os.PathLike, vocab_path: str | os.PathLike = "", butd_frames: int = 8, bad_input: str = "raise"
) -> BUTDDetections | JSONDetections:
    """A ``.json`` file -> :class:`JSONDetections`; a folder -> :class:`BUTDDetections`."""
    vocab = load_class_vocab(vocab_path) if vocab_path else None
    path = Path(path)
    if path.suffix == ".json":
        return JSONDetections(path, vocab, bad_input)
    return BUTDDetections(path, vocab, butd_frames, bad_input)
