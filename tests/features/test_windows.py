"""Window planning: hand-computed windows, the last window, frame times, features per second."""

import math

import numpy as np
import pytest

from egovlp.errors import ConfigError
from egovlp.features.windows import WindowConfig, count_windows, plan_windows, window_seconds

RELEASE_MQ = WindowConfig(num_frames=16, size=16, stride=16, unit="frames", last="drop")
RELEASE_NLQ = WindowConfig(num_frames=4, size=16, stride=16, unit="frames", last="drop")


def test_release_windows_are_1_875_per_second_at_30_fps():
    assert window_seconds(RELEASE_MQ, 30.0) == pytest.approx((16 / 30, 16 / 30))
    plan = plan_windows(0.0, 2.0, 30.0, RELEASE_MQ)  # 60 frames: 3 whole windows of 16
    assert plan.features_per_second == pytest.approx(1.875)
    np.testing.assert_allclose(plan.start, [0, 16 / 30, 32 / 30])
    np.testing.assert_allclose(plan.end, [16 / 30, 32 / 30, 48 / 30])
    # 16 model frames over 16 source frames: frame k is sampled at the middle of its display interval
    np.testing.assert_allclose(plan.times[1], (16 + np.arange(16) + 0.5) / 30)
    assert plan.times.shape == (3, 16)


def test_four_model_frames_take_every_fourth_frame():
    plan = plan_windows(0.0, 2.0, 30.0, RELEASE_NLQ)
    frames = np.floor(plan.times * 30).astype(int)  # the frame shown at each time
    np.testing.assert_array_equal(frames, [[2, 6, 10, 14], [18, 22, 26, 30], [34, 38, 42, 46]])


@pytest.mark.parametrize(
    ("last", "starts", "ends"),
    [
        ("drop", [0, 16, 32], [16, 32, 48]),
        ("pad", [0, 16, 32, 48], [16, 32, 48, 60]),
        ("shift", [0, 16, 32, 44], [16, 32, 48, 60]),
    ],
)
def test_last_window(last, starts, ends):
    cfg = WindowConfig(num_frames=4, size=16, stride=16, unit="frames", last=last)
    plan = plan_windows(0.0, 2.0, 30.0, cfg)  # 60 frames
    np.testing.assert_allclose(plan.start * 30, starts, atol=1e-9)
    np.testing.assert_allclose(plan.end * 30, ends, atol=1e-9)
    assert plan.times.max() < 2.0  # never past the span: a padded window repeats the last frame
    if last == "pad":
        assert np.floor(plan.times[-1] * 30).astype(int).tolist() == [50, 54, 58, 59]  # 62 -> 59, the last frame


def test_span_shorter_than_a_window():
    for last, n in (("drop", 0), ("pad", 1), ("shift", 1)):
        cfg = WindowConfig(num_frames=4, size=16, stride=16, last=last)
        plan = plan_windows(3.0, 3.3, 30.0, cfg)
        assert plan.num_windows == n and plan.times.shape == (n, 4)
        if n:
            assert plan.start.tolist() == [0.0] and plan.end.tolist() == pytest.approx([0.3])
            assert plan.times.min() >= 3.0 and plan.times.max() < 3.3


def test_span_offset_and_seconds_with_overlap():
    cfg = WindowConfig(num_frames=2, size=4.0, stride=2.0, unit="seconds", last="drop")
    plan = plan_windows(10.0, 19.0, 25.0, cfg)  # 9 s: windows at 0, 2, 4 (the next one, 6-10, is partial)
    np.testing.assert_allclose(plan.start, [0, 2, 4])
    np.testing.assert_allclose(plan.times, [[11, 13], [13, 15], [15, 17]])  # video time, not span time
    assert plan.offset == 10.0 and plan.duration == 9.0 and plan.features_per_second == 0.5
    pad = plan_windows(10.0, 19.0, 25.0, WindowConfig(num_frames=2, size=4.0, stride=2.0, unit="seconds", last="pad"))
    np.testing.assert_allclose(pad.start, [0, 2, 4, 6])
    assert pad.end[-1] == 9.0


def test_fixed_fps_overrides_the_file():
    cfg = WindowConfig(size=16, stride=8, fps=30.0)
    assert window_seconds(cfg, 25.0) == pytest.approx((16 / 30, 8 / 30))
    assert window_seconds(WindowConfig(size=16, stride=8), 25.0) == pytest.approx((16 / 25, 8 / 25))


def test_whole_windows_survive_float_rounding():
    # 64 frames at 10 fps with 16-frame windows: exactly 4 windows, whatever the rounding of 6.4 / 1.6
    assert count_windows(6.4, 1.6, 1.6, "drop") == 4
    assert count_windows(6.4, 1.6, 1.6, "pad") == 4
    assert count_windows(64 / 30, 16 / 30, 16 / 30, "pad") == 4


def _reference_count(duration: float, size: float, stride: float, last: str) -> int:
    """Count by walking the starts one by one."""
    starts, s = [], 0.0
    while s + size <= duration + 1e-9:
        starts.append(s)
        s = len(starts) * stride
    if last == "drop":
        return len(starts)
    if not starts:
        return 1
    if starts[-1] + size < duration - 1e-9 and len(starts) * stride < duration - 1e-9:
        return len(starts) + 1
    return len(starts)


def test_count_matches_a_walk_over_starts():
    rng = np.random.default_rng(0)
    for _ in range(500):
        duration = float(rng.uniform(0.01, 30))
        size = float(rng.choice([0.5, 1.0, 16 / 30, 2.5]))
        stride = float(rng.choice([size, size / 2, size * 2, 16 / 30]))
        for last in ("drop", "pad"):
            got = count_windows(duration, size, stride, last)
            assert got == _reference_count(duration, size, stride, last), (duration, size, stride, last)
        if stride <= size:  # windows cover the span without gaps: pad reaches the end
            n = count_windows(duration, size, stride, "pad")
            assert (n - 1) * stride + size >= duration - 1e-9
            assert n == 1 or (n - 2) * stride + size < duration
    assert math.isclose(count_windows(0.0, 1.0, 1.0, "pad"), 1)


@pytest.mark.parametrize(
    ("field", "value"), [("unit", "minutes"), ("last", "wrap"), ("size", 0), ("stride", -1), ("num_frames", 0)]
)
def test_invalid_settings(field, value):
    with pytest.raises(ConfigError, match=f"window.{field}"):
        plan_windows(0, 1, 30, WindowConfig(**{field: value}))


def test_frames_unit_needs_a_rate():
    with pytest.raises(ConfigError, match="window.fps"):
        plan_windows(0, 1, 0.0, WindowConfig())
