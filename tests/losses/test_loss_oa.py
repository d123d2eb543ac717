"""OA-Trans losses against naive loops: the four-stream contrast, the masked NormSoftmax, box and tag pooling."""

from __future__ import annotations

import math

import pytest
import torch

from egovlp.losses.oa import (
    masked_nce,
    mean_over_objects,
    oa_four_stream_loss,
    object_region_features,
    tag_span_features,
)


def naive_nce(a: torch.Tensor, b: torch.Tensor, tau: float = 0.05) -> float:
    """-(1/N) sum_i log softmax_j(cos(a_i, b_j)/tau)[i] - (1/N) sum_j log softmax_i(cos(a_i, b_j)/tau)[j]."""
    n = len(a)
    cos = [[float(torch.dot(a[i], b[j]) / (a[i].norm() * b[j].norm())) / tau for j in range(n)] for i in range(n)]
    rows = sum(math.log(sum(math.exp(x) for x in cos[i])) - cos[i][i] for i in range(n)) / n
    cols = sum(math.log(sum(math.exp(cos[i][j]) for i in range(n))) - cos[j][j] for j in range(n)) / n
    return rows + cols


def test_four_stream_loss_equals_a_loop():
    g = torch.Generator().manual_seed(0)
    video, text, tags, anchor = (torch.randn(7, 5, generator=g, dtype=torch.float64) for _ in range(4))
    has = torch.tensor([1, 1, 0, 1, 0, 1, 1], dtype=torch.bool)
    out = oa_four_stream_loss(video, text, tags, anchor, has, weights=(1.0, 0.5, 2.0))
    keep = has.nonzero().flatten()
    vt = naive_nce(text, video)
    vtag = naive_nce(tags[keep], video[keep])
    at = naive_nce(text[keep], anchor[keep])
    assert float(out.terms["video_text"]) == pytest.approx(vt, rel=1e-9)
    assert float(out.terms["video_tags"]) == pytest.approx(vtag, rel=1e-9)
    assert float(out.terms["anchor_text"]) == pytest.approx(at, rel=1e-9)
    assert float(out.loss) == pytest.approx(vt + 0.5 * vtag + 2.0 * at, rel=1e-9)


def test_video_text_term_takes_egonce_positives():
    g = torch.Generator().manual_seed(1)
    video, text = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    tags = torch.eye(4)[[0, 0, 1, 2]]  # items 0 and 1 share verb and noun
    has = torch.ones(4, dtype=torch.bool)
    plain = oa_four_stream_loss(video, text, text, video, has)
    ego = oa_four_stream_loss(video, text, text, video, has, verb=tags, noun=tags, vt_positives="verb_and_noun")
    assert float(ego.terms["video_text"]) < float(plain.terms["video_text"])
    assert float(ego.terms["video_tags"]) == float(plain.terms["video_tags"])  # object terms stay NormSoftmax


def test_masked_nce_without_two_rows_is_zero_and_keeps_the_graph():
    a = torch.randn(3, 4, requires_grad=True)
    b = torch.randn(3, 4, requires_grad=True)
    for keep in ([0, 0, 0], [0, 1, 0]):
        loss = masked_nce(a, b, torch.tensor(keep, dtype=torch.bool))
        assert float(loss.detach()) == 0.0
        loss.backward()
        assert a.grad is not None and float(a.grad.abs().sum()) == 0.0


def test_region_and_tag_pooling_equal_loops():
    g = torch.Generator().manual_seed(2)
    n, k, grid, d, length = 2, 3, 4, 5, 6
    patches = torch.randn(n, grid * grid, d, generator=g)
    masks = torch.rand(n, k, grid, grid, generator=g) > 0.6
    states = torch.randn(n, length, d, generator=g)
    spans = torch.rand(n, k, length, generator=g) > 0.5
    valid = torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool)
    region, tag = object_region_features(patches, masks), tag_span_features(states, spans)
    for i in range(n):
        for o in range(k):
            expected = sum((patches[i, r * grid + c] for r in range(grid) for c in range(grid) if masks[i, o, r, c]),
                           torch.zeros(d))  # fmt: skip
            torch.testing.assert_close(region[i, o], expected)
            expected = sum((states[i, p] for p in range(length) if spans[i, o, p]), torch.zeros(d))
            torch.testing.assert_close(tag[i, o], expected)
    mean = mean_over_objects(region, valid)
    torch.testing.assert_close(mean[0], (region[0, 0] + region[0, 1]) / 2)
    torch.testing.assert_close(mean[1], torch.zeros(d))
