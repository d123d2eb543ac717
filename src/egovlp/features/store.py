"""Feature files and the manifest: atomic writes, resumability and reading back.

One file per item (video, clip or text set), named after the item's id under the output folder:

* ``safetensors`` (default): ``<out>/<id>.safetensors`` holding the tensors (``features`` and, per mode,
  ``window_start`` / ``window_end`` / ``text_tokens`` / ``text_mask``) and, in its metadata under
  ``egovlp.features``, the item's manifest entry as JSON;
* ``npy``: ``<out>/<id>.npy`` (``features``), ``<out>/<id>.<name>.npy`` for the other arrays and ``<out>/<id>.json``
  (the entry). ``<id>.npy`` is written last, so its presence means the item is complete.

Every file is written to a hidden temporary file in the same folder (``.<name>.<random>.tmp``) and renamed into
place, so a killed run leaves either the complete file or a temporary file that later runs ignore. An item is done
when its main file exists. At its end a run removes the temporary files it made itself that are still there, and the
stale ones of killed runs: only files of exactly this pattern, for the files of its own items (``<name>`` one of
them, in its folder), last written before the run started (so a concurrent writer's are kept); nothing else under
the output folder is touched.

Item ids become file names only through :func:`feature_path`, which checks them (:func:`~egovlp.features.ids.check_id`:
a relative name without ``..``, never absolute), so no file is written outside the output folder.

``manifest.json`` (written atomically by rank 0) records the model, the checkpoint, all settings and one entry per
item; a run into a folder whose manifest has other settings stops instead of mixing features.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from egovlp.errors import ConfigError, DataError
from egovlp.features.ids import check_id
from egovlp.utils.files import atomic_write

log = logging.getLogger(__name__)

__all__ = [
    "MANIFEST",
    "FeatureFile",
    "atomic_write",
    "check_settings",
    "feature_path",
    "item_files",
    "read_entry",
    "read_features",
    "read_manifest",
    "remove_own_temporaries",
    "remove_stale_temporaries",
    "settings_hash",
    "write_features",
    "write_manifest",
]

MANIFEST = "manifest.json"
FORMAT_VERSION = "egovlp-features-1"
META_KEY = "egovlp.features"
_SUFFIX = {"safetensors": ".safetensors", "npy": ".npy"}
ARRAY_NAMES = ("features", "window_start", "window_end", "text_tokens", "text_mask")  # every array a file may hold
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[A-Za-z0-9_]+\.tmp")  # atomic_write's .<name>.<random>.tmp

Created = set[Path] | None  # where a run records the temporary files it makes


@dataclass(frozen=True)
class FeatureFile:
    """A feature file read back: its arrays (``features`` first) and its manifest entry."""

    arrays: dict[str, np.ndarray]
    entry: dict

    @property
    def features(self) -> np.ndarray:
        return self.arrays["features"]


def feature_path(out_dir: str | os.PathLike, item_id: str, fmt: str) -> Path:
    """The main file of item ``item_id``: ``<out>/<id>.safetensors`` or ``<out>/<id>.npy``.

    Raises :class:`DataError` for an id that would leave ``out_dir`` or clash with ``manifest.json``.
    """
    check_id(item_id, f"item id {item_id!r}")
    if fmt == "npy" and item_id == Path(MANIFEST).stem:
        raise DataError(f"item id {item_id!r}: its {item_id}.json would overwrite the manifest; use format=safetensors")
    return Path(out_dir) / f"{item_id}{_SUFFIX[fmt]}"


def item_files(out_dir: str | os.PathLike, item_id: str, fmt: str) -> list[Path]:
    """Every file an item may have: the main file and, for ``npy``, its entry and its other arrays."""
    path = feature_path(out_dir, item_id, fmt)
    if fmt != "npy":
        return [path]
    return [path, path.with_suffix(".json"), *(_npy_extra(path, name) for name in ARRAY_NAMES[1:])]


def _tracked(write: Callable[[Path], object], created: Created) -> Callable[[Path], object]:
    """``write``, recording its temporary file in ``created`` first."""
    if created is None:
        return write

    def run(tmp: Path) -> object:
        created.add(tmp)
        return write(tmp)

    return run


def _write_json(path: Path, obj: object, created: Created = None) -> None:
    text = json.dumps(obj, indent=1, sort_keys=False) + "\n"
    atomic_write(path, _tracked(lambda tmp: tmp.write_text(text), created))


def _npy_extra(path: Path, name: str) -> Path:
    return path.with_name(f"{path.stem}.{name}.npy")


def write_features(path: Path, arrays: dict[str, np.ndarray], entry: dict, fmt: str, created: Created = None) -> None:
    """Write one item's arrays (``features`` first in the dict) and its entry atomically (see the module doc).

    The temporary files are added to ``created`` (when given) before they are written.
    """
    if fmt == "safetensors":
        import torch
        from safetensors.torch import save_file

        tensors = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()}
        meta = {META_KEY: json.dumps(entry)}
        atomic_write(path, _tracked(lambda tmp: save_file(tensors, str(tmp), metadata=meta), created))
        return
    for name, value in arrays.items():
        if name != "features":
            atomic_write(_npy_extra(path, name), _tracked(functools.partial(_save_npy, value=value), created))
    _write_json(path.with_suffix(".json"), entry, created)
    atomic_write(path, _tracked(lambda tmp: _save_npy(tmp, arrays["features"]), created))  # last: marks it complete


def _save_npy(path: Path, value: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object keeps np.save from appending ".npy" to the temporary name
        np.save(f, value)


def read_entry(path: str | os.PathLike) -> dict:
    """The manifest entry stored with a feature file (cheap: no arrays are read)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            text = (f.metadata() or {}).get(META_KEY)
        if text is None:
            raise DataError(f"{path}: not an egovlp feature file (no {META_KEY} metadata)")
        return json.loads(text)
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        raise DataError(f"{path}: its entry {sidecar.name} is missing")
    return json.loads(sidecar.read_text())


