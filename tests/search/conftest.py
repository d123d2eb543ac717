"""Search fixtures: two Charades-Ego files and one chunked video of the session's synthetic world, a tiny EgoVLPv2
(with fusion) and a tiny dual-only model saved as weight files, and an index built once from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from egovlp.config import load_config
from egovlp.models import get_model_config
from egovlp.models.model import EgoVLPv2
from egovlp.models.registry import create_model
from egovlp.models.weights import load_model, save_weights
from egovlp.search import IndexConfig, build_index

TINY = "egovlpv2-tiny-smallproj"  # fusion + VTM head
DUAL_ONLY = "egovlp-tiny"  # the EgoVLP (v1) family: no fusion


@pytest.fixture(scope="session")
def videos(small_world) -> list[Path]:
    """Two 10 s files and one 40 s chunked video (``<root>/<uid>/<k>.mp4``, 15 s chunks)."""
    files = sorted((small_world["charades"] / "videos").glob("*.mp4"))[:2]
    chunked = sorted(p for p in small_world["videos"].iterdir() if p.is_dir())[0]
    return [*files, chunked]


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_weights(EgoVLPv2(get_model_config(TINY)), tmp_path_factory.mktemp("w") / "tiny.safetensors")


@pytest.fixture(scope="session")
def other_weights(tmp_path_factory) -> Path:
    torch.manual_seed(1)
    return save_weights(EgoVLPv2(get_model_config(TINY)), tmp_path_factory.mktemp("w") / "other.safetensors")


@pytest.fixture(scope="session")
def dual_weights(tmp_path_factory) -> Path:
    torch.manual_seed(2)
    return save_weights(create_model(get_model_config(DUAL_ONLY)), tmp_path_factory.mktemp("w") / "dual.safetensors")


@pytest.fixture(scope="session")
def model(weights):
    return load_model(weights, num_frames=4)


def index_config(out: Path, checkpoint: Path, tokenizer: Path | str = "", *overrides: str) -> IndexConfig:
    return load_config(
        IndexConfig, None,
        [f"checkpoint={checkpoint}", f"out_dir={out}", f"tokenizer={tokenizer}", "progress=false", "batch_size=8",
         *overrides],
    )  # fmt: skip


@pytest.fixture(scope="session")
def built(tmp_path_factory, videos, weights, model, small_world):
    """An index of all three videos (exact), built once: ``(folder, result)``."""
    out = tmp_path_factory.mktemp("index") / "idx"
    result = build_index(index_config(out, weights, small_world["tokenizer"]), [str(v) for v in videos], model)
    return out, result
