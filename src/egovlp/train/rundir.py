"""The output folder of a training run: one run per folder, a lock while it runs, a resume that matches what ran.

Rules (rank 0 applies them at the start of :meth:`egovlp.train.loop.Trainer.fit`, before anything is written):

- ``<output_dir>/.lock`` (pid, host, start time) is held while a run trains. A second run into the folder fails at
  once naming the holder; the lock of a process that no longer runs on this host is taken over with a warning.
- A folder that holds another run (``checkpoints/``, ``metrics.jsonl`` or ``config.yaml``) is refused unless the new
  run resumes it (``train.resume=auto`` or a checkpoint path) or is told to clear it (``train.overwrite=true``).
- A resume compares the saved ``config.yaml`` with the new config: keys that are safe to change on resume
  (:data:`SAFE_ON_RESUME`: length of the run, how often it logs / evaluates / saves, threads and loader workers,
  where it runs) are applied; any other difference is refused with the keys named. ``config.yaml`` is then what
  runs; the one it replaces is kept as ``config_history/step_<N>.yaml`` (the config that ran up to step N).
- Temporary folders of an interrupted checkpoint save (``checkpoints/.step_*.tmp-*``, ``.latest.tmp-*``) are removed.
"""

from __future__ import annotations

import datetime
import errno
import logging
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from egovlp.errors import CheckpointError, ConfigError
from egovlp.utils.files import atomic_write

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"

#: Config keys a resumed run may change; they are applied from the resumed step on.
SAFE_ON_RESUME: tuple[str, ...] = (
    "train.max_steps",
    "train.epochs",
    "train.eval_every",
    "train.save_every",
    "train.log_every",
    "train.keep_last",
    "train.progress",
    "train.tensorboard",
    "train.plot",
    "train.num_threads",
    "train.device",
    "train.resume",
    "train.overwrite",
    "train.output_dir",
)
#: Any key ending so is safe as well (data-loader processes change speed, not samples).
SAFE_SUFFIXES: tuple[str, ...] = ("num_workers",)


# ---------------------------------------------------------------------------------------------------------- lock
@dataclass
class RunLock:
    """``<output_dir>/.lock`` held by this process; :meth:`release` removes it (only if it is still ours)."""

    path: Path
    content: str

    def release(self) -> None:
        try:
            if self.path.read_text() == self.content:
                self.path.unlink()
        except OSError:
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def acquire_lock(out: Path) -> RunLock:
    """Create ``out/.lock`` or raise :class:`ConfigError` naming the live run that holds it."""
    path = out / LOCK_FILE
    host = socket.gethostname()
    content = f"pid={os.getpid()} host={host} since={datetime.datetime.now().isoformat(timespec='seconds')}\n"
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
        except FileExistsError:
            holder = _read_lock(path)
            pid, holder_host = holder.get("pid", ""), holder.get("host", "")
            if holder_host == host and pid.isdigit() and not _pid_alive(int(pid)):
                log.warning("taking over the stale lock %s of process %s, which no longer runs", path, pid)
                path.unlink(missing_ok=True)
                continue
            raise ConfigError(
                f"train.output_dir {out} is in use by another run (pid {pid or '?'} on host {holder_host or '?'}, "
                f"since {holder.get('since', '?')}; lock file {path}): wait for it or choose another output_dir"
            ) from None
        except OSError as e:
            raise ConfigError(f"train.output_dir {out} is not writable: {e.strerror or e}") from None
        with os.fdopen(fd, "w") as f:
            f.write(content)
        return RunLock(path, content)
    raise ConfigError(f"cannot take the lock {path}: another run keeps taking it")


