"""The one policy for unreadable samples that every dataset shares: raise, or skip (log, count, return None).

``bad_input="raise"`` lets the :class:`~egovlp.errors.VideoReadError` (which names the file and the time range)
propagate; ``"skip"`` logs it, counts it in :attr:`BadInputPolicy.num_skipped` (per process) and returns None, which
the collates drop and count in the batch's ``num_skipped`` (training replaces the item deterministically instead,
see :class:`~egovlp.train.datasets.TrainingDataset`). A black frame is never substituted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from egovlp.errors import VideoReadError

log = logging.getLogger(__name__)

__all__ = ["BAD_INPUT_MODES", "BadInputPolicy", "check_bad_input"]

BAD_INPUT_MODES = ("raise", "skip")
T = TypeVar("T")


def check_bad_input(mode: str) -> str:
    """``mode`` if it is one of :data:`BAD_INPUT_MODES`, else ValueError."""
    if mode not in BAD_INPUT_MODES:
        raise ValueError(f"bad_input must be one of {BAD_INPUT_MODES}, got {mode!r}")
    return mode


class BadInputPolicy:
    """Applies ``bad_input`` to loads that may raise :class:`VideoReadError`; counts what it skipped."""

    def __init__(self, mode: str) -> None:
        self.mode = check_bad_input(mode)
        self.num_skipped = 0

    def load(self, load: Callable[[], T], what: str) -> T | None:
        """``load()``, or None (logged and counted) when it raises VideoReadError under ``"skip"``."""
        try:
            return load()
        except VideoReadError as e:
            if self.mode == "raise":
                raise
            self.num_skipped += 1
            log.warning("skipping %s (%d skipped so far in this process): %s", what, self.num_skipped, e)
            return None
