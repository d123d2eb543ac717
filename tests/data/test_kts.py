"""KTS: the dynamic program equals a brute force over all change-point sets; recovery; the length limit."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from egovlp.data.kts import kts, kts_from_kernel, normalized_kernel, segment_scatter, segments


def _brute_force(kernel: np.ndarray, m: int, max_len: int | None = None) -> tuple[float, tuple[int, ...]]:
    n = kernel.shape[0]
    best: tuple[float, tuple[int, ...]] = (math.inf, ())
    for cps in itertools.combinations(range(1, n), m):
        segs = segments(cps, n)
        if max_len is not None and any(e - s > max_len for s, e in segs):
            continue
        cost = sum(segment_scatter(kernel, s, e) for s, e in segs)
        if cost < best[0] - 1e-12:
            best = (cost, cps)
    return best


def test_scatter_is_distance_to_mean():
    x = np.random.default_rng(0).normal(size=(5, 3))
    k = x @ x.T
    assert segment_scatter(k, 1, 4) == pytest.approx(((x[1:4] - x[1:4].mean(0)) ** 2).sum())


@pytest.mark.parametrize("seed", range(4))
def test_dp_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 9
    k = normalized_kernel(rng.normal(size=(n, 4)))
    for max_len in (None, 4):
        res = kts_from_kernel(k, max_changes=5, max_segment_len=max_len)
        for m in range(6):
            cost, cps = _brute_force(k, m, max_len)
            if math.isinf(cost):
                assert math.isinf(res.costs[m])
                continue
            assert res.costs[m] == pytest.approx(cost, abs=1e-9)
            got = sum(segment_scatter(k, s, e) for s, e in segments(res.change_points[m], n))
            assert got == pytest.approx(cost, abs=1e-9)  # the returned change points achieve the optimum
            assert res.change_points[m] == cps  # random features: the optimum is unique


def test_penalised_choice():
    rng = np.random.default_rng(1)
    k = normalized_kernel(rng.normal(size=(12, 3)))
    res = kts_from_kernel(k, max_changes=6)
    n = 12
    hand = [res.costs[0] / n] + [res.costs[m] / n + m / (2 * n) * (math.log(n / m) + 1) for m in range(1, 7)]
    np.testing.assert_allclose(res.objective, hand)
    assert res.best == int(np.argmin(hand))


def test_piecewise_constant_recovers_change_points():
    rng = np.random.default_rng(2)
    bounds = [0, 7, 19, 26, 40]
    levels = rng.normal(size=(len(bounds) - 1, 16))
    x = np.concatenate([np.repeat(levels[i : i + 1], bounds[i + 1] - bounds[i], 0) for i in range(len(bounds) - 1)])
    x = x + 0.05 * rng.normal(size=x.shape)
    assert kts(x, max_changes=10) == (7, 19, 26)
    assert kts(torch.from_numpy(x).float(), max_changes=10) == (7, 19, 26)  # tensors accepted


def test_constant_signal_has_no_change():
    x = np.ones((20, 4)) + 1e-3 * np.random.default_rng(3).normal(size=(20, 4))
    assert kts(x, max_changes=5) == ()


def test_segment_length_limit():
    rng = np.random.default_rng(4)
    x = np.concatenate([np.repeat(rng.normal(size=(1, 8)), 30, 0), np.repeat(rng.normal(size=(1, 8)), 10, 0)])
    assert kts(x, max_changes=8) == (30,)
    cps = kts(x, max_changes=8, max_segment_len=12)
    assert all(e - s <= 12 for s, e in segments(cps, 40))
    assert 30 in cps  # the true change survives the extra cuts
    with pytest.raises(ValueError, match="do not fit"):
        kts(x, max_changes=2, max_segment_len=12)


def test_short_sequences():
    assert kts(np.ones((1, 3)), max_changes=4) == ()
    res = kts_from_kernel(np.eye(3), max_changes=9)  # at most one segment per shot
    assert len(res.costs) == 3 and res.change_points[2] == (1, 2) and res.costs[2] == 0


def test_segments():
    assert segments((2, 5), 7) == [(0, 2), (2, 5), (5, 7)]
    assert segments((), 3) == [(0, 3)]
