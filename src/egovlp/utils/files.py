"""Writing files so that a killed process never leaves a torn one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def current_umask() -> int:
    """The process's umask: from ``/proc/self/status`` on Linux, else by setting it and putting it back."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no read-only call elsewhere
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it to ``path`` (atomic on POSIX).

    The temporary file is hidden (``.<name>.<random>.tmp``) and removed if ``write`` fails; returns ``path``. The
    file gets the permissions a plain ``open(path, "w")`` would give (``0o666`` less the umask, typically 0644),
    not ``mkstemp``'s private 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
    return path


def check_writable(folder: str | Path, what: str) -> Path:
    """Create ``folder`` if needed and check a file can be written in it, before any long work; a
    :class:`~egovlp.errors.ConfigError` naming ``what`` (e.g. ``"--output"``) and the folder otherwise."""
    from egovlp.errors import ConfigError

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(f"{what} {folder} is not writable: {e.strerror or e}") from None
    return folder
