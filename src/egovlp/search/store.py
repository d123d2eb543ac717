"""The files of an index folder (see ``docs``/the package docstring for the layout) and the settings check.

Every file is written atomically (a temporary file beside it, then a rename), so a killed run leaves whole files or
none. A video's ``embeddings/<id>.npz`` is written after its thumbnails: its presence means the video is done.
Arrays are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from egovlp.errors import ConfigError, DataError
from egovlp.utils.files import atomic_write

__all__ = [
    "ANN_FILE",
    "FORMAT",
    "MANIFEST",
    "WINDOWS_FILE",
    "check_settings",
    "checkpoint_fingerprint",
    "embedding_path",
    "read_embeddings",
    "read_manifest",
    "settings_hash",
    "thumbnail_name",
    "write_embeddings",
    "write_json",
    "write_windows",
]

FORMAT = "egovlp-search-index/1"
MANIFEST = "manifest.json"
WINDOWS_FILE = "windows.npz"
ANN_FILE = "index.faiss"


def embedding_path(root: Path, vid: str) -> Path:
    return root / "embeddings" / f"{vid}.npz"


def thumbnail_name(vid: str, k: int) -> str:
    """The thumbnail of window ``k`` of video ``vid``, relative to the index folder."""
    return f"thumbs/{vid}/{k:06d}.jpg"


def checkpoint_fingerprint(path: str | Path) -> dict[str, Any]:
    """Name, size and SHA-256 of a weight file: what identifies the model that made the embeddings."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def write_json(path: Path, data: dict) -> Path:
    text = json.dumps(data, indent=1, sort_keys=False)
    return atomic_write(path, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))


def read_manifest(root: Path) -> dict | None:
    """``manifest.json`` of ``root``, None if there is none; DataError if it is not an index's manifest."""
    path = root / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise DataError(f"{path}: not a search index manifest (format {FORMAT!r}); is {root} an `egovlp index` folder?")
    return data


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_diff(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def check_settings(root: Path, settings: dict) -> dict | None:
    """The existing manifest of ``root`` (None if none); ConfigError if its embeddings come from other settings."""
    manifest = read_manifest(root)
    if manifest is None:
        return None
    if manifest.get("settings_hash") != settings_hash(settings) and manifest.get("videos"):
        changes = "; ".join(_diff(manifest.get("settings", {}), settings)[:8])
        raise ConfigError(
            f"{root / MANIFEST}: this index was built with another model or window setting ({changes}); its "
            "embeddings cannot be mixed with new ones: use another --out folder, the same checkpoint and window "
            "settings, or delete the folder to start over"
        )
    return manifest


def write_embeddings(path: Path, embeddings: np.ndarray, start: np.ndarray, end: np.ndarray, entry: dict) -> Path:
    """One video's ``embeddings (n, E)`` float32, window ``start``/``end`` ``(n,)`` seconds and its manifest entry."""

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(
                f,
                embeddings=embeddings.astype(np.float32),
                start=start.astype(np.float64),
                end=end.astype(np.float64),
                entry=np.array(json.dumps(entry)),
            )

    return atomic_write(path, write)


def read_embeddings(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """``(embeddings, start, end, entry)`` written by :func:`write_embeddings`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["embeddings"], z["start"], z["end"], json.loads(str(z["entry"]))
    except (OSError, KeyError, ValueError) as e:
        raise DataError(f"{path}: unreadable embedding file ({e}); delete it to embed the video again") from None


def write_windows(path: Path, video: np.ndarray, start: np.ndarray, end: np.ndarray) -> Path:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, video=video.astype(np.int32), start=start, end=end)

    return atomic_write(path, write)
