"""The chunked layout's chunk length is read from chunks.json (source.chunk_seconds=0, the default), and a folder
whose manifest holds no features yet takes new settings."""

from __future__ import annotations

import shutil

import pytest
import torch

from egovlp.data.video_io import write_chunks_file
from egovlp.errors import ConfigError, VideoReadError
from egovlp.features import extract_features
from egovlp.features.store import read_manifest
from egovlp.models.weights import load_model

from .helpers import make_config


@pytest.fixture
def chunked(fx, tmp_path):
    root = tmp_path / "chunked"
    shutil.copytree(fx.chunked, root)
    return root


def _run(fx, out, *overrides):
    cfg = make_config(fx, out, *overrides)
    return extract_features(cfg, load_model(cfg.checkpoint), None, torch.device("cpu"), 0, 1, lambda x: [x])


def test_chunks_json_gives_the_chunk_length(fx, chunked, tmp_path):
    write_chunks_file(chunked, 4.0)
    result = _run(fx, tmp_path / "out", f"source.chunked_root={chunked}", f"source.uids={fx.uids}")
    assert result.extracted and not result.failed
    with pytest.raises(ConfigError, match=r"source.chunk_seconds: .*chunk length looks wrong.*600"):
        _run(fx, tmp_path / "out2", f"source.chunked_root={chunked}", f"source.uids={fx.uids}",
             "source.chunk_seconds=600")  # fmt: skip


def test_a_manifest_without_features_takes_new_settings(fx, chunked, tmp_path):
    out = tmp_path / "out"
    args = (f"source.chunked_root={chunked}", f"source.uids={fx.uids}")
    with pytest.raises(VideoReadError, match="no video could be read"):  # the wrong chunk length: nothing read
        _run(fx, out, *args, "source.chunk_seconds=600", "on_error=skip")
    assert read_manifest(out) is not None and not read_manifest(out)["videos"]
    assert _run(fx, out, *args, "source.chunk_seconds=4").extracted  # other settings: nothing to mix them with
