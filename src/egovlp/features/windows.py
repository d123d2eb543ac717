"""Sliding windows over a span of a video: where each window starts and ends, and which frames it samples.

A window is ``size`` long and windows start every ``stride``, both in source frames (at the video's frame rate) or
in seconds. Inside a window ``num_frames`` frames are sampled at the middles of ``num_frames`` equal segments
(:func:`~egovlp.data.sampling.sample_times`, ``"uniform"``), so a 16-frame window with 16 model frames takes every
frame once and a 16-frame window with 4 model frames takes every 4th frame.

The release's Ego4D features (NLQ and MQ) are windows of 16 frames at 30 fps with stride 16 (non-overlapping):
``fps / stride = 30 / 16 = 1.875`` features per second, 4 model frames per window for NLQ and 16 for MQ.

The last window (``last``):

* ``"drop"``: only whole windows (the release truncates the frames to a multiple of the window); a span shorter than
  one window gives no window.
* ``"pad"``: one more window at the next stride (if that starts before the end) reaching past the end; its frames
  past the end repeat the last frame, and its recorded end is the span's end.
* ``"shift"``: that extra window is moved back to end exactly at the span's end (it overlaps its predecessor); a span
  shorter than one window gives one padded window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from egovlp.data.sampling import sample_times
from egovlp.errors import ConfigError

__all__ = ["LAST_MODES", "UNITS", "WindowConfig", "WindowPlan", "count_windows", "plan_windows", "window_seconds"]

UNITS = ("frames", "seconds")
LAST_MODES = ("drop", "pad", "shift")
_EPS = 1e-6  # seconds: spans that are whole windows up to rounding count as whole


@dataclass(frozen=True)
class WindowConfig:
    """Sliding windows (see the module docstring). The defaults are the release's MQ windows."""

    num_frames: int = 16  # frames sampled per window (the model's frame count)
    size: float = 16.0  # window length, in `unit`
    stride: float = 16.0  # step between window starts, in `unit`
    unit: str = "frames"  # "frames" (source frames at `fps`) or "seconds"
    last: str = "pad"  # the last, partial window: "drop" (release) | "pad" | "shift"
    fps: float = 0.0  # frame rate for unit=frames; 0 = the file's own (the release assumes 30)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for impossible settings."""
        checks = [
            (self.num_frames >= 1, f"window.num_frames must be >= 1, got {self.num_frames}"),
            (self.size > 0, f"window.size must be > 0, got {self.size}"),
            (self.stride > 0, f"window.stride must be > 0, got {self.stride}"),
            (self.unit in UNITS, f"window.unit must be one of {UNITS}, got {self.unit!r}"),
            (self.last in LAST_MODES, f"window.last must be one of {LAST_MODES}, got {self.last!r}"),
            (self.fps >= 0, f"window.fps must be >= 0 (0: the file's own), got {self.fps}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)


@dataclass(frozen=True)
class WindowPlan:
    """The windows of one span. Times are seconds; ``start``/``end`` are relative to the span's start."""

    start: np.ndarray  # (N,) float64, window starts relative to the span start
    end: np.ndarray  # (N,) float64, window ends (clipped to the span) relative to the span start
    times: np.ndarray  # (N, F) float64, frame times to read, in the file's (or video's) time
    offset: float  # the span's start in the file's time
    duration: float  # the span's length
    fps: float  # frame rate the plan was made with
    features_per_second: float  # 1 / stride in seconds

    @property
    def num_windows(self) -> int:
        return int(self.start.shape[0])


def window_seconds(cfg: WindowConfig, fps: float) -> tuple[float, float]:
    """``(size, stride)`` in seconds; ``fps`` (the file's) is used for unit=frames unless ``cfg.fps`` is set."""
    if cfg.unit == "seconds":
        return float(cfg.size), float(cfg.stride)
    rate = cfg.fps or fps
    if not rate or rate <= 0:
        raise ConfigError("window.unit=frames needs a frame rate: the file has none, set window.fps")
    return cfg.size / rate, cfg.stride / rate


def count_windows(duration: float, size: float, stride: float, last: str) -> int:
    """How many windows of ``size`` every ``stride`` seconds a span of ``duration`` seconds gets."""
    if duration <= _EPS:
        return 0 if last == "drop" else 1
    if duration + _EPS < size:  # shorter than one window
        return 0 if last == "drop" else 1
    whole = math.floor((duration - size) / stride + _EPS) + 1
    if last == "drop":
        return whole
    # pad / shift: the smallest n whose last window reaches the end, counting only windows that start before it
    reach = math.ceil((duration - size) / stride - _EPS) + 1
    return max(1, min(reach, math.ceil(duration / stride - _EPS)))


def plan_windows(span_start: float, span_end: float, fps: float, cfg: WindowConfig) -> WindowPlan:
    """The windows over ``[span_start, span_end]`` seconds of a video whose frame rate is ``fps``.

    Frame times are clamped into the span (at most half a frame before its end, which still shows the last frame),
    so a padded window repeats the last frame.
    """
    cfg.validate()
    duration = max(float(span_end) - float(span_start), 0.0)
    size, stride = window_seconds(cfg, fps)
    n = count_windows(duration, size, stride, cfg.last)
    start = np.arange(n, dtype=np.float64) * stride
    if cfg.last == "shift" and n > 0 and start[-1] + size > duration + _EPS:
        start[-1] = max(duration - size, 0.0)
    end = np.minimum(start + size, duration)
    times = np.stack([sample_times(s, s + size, cfg.num_frames, "uniform") for s in start]) if n else np.zeros((0, 1))
    rate = cfg.fps or fps
    last_time = duration - (0.5 / rate if rate and rate > 0 else 0.0)
    times = np.clip(times, 0.0, max(last_time, 0.0)) + float(span_start)
    return WindowPlan(
        start=start,
        end=end,
        times=times.reshape(n, cfg.num_frames),
        offset=float(span_start),
        duration=duration,
        fps=float(rate or 0.0),
        features_per_second=1.0 / stride,
    )
