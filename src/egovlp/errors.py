"""Error types for bad user input. Each message names the file, line, key or tensor at fault.

The command line reports these in one line without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class EgovlpError(Exception):
    """Base class of errors caused by the user's input (files, configs, checkpoints, arguments)."""


class ConfigError(EgovlpError, ValueError):
    """A configuration key or value that does not fit the schema."""


class DataError(EgovlpError, ValueError):
    """Malformed data on disk: an annotation row, a JSON field, a video file."""


class VideoReadError(DataError):
    """A video that is missing, truncated or cannot be decoded for the requested time range."""


class CheckpointError(EgovlpError, ValueError):
    """A checkpoint whose keys, shapes or contents do not fit the model."""
