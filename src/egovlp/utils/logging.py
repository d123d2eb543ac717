"""Logging set-up shared by the command-line tools: readable console lines, an optional log file, rank-0 INFO.

The rank is passed in (from :class:`~egovlp.train.distributed.DistInfo`); nothing here reads the environment.
Rank 0 logs everything; other ranks log warnings and errors only, prefixed ``[rankN]``, to the console and, with
:func:`add_log_file`, to the same log file (appended line by line), so a rank's skipped-sample warning is on record.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from egovlp.errors import ConfigError

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_DATEFMT = "%H:%M:%S"


class _RankFilter(logging.Filter):
    """Lets records through on rank 0 only (other ranks keep warnings and errors)."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        return self.rank == 0 or record.levelno >= logging.WARNING


def _format(rank: int, datefmt: str) -> logging.Formatter:
    return logging.Formatter(_FORMAT if rank == 0 else f"[rank{rank}] {_FORMAT}", datefmt)


def setup_logging(level: int | str = logging.INFO, log_file: str | Path | None = None, rank: int = 0) -> None:
    """Configure the ``egovlp`` logger: console on stderr, optional file, INFO lines from rank 0 only."""
    logger = logging.getLogger("egovlp")
    logger.setLevel(level)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(_format(rank, _DATEFMT))
    console.addFilter(_RankFilter(rank))
    logger.addHandler(console)
    if log_file is not None:
        add_log_file(log_file, rank)


def add_log_file(log_file: str | Path, rank: int = 0) -> None:
    """Also write the ``egovlp`` log to ``log_file``: everything from rank 0, warnings and errors from other ranks.

    Raises :class:`~egovlp.errors.ConfigError` naming the folder when the file cannot be created.
    """
    path = Path(log_file)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(path)
    except OSError as e:
        raise ConfigError(f"cannot write the log file {path} (folder {path.parent}): {e.strerror or e}") from None
    fh.setFormatter(_format(rank, "%Y-%m-%d %H:%M:%S"))
    fh.addFilter(_RankFilter(rank))
    logging.getLogger("egovlp").addHandler(fh)
