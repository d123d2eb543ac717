"""EK-100 max-margin losses: hand-computed cases, a loop reference, the (N,) weight semantics, gradients."""

from __future__ import annotations

import pytest
import torch

from egovlp.losses import AdaptiveMaxMarginLoss, MaxMarginLoss, adaptive_max_margin_loss, max_margin_loss
from egovlp.losses.egonce import cosine_similarity_matrix


def _loop_reference(s: torch.Tensor, w: torch.Tensor, margin: float) -> float:
    """Definition: for each anchor i and j != i, both directions, weight of anchor i's positive pair."""
    n = s.shape[0]
    terms = []
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            wij = float(w[i]) if w.dim() == 1 else float(w[i, j])
            terms.append(max(0.0, wij * margin - (float(s[i, i]) - float(s[i, j]))))
            terms.append(max(0.0, wij * margin - (float(s[i, i]) - float(s[j, i]))))
    return sum(terms) / len(terms)


def test_hand_computed_two_by_two():
    s = torch.tensor([[0.9, 0.8], [0.1, 0.5]])
    # terms (margin 0.2, w = 1): i=0,j=1: relu(0.2-(0.9-0.8))=0.1, relu(0.2-(0.9-0.1))=0
    #                            i=1,j=0: relu(0.2-(0.5-0.1))=0,   relu(0.2-(0.5-0.8))=0.5
    assert max_margin_loss(s, margin=0.2).item() == pytest.approx(0.6 / 4)
    # w = (0.5, 1): anchor 0's margin shrinks to 0.1 -> first term 0.0
    w = torch.tensor([0.5, 1.0])
    assert adaptive_max_margin_loss(s, w, margin=0.2).item() == pytest.approx(0.5 / 4)


@pytest.mark.parametrize("weight_shape", ["vector", "matrix", "scalar"])
def test_matches_loop(weight_shape):
    gen = torch.Generator().manual_seed(0)
    n = 7
    s = torch.rand(n, n, generator=gen) * 2 - 1
    if weight_shape == "vector":
        w = torch.rand(n, generator=gen)
    elif weight_shape == "matrix":
        w = torch.rand(n, n, generator=gen)
    else:
        w = torch.full((n,), 0.7)
    weight = 0.7 if weight_shape == "scalar" else w
    got = adaptive_max_margin_loss(s, weight, margin=0.3)
    assert got.item() == pytest.approx(_loop_reference(s, w, 0.3), rel=1e-5)


def test_vector_weight_is_matrix_with_rows_repeated():
    gen = torch.Generator().manual_seed(1)
    s, w = torch.rand(5, 5, generator=gen), torch.rand(5, generator=gen)
    torch.testing.assert_close(adaptive_max_margin_loss(s, w), adaptive_max_margin_loss(s, w[:, None].expand(5, 5)))
    torch.testing.assert_close(adaptive_max_margin_loss(s, torch.ones(5)), max_margin_loss(s))


def test_gradients():
    gen = torch.Generator().manual_seed(2)
    s = (torch.rand(6, 6, generator=gen) * 0.4).requires_grad_()
    w = torch.rand(6, generator=gen).requires_grad_()
    loss = adaptive_max_margin_loss(s, w, margin=0.2)
    loss.backward()
    assert torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert w.grad is None  # the relevancy is a constant
    # the diagonal is pushed up, everything else down
    assert (s.grad.diagonal() <= 0).all()
    off = ~torch.eye(6, dtype=torch.bool)
    assert (s.grad[off] >= 0).all()
    # numeric check against finite differences in float64
    s64 = s.detach().double().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: adaptive_max_margin_loss(x, w.detach().double(), 0.2), (s64,))


def test_single_item_is_zero_with_graph():
    s = torch.ones(1, 1, requires_grad=True)
    loss = adaptive_max_margin_loss(s, torch.ones(1))
    assert loss.item() == 0.0 and loss.requires_grad


def test_modules_equal_functions():
    gen = torch.Generator().manual_seed(3)
    text, video, w = torch.randn(4, 8, generator=gen), torch.randn(4, 8, generator=gen), torch.rand(4, generator=gen)
    s = cosine_similarity_matrix(text, video)
    torch.testing.assert_close(AdaptiveMaxMarginLoss(0.2)(text, video, w), adaptive_max_margin_loss(s, w, 0.2))
    torch.testing.assert_close(MaxMarginLoss(0.4)(text, video), max_margin_loss(s, 0.4))


def test_bad_weight_shape():
    with pytest.raises(ValueError, match="relevancy_weight"):
        adaptive_max_margin_loss(torch.rand(3, 3), torch.rand(4))
