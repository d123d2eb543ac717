"""MLM loss: mean over labelled tokens, the global-count scaling, empty batches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from egovlp.losses import IGNORE_INDEX, MLMLoss, global_label_count, mlm_loss


def _batch(b: int, length: int, vocab: int, labelled: float, seed: int):
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, length, vocab, generator=gen, requires_grad=True)
    labels = torch.randint(0, vocab, (b, length), generator=gen)
    labels[torch.rand(b, length, generator=gen) > labelled] = IGNORE_INDEX
    return logits, labels


def test_equals_cross_entropy_mean():
    logits, labels = _batch(3, 7, 11, 0.4, 0)
    expected = F.cross_entropy(logits.reshape(-1, 11), labels.reshape(-1), ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(mlm_loss(logits, labels), expected)
    torch.testing.assert_close(MLMLoss()(logits, labels), expected)


def test_global_count_scaling_reproduces_full_batch_gradient():
    """Two simulated ranks with different label counts: the mean of their gradients is the full-batch gradient."""
    l0, y0 = _batch(2, 6, 9, 0.2, 1)
    l1, y1 = _batch(2, 6, 9, 0.8, 2)
    assert (y0 != IGNORE_INDEX).sum() != (y1 != IGNORE_INDEX).sum()
    count = int((y0 != IGNORE_INDEX).sum() + (y1 != IGNORE_INDEX).sum())
    full = F.cross_entropy(
        torch.cat([l0, l1]).reshape(-1, 9), torch.cat([y0, y1]).reshape(-1), ignore_index=IGNORE_INDEX
    )
    g_full = torch.autograd.grad(full, (l0, l1))
    loss0 = mlm_loss(l0, y0, world_size=2, num_labels_global=count)
    loss1 = mlm_loss(l1, y1, world_size=2, num_labels_global=torch.tensor(count))
    g0 = torch.autograd.grad(loss0, l0)[0] / 2  # DDP averages over 2 ranks
    g1 = torch.autograd.grad(loss1, l1)[0] / 2
    torch.testing.assert_close(g0, g_full[0])
    torch.testing.assert_close(g1, g_full[1])
    torch.testing.assert_close((loss0 + loss1) / 2, full)  # the rank-mean of the values is the global mean


def test_none_count_is_local_mean_for_any_world_size():
    logits, labels = _batch(2, 5, 7, 0.5, 3)
    torch.testing.assert_close(mlm_loss(logits, labels, world_size=4), mlm_loss(logits, labels))


def test_no_labelled_tokens_returns_zero_with_graph():
    logits = torch.randn(2, 3, 5, requires_grad=True)
    labels = torch.full((2, 3), IGNORE_INDEX)
    loss = mlm_loss(logits, labels)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))
    # another rank had labels: still zero here, and no division by zero
    assert mlm_loss(logits, labels, world_size=2, num_labels_global=5).item() == 0.0
    assert mlm_loss(logits, labels, world_size=2, num_labels_global=0).item() == 0.0


def test_global_label_count_single_process():
    labels = torch.tensor([[1, IGNORE_INDEX, 3], [IGNORE_INDEX, IGNORE_INDEX, 2]])
    count = global_label_count(labels)
    assert count.dtype == torch.int64 and count.item() == 3


def test_bad_shapes():
    with pytest.raises(ValueError, match=r"\(B, L, V\)"):
        mlm_loss(torch.randn(2, 3), torch.zeros(2, dtype=torch.long))