def read_features(path: str | os.PathLike) -> FeatureFile:
    """Read a feature file (either format) with its arrays and entry."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such feature file")
    entry = read_entry(path)
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        loaded = load_file(str(path))
        arrays = {"features": loaded.pop("features"), **loaded}
    else:
        arrays = {"features": np.load(path)}
        for name in entry.get("arrays", []):
            if name != "features":
                arrays[name] = np.load(_npy_extra(path, name))
    return FeatureFile(arrays, entry)


# ------------------------------------------------------------------------------------------------------ manifest
def settings_hash(settings: dict) -> str:
    """A short fingerprint of the settings that change the features."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def read_manifest(out_dir: str | os.PathLike) -> dict | None:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e}); move it away to start over") from None


def _diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_diff(a, b, f"{prefix}{key}."))
        elif a != b:
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def check_settings(out_dir: str | os.PathLike, settings: dict) -> dict | None:
    """The existing manifest of ``out_dir`` (None if none); raise if it was made with other settings."""
    manifest = read_manifest(out_dir)
    if manifest is None:
        return None
    if manifest.get("settings_hash") != settings_hash(settings):
        if not manifest.get("videos"):  # no feature file was written with the old settings: nothing to mix with
            log.info("%s holds no features yet: its settings are replaced", Path(out_dir) / MANIFEST)
            return None
        changes = _diff(manifest.get("settings", {}), settings)
        raise ConfigError(
            f"{Path(out_dir) / MANIFEST} holds features made with other settings ({'; '.join(changes[:8])}); "
            "use another output folder, or delete it to start over"
        )
    return manifest


def write_manifest(out_dir: str | os.PathLike, manifest: dict, created: Created = None) -> Path:
    """Write ``manifest.json`` atomically."""
    path = Path(out_dir) / MANIFEST
    _write_json(path, {"format": FORMAT_VERSION, **manifest}, created)
    return path


def remove_own_temporaries(created: Iterable[Path]) -> int:
    """Delete the temporary files a run recorded in ``created`` that are still there (a write that was cut off)."""
    count = 0
    for tmp in created:
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            count += 1
    return count


def remove_stale_temporaries(files: Iterable[Path], before: float) -> int:
    """Delete the temporary files of killed writes of ``files``: ``.<file name>.<random>.tmp`` beside each file,
    last modified before ``before`` (a ``time.time()``). Nothing else is looked at: no other names, no other
    folders, nothing recursively."""
    wanted: dict[Path, set[str]] = {}
    for path in files:
        wanted.setdefault(path.parent, set()).add(path.name)
    count = 0
    for folder, names in wanted.items():
        if not folder.is_dir():
            continue
        for entry in os.scandir(folder):
            match = _TEMPORARY.fullmatch(entry.name)
            if match is None or match.group("name") not in names or not entry.is_file(follow_symlinks=False):
                continue
            if entry.stat(follow_symlinks=False).st_mtime < before:
                Path(entry.path).unlink(missing_ok=True)
                count += 1
    if count:
        log.info("removed %d temporary file(s) of interrupted writes", count)
    return count
