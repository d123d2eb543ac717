"""Fixtures of the downstream-task tests: the session's synthetic world (with its EK-100 and Charades-Ego sets, on
by default in SynthConfig) and a tiny random EgoVLPv2 saved as an egovlp weight file."""

from __future__ import annotations

import pytest
import torch

from egovlp.models import get_model_config
from egovlp.models.model import EgoVLPv2
from egovlp.models.weights import save_weights

TINY = "egovlpv2-tiny-smallproj"  # 256-d-projector family (as the EK-100 / Charades checkpoints), with fusion + VTM


@pytest.fixture(scope="session")
def world(small_world):
    """The root session world; its epic/ and charades/ sets are what these tests read."""
    assert "epic" in small_world.files and "charades" in small_world.files
    return small_world


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """``tiny.safetensors``: a seeded random tiny model (4 frames, 32 px)."""
    torch.manual_seed(0)
    return save_weights(EgoVLPv2(get_model_config(TINY)), tmp_path_factory.mktemp("weights") / "tiny.safetensors")


def epic_paths(world) -> list[str]:
    return [f"data.annotation_dir={world['epic']}", f"data.video_root={world['epic'] / 'videos'}",
            f"data.tokenizer={world['tokenizer']}"]  # fmt: skip


def charades_paths(world) -> list[str]:
    return [f"data.annotation_dir={world['charades']}", f"data.video_root={world['charades'] / 'videos'}",
            f"data.tokenizer={world['tokenizer']}"]  # fmt: skip
