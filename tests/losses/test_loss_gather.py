"""Single-process behaviour of the gather helpers (the multi-process checks are in test_loss_distributed.py)."""

from __future__ import annotations

import pytest
import torch

from egovlp.losses import GatherGrad, all_gather, all_gather_nograd, world_info


def test_world_info_without_distributed():
    assert world_info() == (0, 1)


@pytest.mark.parametrize("grad", list(GatherGrad))
def test_gather_is_identity_when_not_distributed(grad):
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather(x, grad) is x
    y = torch.arange(4)
    assert all_gather_nograd(y) is y


def test_gather_grad_spellings():
    assert GatherGrad("release") is GatherGrad.LOCAL
    assert GatherGrad("LOCAL") is GatherGrad.LOCAL
    assert GatherGrad("full") is GatherGrad.FULL
    with pytest.raises(ValueError):
        GatherGrad("sum")
