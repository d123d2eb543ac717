"""Logging set-up shared by the command-line tools: readable console lines, an optional log file, rank-0 only."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_DATEFMT = "%H:%M:%S"


class _RankFilter(logging.Filter):
    """Lets records through on rank 0 only (other ranks keep warnings and errors)."""

    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        return self.rank == 0 or record.levelno >= logging.WARNING


def setup_logging(level: int | str = logging.INFO, log_file: str | Path | None = None, rank: int | None = None) -> None:
    """Configure the ``egovlp`` logger: console on stderr, optional file, INFO lines from rank 0 only."""
    if rank is None:
        rank = int(os.environ.get("RANK", "0"))
    logger = logging.getLogger("egovlp")
    logger.setLevel(level)
    logger.propagate = False
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    fmt = logging.Formatter(_FORMAT if rank == 0 else f"[rank{rank}] {_FORMAT}", _DATEFMT)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(fmt)
    console.addFilter(_RankFilter(rank))
    logger.addHandler(console)
    if log_file is not None and rank == 0:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file)
        fh.setFormatter(logging.Formatter(_FORMAT, "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(fh)


def add_log_file(log_file: str | Path) -> None:
    """Also write the ``egovlp`` log to ``log_file`` (rank 0 only), keeping the console handler."""
    if int(os.environ.get("RANK", "0")) != 0:
        return
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    fh = logging.FileHandler(log_file)
    fh.setFormatter(logging.Formatter(_FORMAT, "%Y-%m-%d %H:%M:%S"))
    logging.getLogger("egovlp").addHandler(fh)