def _read_lock(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except OSError:
        return {}
    return dict(part.split("=", 1) for part in text.split() if "=" in part)


# ------------------------------------------------------------------------------------------- folder contents
def remove_stale_temporaries(checkpoints: Path) -> list[Path]:
    """Remove the temporary folders/files of interrupted checkpoint saves under ``checkpoints``."""
    if not checkpoints.is_dir():
        return []
    stale = sorted([*checkpoints.glob(".step_*.tmp-*"), *checkpoints.glob(".latest.tmp-*")])
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        log.warning("removed %s, left by an interrupted checkpoint save", path)
    return stale


def run_remnants(out: Path) -> list[str]:
    """The parts of a run that ``out`` holds: ``checkpoints/`` (a checkpoint or ``latest``), ``metrics.jsonl``,
    ``config.yaml``."""
    found = []
    ckpt = out / "checkpoints"
    if ckpt.is_dir() and ((ckpt / "latest").exists() or any(ckpt.glob("step_*"))):
        found.append("checkpoints/")
    found += [name for name in (METRICS_FILE, CONFIG_FILE) if (out / name).exists()]
    return found


def clear_run(out: Path) -> None:
    """Remove a previous run's checkpoints, metrics, TensorBoard events, configs and loss curve from ``out``."""
    for name in ("checkpoints", "tensorboard", "config_history"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in (METRICS_FILE, CONFIG_FILE, "loss_curve.png"):
        (out / name).unlink(missing_ok=True)
    log.warning("train.overwrite: cleared the previous run in %s", out)


# --------------------------------------------------------------------------------------------------- configs
def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    if not isinstance(node, dict):
        return {prefix[:-1]: node} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_keys(saved_yaml: str, new_yaml: str) -> list[str]:
    """Dotted keys whose values differ between two config YAML texts (or that only one of them has)."""
    a, b = flatten(yaml.safe_load(saved_yaml) or {}), flatten(yaml.safe_load(new_yaml) or {})
    return sorted(k for k in set(a) | set(b) if a.get(k, _MISSING) != b.get(k, _MISSING))


_MISSING = object()


def is_safe_on_resume(key: str) -> bool:
    return key in SAFE_ON_RESUME or key.rsplit(".", 1)[-1] in SAFE_SUFFIXES


def check_resume_config(saved: Path, new_yaml: str, source: str) -> list[str]:
    """Refuse a resume whose config differs from ``saved`` in keys that are not safe; returns the changed safe ones."""
    try:
        changed = changed_keys(saved.read_text(), new_yaml)
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read the config of the run to resume, {saved}: {e}") from None
    unsafe = [k for k in changed if not is_safe_on_resume(k)]
    if unsafe:
        old, new = flatten(yaml.safe_load(saved.read_text()) or {}), flatten(yaml.safe_load(new_yaml) or {})
        shown = ", ".join(f"{k}: {old.get(k, '(absent)')!r} -> {new.get(k, '(absent)')!r}" for k in unsafe[:8])
        more = f" and {len(unsafe) - 8} more" if len(unsafe) > 8 else ""
        raise ConfigError(
            f"cannot resume {source} with a changed config: {shown}{more} (saved: {saved}); only the run's length, "
            "log/eval/save intervals, keep_last, threads, loader workers and device may change on resume "
            "(docs/distributed.md): undo the change, or start a new run (another train.output_dir or "
            "train.overwrite=true)"
        )
    if changed:
        log.info("resuming with changed settings: %s", ", ".join(changed))
    return changed


def write_config(out: Path, config_yaml: str, step: int) -> None:
    """Write ``config.yaml``; a different one already there is kept as ``config_history/step_<step>.yaml``."""
    path = out / CONFIG_FILE
    if path.is_file():
        old = path.read_text()
        if old == config_yaml:
            return
        if step > 0:
            atomic_write(out / "config_history" / f"step_{step:08d}.yaml", lambda tmp: tmp.write_text(old))
    atomic_write(path, lambda tmp: tmp.write_text(config_yaml))


def run_dir_of(checkpoint: Path) -> Path | None:
    """The run folder of ``<run>/checkpoints/step_N`` (None for a checkpoint elsewhere)."""
    return checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else None


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def prepare_output_dir(
    out: Path, resume: Path | None, resume_spec: str, overwrite: bool, config_yaml: str | None
) -> RunLock:
    """Rank 0's checks and writes before a run (see the module docstring); returns the held lock."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create train.output_dir {out}: {e.strerror or e}") from None
    lock = acquire_lock(out)
    try:
        remove_stale_temporaries(out / "checkpoints")
        _check_folder(out, resume, resume_spec, overwrite, config_yaml)
        if config_yaml is not None:
            step = _step_of(resume) if resume is not None else 0
            write_config(out, config_yaml, step)
    except OSError as e:
        lock.release()
        if e.errno in (errno.EACCES, errno.EROFS, errno.EPERM, errno.ENOSPC):
            raise ConfigError(f"train.output_dir {out} is not writable: {e.strerror}") from None
        raise
    except BaseException:
        lock.release()
        raise
    return lock


def _check_folder(out: Path, resume: Path | None, resume_spec: str, overwrite: bool, config_yaml: str | None) -> None:
    remnants = run_remnants(out)
    if resume is None and resume_spec not in ("", "auto"):
        raise CheckpointError(f"no checkpoint to resume from at {resume_spec} (train.resume)")
    if resume is None:
        if not remnants:
            return
        if overwrite:
            clear_run(out)
            return
        if "checkpoints/" not in remnants:
            # a run that failed or was killed before its first checkpoint left nothing to resume or to lose
            log.warning("%s holds %s of a run that saved no checkpoint: starting afresh", out, ", ".join(remnants))
            clear_run(out)
            return
        raise ConfigError(
            f"train.output_dir {out} holds another run ({', '.join(remnants)}): resume it with train.resume=auto, "
            "clear it with train.overwrite=true, or choose another train.output_dir"
        )
    owner = run_dir_of(resume)
    if owner is not None and _same(owner, out):
        saved = out / CONFIG_FILE
    else:  # a checkpoint of another folder continues here: this folder must not hold a run of its own
        if remnants:
            raise ConfigError(
                f"train.output_dir {out} holds another run ({', '.join(remnants)}), and train.resume={resume} is a "
                "checkpoint of a different folder: choose an empty train.output_dir"
            )
        saved = (owner / CONFIG_FILE) if owner is not None else resume / CONFIG_FILE
    if config_yaml is not None and saved.is_file():
        check_resume_config(saved, config_yaml, str(resume))


def _step_of(checkpoint: Path) -> int:
    name = checkpoint.name
    return int(name[5:]) if name.startswith("step_") and name[5:].isdigit() else 0
