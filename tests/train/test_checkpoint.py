import random

import numpy as np
import pytest
import torch

from egovlp.errors import CheckpointError
from egovlp.models import create_model
from egovlp.train.checkpoint import latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state


def test_checkpoints_are_atomic_pruned_and_reloadable(tmp_path):
    model = create_model("egovlpv2-tiny")
    opt = torch.optim.AdamW(model.parameters())
    model(torch.randn(1, 4, 3, 32, 32))[0].sum().backward()
    opt.step()
    for step in (1, 2, 3):
        save_checkpoint(
            tmp_path, step, model, {"optimizer": opt.state_dict(), "epoch": 0, "rng": [rng_state()]}, keep_last=2
        )
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "latest",
        "step_00000002",
        "step_00000003",
    ]
    assert not list(tmp_path.glob(".*tmp*"))
    assert latest_checkpoint(tmp_path).name == "step_00000003"
    other = create_model("egovlpv2-tiny")
    state = load_checkpoint(tmp_path / "step_00000003", other)
    for (n, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        torch.testing.assert_close(a, b, msg=n)
    opt2 = torch.optim.AdamW(other.parameters())
    opt2.load_state_dict(state["optimizer"])
    assert state["step"] == 3


def test_incomplete_checkpoint_is_ignored_and_refused(tmp_path):
    (tmp_path / "step_00000009").mkdir()  # e.g. a copy interrupted by hand
    assert latest_checkpoint(tmp_path) is None
    with pytest.raises(CheckpointError, match="not a complete training checkpoint"):
        load_checkpoint(tmp_path / "step_00000009", create_model("egovlpv2-tiny"))


def test_rng_state_round_trip():
    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
