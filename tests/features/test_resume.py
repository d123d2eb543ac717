"""Resumability: finished files are skipped, missing ones re-made, temporary files of killed writes ignored."""

import json

import numpy as np
import pytest

from egovlp.errors import ConfigError
from egovlp.features import extract_features, read_features, read_manifest

from .helpers import make_config


@pytest.fixture
def first_run(fx, tiny, tmp_path):
    cfg = make_config(fx, tmp_path)
    result = extract_features(cfg, tiny)
    assert sorted(result.extracted) == ["a", "sub/b"]
    return cfg


def _mtimes(out):
    return {p.relative_to(out).as_posix(): p.stat().st_mtime_ns for p in out.rglob("*.safetensors")}


def test_second_run_skips_everything(first_run, tiny, tmp_path):
    before = _mtimes(tmp_path)
    result = extract_features(first_run, tiny)
    assert result.extracted == [] and sorted(result.skipped) == ["a", "sub/b"]
    assert _mtimes(tmp_path) == before
    manifest = read_manifest(tmp_path)
    assert sorted(manifest["videos"]) == ["a", "sub/b"] and manifest["complete"] is True


def test_deleted_output_is_remade_alone(first_run, tiny, tmp_path):
    before = _mtimes(tmp_path)
    features = read_features(tmp_path / "sub" / "b.safetensors").features
    (tmp_path / "sub" / "b.safetensors").unlink()
    result = extract_features(first_run, tiny)
    assert result.extracted == ["sub/b"] and result.skipped == ["a"]
    after = _mtimes(tmp_path)
    assert after["a.safetensors"] == before["a.safetensors"]
    np.testing.assert_array_equal(read_features(tmp_path / "sub" / "b.safetensors").features, features)


def test_partial_temporary_file_is_ignored(first_run, tiny, tmp_path):
    """A run killed while writing leaves ``.<name>.<random>.tmp``; the next run redoes the item and cleans up."""
    (tmp_path / "a.safetensors").unlink()
    partial = tmp_path / ".a.safetensors.k1ll3d.tmp"
    partial.write_bytes(b"\x00" * 100)  # half a file
    result = extract_features(first_run, tiny)
    assert result.extracted == ["a"]
    assert read_features(tmp_path / "a.safetensors").features.shape == (8, 64)
    assert not partial.exists() and not list(tmp_path.rglob("*.tmp"))


def test_other_settings_refuse_the_folder(first_run, fx, tiny, tmp_path):
    changed = make_config(fx, tmp_path, "window.stride=4")
    with pytest.raises(ConfigError, match=r"window\.stride: 8\.0 -> 4\.0"):
        extract_features(changed, tiny)
    # settings that do not change the features may differ
    extract_features(make_config(fx, tmp_path, "batch_size=5", "num_workers=1"), tiny)


def test_manifest_contents(first_run, fx, tmp_path):
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["format"] == "egovlp-features-1" and manifest["mode"] == "video"
    assert manifest["checkpoint"] == str(fx.checkpoint.resolve())
    assert manifest["model"] == {"arch": "egovlpv2-tiny", "num_frames": 4, "feature_dim": 64}
    assert manifest["settings"]["window"] == {
        "num_frames": 4, "size": 8.0, "stride": 8.0, "unit": "frames", "last": "pad", "fps": 0.0
    }  # fmt: skip
    assert manifest["config"]["source"]["videos"] == str(fx.videos)
    entry = manifest["videos"]["sub/b"]
    assert entry == {
        "id": "sub/b",
        "status": "ok",
        "file": "sub/b.safetensors",
        "mode": "video",
        "shape": [5, 64],
        "arrays": ["features", "window_start", "window_end"],
        "source": str(fx.videos / "sub" / "b.mp4"),
        "fps": 8.0,
        "duration": pytest.approx(37 / 8),
        "offset": 0.0,
        "num_windows": 5,
        "features_per_second": 1.0,
    }
    assert manifest["failed"] == {} and manifest["num_videos"] == 2
