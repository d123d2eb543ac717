"""VTM hard-negative sampling: positives never drawn, half positives, softmax frequencies, row conventions."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F

from egovlp.losses import Replaced, VTMLoss, sample_vtm_pairs, vtm_loss, vtm_negative_probs
from egovlp.losses import vtm as vtm_module


def _random_problem(n: int, seed: int, positive_rate: float = 0.2):
    gen = torch.Generator().manual_seed(seed)
    s = torch.rand(n, n, generator=gen) * 2 - 1
    upper = torch.rand(n, n, generator=gen) < positive_rate
    mask = upper | upper.T | torch.eye(n, dtype=torch.bool)
    return s, mask


def _assert_no_positive_negatives(pairs, mask, rows):
    for slot, i in enumerate(rows.tolist()):
        v, t = int(pairs.video_index[slot]), int(pairs.text_index[slot])
        if pairs.labels[slot] == 1:
            assert v == t == i and pairs.replaced[slot] == Replaced.NONE
        elif pairs.replaced[slot] == Replaced.VIDEO:
            assert t == i and v != i and not mask[i, v], (i, v)
        else:
            assert pairs.replaced[slot] == Replaced.TEXT
            assert v == i and t != i and not mask[t, i], (i, t)


@pytest.mark.parametrize("local_batch", [1, 2, 3, 4, 7, 8])
def test_half_positives_and_global_indices(local_batch):
    n = 3 * local_batch + (1 if local_batch == 1 else 0)
    s, mask = _random_problem(n, 0, positive_rate=0.0)
    gen = torch.Generator().manual_seed(1)
    for rank in range(n // local_batch):
        pairs = sample_vtm_pairs(s, mask, rank, local_batch, generator=gen)
        assert pairs.labels.shape == (local_batch,)
        assert int(pairs.labels.sum()) == local_batch // 2
        rows = torch.arange(rank * local_batch, (rank + 1) * local_batch)
        _assert_no_positive_negatives(pairs, mask, rows)
        assert ((pairs.labels == 1) == (pairs.replaced == Replaced.NONE)).all()


@pytest.mark.parametrize("row_convention", ["albef", "release"])
def test_positive_never_drawn_over_many_draws(row_convention):
    n, b = 24, 8
    s, mask = _random_problem(n, 2, positive_rate=0.3)
    gen = torch.Generator().manual_seed(3)
    seen_video = seen_text = 0
    for trial in range(150):
        rank = trial % (n // b)
        pairs = sample_vtm_pairs(s, mask, rank, b, temperature=0.05, generator=gen, row_convention=row_convention)
        _assert_no_positive_negatives(pairs, mask, torch.arange(rank * b, (rank + 1) * b))
        seen_video += int((pairs.replaced == Replaced.VIDEO).sum())
        seen_text += int((pairs.replaced == Replaced.TEXT).sum())
    assert seen_video > 200 and seen_text > 200  # both sides were exercised


@pytest.mark.parametrize("row_convention", ["albef", "release"])
def test_adversarial_positive_has_by_far_the_highest_similarity(row_convention):
    """Diagonal and EgoNCE positives at +1, everything else at -1: still never drawn (release adds 1e-9 and could)."""
    n = 8
    mask = torch.eye(n, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = mask[2, 3] = mask[3, 2] = True
    s = torch.where(mask, torch.tensor(1.0), torch.tensor(-1.0))
    gen = torch.Generator().manual_seed(4)
    for temperature in (0.05, 1e-4):
        vp, tp = vtm_negative_probs(s, mask, torch.arange(n), temperature, row_convention)
        assert (vp[mask] == 0).all() and (tp[mask] == 0).all()
        torch.testing.assert_close(vp.sum(1), torch.ones(n))
        for _ in range(200):
            pairs = sample_vtm_pairs(s, mask, 0, n, temperature, gen, row_convention)
            _assert_no_positive_negatives(pairs, mask, torch.arange(n))


def test_probabilities_are_masked_softmax():
    n = 6
    s, mask = _random_problem(n, 5)
    rows = torch.arange(n)
    vp, tp = vtm_negative_probs(s, mask, rows, temperature=0.1)
    for i in range(n):
        admissible = ~mask[i] & (torch.arange(n) != i)
        expected_v = torch.zeros(n)
        expected_v[admissible] = F.softmax(s[i, admissible] / 0.1, dim=0)  # text i kept: row S[i, :]
        expected_t = torch.zeros(n)
        expected_t[admissible] = F.softmax(s[admissible, i] / 0.1, dim=0)  # video i kept: column S[:, i]
        torch.testing.assert_close(vp[i], expected_v)
        torch.testing.assert_close(tp[i], expected_t)
    vr, tr = vtm_negative_probs(s, mask, rows, temperature=0.1, row_convention="release")
    torch.testing.assert_close(vr, tp)  # release: the video follows video i's row, the text follows text i's row
    torch.testing.assert_close(tr, vp)


def test_sampling_frequencies_follow_softmax():
    """Pooled chi-square over (item, side, candidate) cells against vtm_negative_probs."""
    n = 6
    s, mask = _random_problem(n, 6, positive_rate=0.15)
    temperature = 0.5
    vp, tp = vtm_negative_probs(s, mask, torch.arange(n), temperature)
    counts = torch.zeros(2, n, n)
    gen = torch.Generator().manual_seed(7)
    for _ in range(1500):
        pairs = sample_vtm_pairs(s, mask, 0, n, temperature, gen)
        for slot in range(n):
            if pairs.replaced[slot] == Replaced.VIDEO:
                counts[0, slot, pairs.video_index[slot]] += 1
            elif pairs.replaced[slot] == Replaced.TEXT:
                counts[1, slot, pairs.text_index[slot]] += 1
    probs = torch.stack([vp, tp])  # (2, n, n)
    totals = counts.sum(dim=2, keepdim=True)
    expected = probs * totals
    assert (counts[probs == 0] == 0).all()
    support = probs > 0
    chi2 = (((counts - expected) ** 2)[support] / expected[support]).sum().item()
    dof = int(support.sum()) - 2 * n
    # mean dof, sd sqrt(2 dof): 5 sd is far in the tail for a correct sampler, tiny next to a wrong one
    assert chi2 < dof + 5 * (2 * dof) ** 0.5, (chi2, dof)
    assert totals.min() > 150


def test_row_conventions_differ_as_documented():
    """Text 0 resembles video 2; video 0 resembles text 3. albef replaces video with 2, release with 3."""
    n = 4
    s = torch.zeros(n, n)
    s[0, 2] = 1.0  # text 0 vs video 2
    s[3, 0] = 1.0  # text 3 vs video 0
    mask = torch.eye(n, dtype=torch.bool)
    gen = torch.Generator().manual_seed(8)
    picks = {
        "albef": {Replaced.VIDEO: set(), Replaced.TEXT: set()},
        "release": {Replaced.VIDEO: set(), Replaced.TEXT: set()},
    }
    for convention, seen in picks.items():
        for _ in range(100):
            pairs = sample_vtm_pairs(s, mask, 0, 1, 1e-3, gen, convention)  # B=1: always a negative
            side = Replaced(int(pairs.replaced[0]))
            seen[side].add(int(pairs.video_index[0] if side == Replaced.VIDEO else pairs.text_index[0]))
    assert picks["albef"] == {Replaced.VIDEO: {2}, Replaced.TEXT: {3}}
    assert picks["release"] == {Replaced.VIDEO: {3}, Replaced.TEXT: {2}}


def test_deterministic_given_generator():
    s, mask = _random_problem(16, 9)
    a = sample_vtm_pairs(s, mask, 1, 8, generator=torch.Generator().manual_seed(10))
    b = sample_vtm_pairs(s, mask, 1, 8, generator=torch.Generator().manual_seed(10))
    c = sample_vtm_pairs(s, mask, 1, 8, generator=torch.Generator().manual_seed(11))
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert any(not torch.equal(x, y) for x, y in zip(a, c))


def test_fallback_when_everything_is_positive(monkeypatch, caplog):
    monkeypatch.setattr(vtm_module, "_fallback_warned", False)
    n = 4
    s, mask = torch.rand(n, n), torch.ones(n, n, dtype=torch.bool)
    with caplog.at_level(logging.WARNING, logger="egovlp.losses.vtm"):
        vp, _ = vtm_negative_probs(s, mask, torch.arange(n))
        pairs = sample_vtm_pairs(s, mask, 0, n, generator=torch.Generator().manual_seed(0))
    expected = (1 - torch.eye(n)) / (n - 1)
    torch.testing.assert_close(vp, expected)
    negative = pairs.labels == 0
    assert (pairs.video_index[negative] != pairs.text_index[negative]).all()  # never the true pair
    assert sum("drawn uniformly" in r.message for r in caplog.records) == 1  # once


@pytest.mark.parametrize("random_fraction", [0.5, 1.0])
def test_random_fraction_mixes_uniform_negatives(random_fraction):
    """A negative follows (1 - f) * softmax + f * uniform over the admissible items; positives still never drawn."""
    n = 6
    s, mask = _random_problem(n, 8, positive_rate=0.15)
    s = s * 4  # a sharp softmax at temperature 0.25 (far from uniform), so the mixture is easy to tell apart
    temperature = 0.25
    vp, tp = vtm_negative_probs(s, mask, torch.arange(n), temperature)
    admissible = ~(mask | mask.T)  # (n, n) [item, candidate]; the diagonal is in the mask
    uniform = admissible.float() / admissible.float().sum(dim=1, keepdim=True)
    probs = torch.stack([vp, tp]) * (1 - random_fraction) + random_fraction * uniform  # (2, n, n)
    counts = torch.zeros(2, n, n)
    gen = torch.Generator().manual_seed(9)
    for _ in range(1500):
        pairs = sample_vtm_pairs(s, mask, 0, n, temperature, gen, random_fraction=random_fraction)
        _assert_no_positive_negatives(pairs, mask, torch.arange(n))
        for slot in range(n):
            side, index = (0, pairs.video_index) if pairs.replaced[slot] == Replaced.VIDEO else (1, pairs.text_index)
            if pairs.labels[slot] == 0:
                counts[side, slot, index[slot]] += 1
    totals = counts.sum(dim=2, keepdim=True)
    expected = probs * totals
    support = probs > 0
    chi2 = (((counts - expected) ** 2)[support] / expected[support]).sum().item()
    dof = int(support.sum()) - 2 * n
    assert chi2 < dof + 5 * (2 * dof) ** 0.5, (chi2, dof)
    hard = torch.stack([vp, tp]) * totals  # the all-hard sampler's expectation is far off
    chi2_hard = (((counts - hard) ** 2)[hard > 0] / hard[hard > 0]).sum().item()
    assert chi2_hard > 10 * chi2, (chi2_hard, chi2)


def test_errors():
    s, mask = torch.rand(1, 1), torch.ones(1, 1, dtype=torch.bool)
    with pytest.raises(ValueError, match="at least 2 items"):
        sample_vtm_pairs(s, mask, 0, 1)
    s, mask = torch.rand(4, 4), torch.eye(4, dtype=torch.bool)
    with pytest.raises(ValueError, match="needs rows"):
        sample_vtm_pairs(s, mask, 2, 2)
    with pytest.raises(ValueError, match="bool"):
        sample_vtm_pairs(s, mask.float(), 0, 2)
    with pytest.raises(ValueError, match="row_convention"):
        sample_vtm_pairs(s, mask, 0, 2, row_convention="blip")
    with pytest.raises(ValueError, match="random_fraction"):
        sample_vtm_pairs(s, mask, 0, 2, random_fraction=1.5)


def test_vtm_loss():
    gen = torch.Generator().manual_seed(12)
    logits, labels = torch.randn(6, 2, generator=gen), torch.tensor([1, 0, 1, 0, 0, 1])
    torch.testing.assert_close(vtm_loss(logits, labels), F.cross_entropy(logits, labels))
    torch.testing.assert_close(VTMLoss()(logits, labels), F.cross_entropy(logits, labels))
    # unequal batches: rank 0 has 6 pairs, rank 1 has 2 -> weights of the global mean over 8
    expected = F.cross_entropy(logits, labels, reduction="sum") * 2 / 8
    torch.testing.assert_close(vtm_loss(logits, labels, world_size=2, num_pairs_global=8), expected)
    with pytest.raises(ValueError):
        vtm_loss(torch.randn(3, 3), torch.zeros(3))
