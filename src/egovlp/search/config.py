"""The typed settings of ``egovlp index`` and ``egovlp search`` (frozen dataclasses; ``key=value`` overrides).

Only ``window`` and the model decide the embeddings: they are recorded in the index's manifest and a later run with
other values is refused (``IndexConfig.embedding_settings``). The FAISS index kind and its parameters can change
between runs (the FAISS file is rebuilt from the stored embeddings at the end of every run).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from egovlp.errors import ConfigError
from egovlp.features.windows import WindowConfig

__all__ = ["INDEX_KINDS", "AnnConfig", "IndexConfig", "MergeConfig", "default_window"]

INDEX_KINDS = ("auto", "exact", "ivf", "hnsw")


def default_window() -> WindowConfig:
    """Search windows: 2 s long every second, 4 frames each (EgoVLPv2's evaluation frame count), the last one
    shifted back to end at the video's end (every window is whole)."""
    return WindowConfig(num_frames=4, size=2.0, stride=1.0, unit="seconds", last="shift")


@dataclass(frozen=True)
class AnnConfig:
    """The FAISS index over the window embeddings (inner product of L2-normalised vectors = cosine similarity).

    ``kind="auto"`` takes ``exact`` (``IndexFlatIP``) up to ``exact_max`` windows and ``hnsw`` above; ``ivf`` is
    ``IndexIVFFlat`` with ``nlist`` lists (0: ``4 * sqrt(N)``, at most ``N / 39``) searched ``nprobe`` at a time.
    """

    kind: str = "auto"  # auto | exact | ivf | hnsw
    exact_max: int = 200_000  # auto: exact search up to this many windows
    nlist: int = 0  # ivf: number of inverted lists (0: 4 * sqrt(N))
    nprobe: int = 32  # ivf: lists searched per query
    hnsw_m: int = 32  # hnsw: neighbours per node
    ef_construction: int = 80  # hnsw: candidate list while building
    ef_search: int = 128  # hnsw: candidate list while searching

    def validate(self) -> None:
        checks = [
            (self.kind in INDEX_KINDS, f"index.kind must be one of {INDEX_KINDS}, got {self.kind!r}"),
            (self.exact_max >= 0, f"index.exact_max must be >= 0, got {self.exact_max}"),
            (self.nlist >= 0, f"index.nlist must be >= 0 (0: automatic), got {self.nlist}"),
            (self.nprobe >= 1, f"index.nprobe must be >= 1, got {self.nprobe}"),
            (self.hnsw_m >= 2, f"index.hnsw_m must be >= 2, got {self.hnsw_m}"),
            (self.ef_construction >= 1, f"index.ef_construction must be >= 1, got {self.ef_construction}"),
            (self.ef_search >= 1, f"index.ef_search must be >= 1, got {self.ef_search}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass(frozen=True)
class IndexConfig:
    """Everything ``egovlp index`` needs."""

    checkpoint: str = ""  # egovlp .safetensors weight file (any family with encode_video / encode_text)
    tokenizer: str = ""  # tokenizer folder, recorded for `egovlp search` (optional here)
    out_dir: str = ""  # the index folder
    window: WindowConfig = field(default_factory=default_window)
    index: AnnConfig = field(default_factory=AnnConfig)
    extensions: tuple[str, ...] = ("mp4", "mkv", "webm", "avi", "mov")  # of video files found in folders
    chunk_seconds: float = 0.0  # chunked <uid>/<k>.mp4 videos: chunk length; <= 0: <root>/chunks.json, else 600
    thumbnail_width: int = 160  # px (height keeps the aspect ratio)
    thumbnail_quality: int = 80  # JPEG quality
    batch_size: int = 16  # windows per forward pass
    num_workers: int = 0  # decoding processes (0: decode in the main process)
    device: str = "auto"  # auto (GPU if there is one, else CPU) | cpu | cuda | cuda:N
    precision: str = "fp32"  # fp32 | fp16 | bf16 (autocast)
    on_error: str = "raise"  # unreadable video: "raise" (stop, naming it) or "skip" (log, list under "failed")
    progress: bool = True

    def validate(self) -> None:
        """Raise :class:`ConfigError` for impossible or missing settings (paths are checked when used)."""
        checks = [
            (bool(self.checkpoint), "no checkpoint: give --checkpoint W.safetensors (or checkpoint=...)"),
            (bool(self.out_dir), "no index folder: give --out INDEX_DIR (or out_dir=...)"),
            (self.thumbnail_width >= 8, f"thumbnail_width must be >= 8, got {self.thumbnail_width}"),
            (1 <= self.thumbnail_quality <= 95, f"thumbnail_quality must be in 1..95, got {self.thumbnail_quality}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.num_workers >= 0, f"num_workers must be >= 0, got {self.num_workers}"),
            (self.precision in ("fp32", "fp16", "bf16"), f"precision must be fp32|fp16|bf16, got {self.precision!r}"),
            (self.on_error in ("raise", "skip"), f"on_error must be 'raise' or 'skip', got {self.on_error!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        self.window.validate()
        self.index.validate()


@dataclass(frozen=True)
class MergeConfig:
    """How neighbouring windows of one moment become one result (:func:`egovlp.search.merge.merge_windows`).

    A window joins a moment of the same video that it overlaps or comes within ``gap`` seconds of, unless the
    moment would then last longer than ``max_seconds`` (so overlapping windows never chain into a whole video).
    """

    enabled: bool = True
    gap: float = 0.0  # seconds between a window and a moment that still count as neighbours
    max_seconds: float = 8.0  # the longest merged moment

    def validate(self) -> None:
        if self.gap < 0:
            raise ConfigError(f"merge.gap must be >= 0, got {self.gap}")
        if self.max_seconds <= 0:
            raise ConfigError(f"merge.max_seconds must be > 0, got {self.max_seconds}")
