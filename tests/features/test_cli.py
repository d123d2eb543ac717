"""``egovlp extract`` end to end, and the shipped configs."""

from pathlib import Path

import numpy as np
import pytest

from egovlp.cli.main import main
from egovlp.config import load_config
from egovlp.features import ExtractConfig, extract_features, read_features, read_manifest
from egovlp.features.windows import window_seconds

from .helpers import make_config

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "egovlp" / "configs" / "extract"
SMALL = ["window.num_frames=4", "window.size=8", "window.stride=8", "progress=false"]


def test_cli_smoke_with_a_decoding_worker(fx, tiny, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["extract", "--checkpoint", str(fx.checkpoint), "--videos", str(fx.videos), "--out", str(out)]
    assert main([*argv, *SMALL, "num_workers=1", "batch_size=4"]) == 0
    printed = capsys.readouterr().out
    assert f"2 feature file(s) written to {out}" in printed and f"manifest: {out / 'manifest.json'}" in printed
    # the worker process decodes what the main process would
    reference = tmp_path / "ref"
    extract_features(make_config(fx, reference), tiny)
    got, want = read_features(out / "a.safetensors"), read_features(reference / "a.safetensors")
    np.testing.assert_allclose(got.features, want.features, atol=2e-5)
    # a second run resumes
    assert main([*argv, *SMALL]) == 0
    assert "0 feature file(s) written" in capsys.readouterr().out


def test_cli_with_the_nlq_config(fx, tmp_path, capsys):
    out = tmp_path / "nlq"
    argv = [
        "extract", "--config", str(CONFIGS / "nlq_fused.yaml"), "--checkpoint", str(fx.checkpoint),
        "--tokenizer", str(fx.tokenizer), "--annotations", str(fx.nlq), "--video-root", str(fx.videos),
        "--out", str(out), "precision=fp32", "num_workers=0", "progress=false",
    ]  # fmt: skip
    assert main(argv) == 0
    clip = read_features(out / "clip-1.safetensors")
    # 4.3 s at 10 fps in whole 16-frame windows: 2 windows; 2 queries; the fused CLS of the 64-wide tiny model
    assert clip.features.shape == (2, 2, 64) and clip.arrays["text_tokens"].shape == (2, 30, 64)
    assert clip.entry["features_per_second"] == pytest.approx(10 / 16)
    assert read_manifest(out)["settings"]["text"]["lowercase"] is True


def test_cli_reports_an_unreadable_video(fx, tmp_path, capsys):
    folder = tmp_path / "videos"
    folder.mkdir()
    (folder / "broken.mp4").write_bytes(b"\x00" * 64)
    argv = ["extract", "--checkpoint", str(fx.checkpoint), "--videos", str(folder), "--out", str(tmp_path / "o")]
    assert main([*argv, *SMALL]) == 1
    err = capsys.readouterr().err
    assert "egovlp extract: error:" in err and "broken.mp4: cannot open video" in err


def test_cli_reports_missing_settings(capsys):
    assert main(["extract", "--videos", "x", "--out", "y"]) == 1
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize(("name", "frames", "mode"), [("mq_video.yaml", 16, "video"), ("nlq_fused.yaml", 4, "fused")])
def test_shipped_configs_follow_the_release(name, frames, mode):
    cfg = load_config(ExtractConfig, CONFIGS / name)
    assert cfg.mode == mode and cfg.window.num_frames == frames and cfg.window.last == "drop"
    size, stride = window_seconds(cfg.window, 30.0)
    assert size == stride == pytest.approx(16 / 30)
    assert 1 / stride == pytest.approx(1.875)  # features per second on Ego4D's 30 fps videos


@pytest.mark.slow
def test_torchrun_two_ranks(fx, tmp_path):
    """Two gloo processes split the items (no duplicates) and rank 0 writes the manifest after gathering."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
        "-m", "egovlp.cli.main", "extract", "--checkpoint", str(fx.checkpoint), "--annotations", str(fx.nlq),
        "--video-root", str(fx.videos), "--out", str(out), *SMALL, "num_workers=0", "device=cpu",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 feature file(s) written" in proc.stdout
    manifest = read_manifest(out)
    assert manifest["complete"] and sorted(manifest["videos"]) == ["clip-1", "clip-2"]
    assert read_features(out / "clip-2.safetensors").features.shape == (3, 64)  # 2 s in 0.8 s windows, padded
