"""An index folder opened for searching: its manifest, its windows and its FAISS index."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from egovlp.errors import DataError
from egovlp.features.sources import VideoRef
from egovlp.search.ann import read_ann, search_ann
from egovlp.search.store import ANN_FILE, MANIFEST, WINDOWS_FILE, read_manifest, thumbnail_name

__all__ = ["IndexedVideo", "VideoIndex", "Window"]


@dataclass(frozen=True)
class IndexedVideo:
    """A video of the index (an entry of the manifest's ``videos``)."""

    id: str
    source: str  # the file, or <root>/<uid> for a chunked video
    kind: str  # "file" | "chunked"
    fps: float
    duration: float
    num_windows: int
    first_window: int  # its first row in the index
    ref: VideoRef  # how to read its frames (egovlp.features.sources.read_frames)


@dataclass(frozen=True)
class Window:
    """Row ``id`` of the index: window ``k`` of video ``video`` (an index into ``VideoIndex.videos``)."""

    id: int
    video: int
    k: int
    start: float  # seconds in the video
    end: float


def _video(entry: dict, where: str) -> IndexedVideo:
    try:
        kind = entry["kind"]
        ref = VideoRef("chunked", entry["root"], entry["uid"], float(entry["chunk_seconds"])) if kind == "chunked" \
            else VideoRef("file", entry["source"])  # fmt: skip
        return IndexedVideo(
            entry["id"], entry["source"], kind, float(entry["fps"]), float(entry["duration"]),
            int(entry["num_windows"]), int(entry["first_window"]), ref,
        )  # fmt: skip
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{where}: malformed video entry ({e!r})") from None


class VideoIndex:
    """Read-only view of an index folder written by :func:`egovlp.search.build_index`."""

    def __init__(self, root: Path, manifest: dict, video: np.ndarray, start: np.ndarray, end: np.ndarray, ann: Any):
        self.root, self.manifest, self.ann = root, manifest, ann
        self.window_video, self.window_start, self.window_end = video, start, end  # (N,) each
        self.videos = [_video(e, f"{root / MANIFEST}: videos[{i}]") for i, e in enumerate(manifest["videos"])]
        self._times: dict[int, np.ndarray] = {}  # video -> (n, F) frame times of its windows

    @classmethod
    def open(cls, root: str | Path) -> VideoIndex:
        """Open ``root``; DataError if it is not a finished index (or its files disagree)."""
        root = Path(root)
        manifest = read_manifest(root)
        if manifest is None:
            raise DataError(f"{root}: no {MANIFEST}; build an index there with `egovlp index VIDEOS... --out {root}`")
        if not manifest.get("complete"):
            raise DataError(f"{root / MANIFEST}: the index is not finished (a run was stopped); run `egovlp index` "
                            "again on the same folder to finish it")  # fmt: skip
        try:
            with np.load(root / WINDOWS_FILE, allow_pickle=False) as z:
                video, start, end = z["video"], z["start"], z["end"]
        except (OSError, KeyError, ValueError) as e:
            raise DataError(f"{root / WINDOWS_FILE}: unreadable ({e})") from None
        ann = read_ann(root / ANN_FILE, manifest.get("index", {}))
        n = int(manifest.get("num_windows", -1))
        if not (len(video) == len(start) == len(end) == n == ann.ntotal):
            raise DataError(f"{root}: {MANIFEST} ({n}), {WINDOWS_FILE} ({len(video)}) and {ANN_FILE} ({ann.ntotal}) "
                            "disagree on the number of windows; run `egovlp index` again")  # fmt: skip
        return cls(root, manifest, video, start, end, ann)

    @property
    def num_windows(self) -> int:
        return int(self.window_video.shape[0])

    @property
    def checkpoint(self) -> str:
        return str(self.manifest.get("checkpoint", ""))

    @property
    def tokenizer(self) -> str:
        return str(self.manifest.get("tokenizer", ""))

    @property
    def num_frames(self) -> int:
        return int(self.manifest["settings"]["window"]["num_frames"])

    def window(self, i: int) -> Window:
        v = int(self.window_video[i])
        return Window(int(i), v, int(i) - self.videos[v].first_window, float(self.window_start[i]),
                      float(self.window_end[i]))  # fmt: skip

    def thumbnail(self, i: int) -> str:
        """Window ``i``'s thumbnail, relative to the index folder."""
        w = self.window(i)
        return thumbnail_name(self.videos[w.video].id, w.k)

    def thumbnail_path(self, i: int) -> Path:
        return self.root / self.thumbnail(i)

    def video_path(self, video: int) -> Path:
        """The source file (or chunk folder) of video ``video``."""
        return Path(self.videos[video].source)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` ``(Q, k)`` of the best windows for normalised query embeddings ``(Q, E)``."""
        return search_ann(self.ann, queries, k)

    def frame_times(self, i: int) -> np.ndarray:
        """The ``(F,)`` frame times (seconds) window ``i`` was embedded from (the same plan as at index time)."""
        from egovlp.features.windows import WindowConfig, plan_windows

        w = self.window(i)
        if w.video not in self._times:
            video = self.videos[w.video]
            cfg = WindowConfig(**self.manifest["settings"]["window"])
            self._times[w.video] = plan_windows(0.0, video.duration, video.fps, cfg).times
        return self._times[w.video][w.k]
