"""Training checkpoints: written atomically, read without full unpickling, enough to resume exactly.

Layout of ``<output_dir>/checkpoints``::

    step_00000500/model.safetensors   # weights + model config (egovlp weight file)
    step_00000500/train_state.pt      # optimiser, scheduler, scaler, step/epoch/position, per-rank RNG + task state
    latest                            # name of the newest complete checkpoint

A checkpoint is assembled in a hidden temporary directory and renamed into place, then ``latest`` is replaced
atomically, so a run killed at any moment leaves either the previous or the new checkpoint, never a torn one.
``train_state.pt`` holds only tensors and plain containers and is loaded with ``weights_only=True``.
"""

from __future__ import annotations

import errno
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from egovlp.errors import CheckpointError
from egovlp.models.weights import load_state_dict_strict, load_weights, save_weights

log = logging.getLogger(__name__)

STATE_FILE = "train_state.pt"
MODEL_FILE = "model.safetensors"


def rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and CUDA random states as tensors/plain values (safe for ``weights_only``)."""
    np_state: tuple[Any, ...] = tuple(np.random.get_state())
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(tuple(x if not isinstance(x, list) else tuple(x) for x in state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(root: str | Path, step: int, model, train_state: dict[str, Any], keep_last: int = 2) -> Path:
    """Write ``step_<step>/`` atomically under ``root``, point ``latest`` at it and prune older checkpoints.

    A failed write (disk full, permissions) raises :class:`CheckpointError` naming the folder and the cause and
    leaves no temporary folder behind; the previous checkpoint and ``latest`` stay as they were.
    """
    root = Path(root)
    name = f"step_{step:08d}"
    final, tmp = root / name, root / f".{name}.tmp-{os.getpid()}"
    latest_tmp = root / f".latest.tmp-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_weights(model, tmp / MODEL_FILE)
        torch.save({**train_state, "step": step}, tmp / STATE_FILE)
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        latest_tmp.write_text(name + "\n")
        os.replace(latest_tmp, root / "latest")
        _fsync_dir(root)
    except Exception as e:  # OSError, torch's RuntimeError, SafetensorError: all mean the write failed
        shutil.rmtree(tmp, ignore_errors=True)
        latest_tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot save the checkpoint {final}: {_cause(e)}") from e
    _prune(root, keep_last, step)
    log.info("saved checkpoint %s", final)
    return final


def _cause(e: BaseException) -> str:
    """A short reason for a failed write: the errno text (e.g. "No space left on device") when there is one."""
    if isinstance(e, OSError) and e.errno is not None:
        return f"{os.strerror(e.errno)} (errno {errno.errorcode.get(e.errno, e.errno)})"
    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "unexpected pos" in text or "enforce fail" in text:  # torch's zip writer on a full disk
        return f"the write failed, most likely no space left on the device ({text[:200]})"
    return text[:300]


def _fsync_dir(path: Path) -> None:
    for f in [*path.iterdir(), path] if path.is_dir() else [path]:
        try:
            fd = os.open(f, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def _prune(root: Path, keep_last: int, current: int) -> None:
    """Keep the ``keep_last`` newest checkpoints up to step ``current`` (this run's); never touch later ones."""
    if keep_last <= 0:
        return
    steps = {p: _step(p) for p in root.glob("step_*") if p.is_dir() and (p / STATE_FILE).is_file()}
    done = sorted(p for p, s in steps.items() if s is not None and s <= current)
    for old in done[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def _step(path: Path) -> int | None:
    digits = path.name[len("step_") :]
    return int(digits) if digits.isdigit() else None


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest complete checkpoint under ``root`` (per ``latest``, else the highest ``step_*``), or None."""
    root = Path(root)
    pointer = root / "latest"
    if pointer.is_file():
        candidate = root / pointer.read_text().strip()
        if (candidate / STATE_FILE).is_file():
            return candidate
    done = sorted(p for p in root.glob("step_*") if (p / STATE_FILE).is_file() and (p / MODEL_FILE).is_file())
    return done[-1] if done else None


def load_checkpoint(path: str | Path, model) -> dict[str, Any]:
    """Load weights into ``model`` (strict) and return the train state (RNG states are NOT applied here)."""
    path = Path(path)
    if not (path / STATE_FILE).is_file() or not (path / MODEL_FILE).is_file():
        raise CheckpointError(f"{path} is not a complete training checkpoint ({MODEL_FILE} + {STATE_FILE})")
    load_state_dict_strict(model, load_weights(path / MODEL_FILE), str(path / MODEL_FILE))
    return torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)
