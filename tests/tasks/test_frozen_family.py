"""The frozen family (Frozen-in-Time, EgoVLP v1) in every dual-encoder task: a converted EgoVLP release file runs
``egovlp evaluate egomcq|epic_mir|charades``, ``egovlp extract`` and ``egovlp finetune`` on the synthetic world."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from egovlp.cli.main import main
from egovlp.data.egoclip_table import load_egoclip
from egovlp.data.text import clean_narration
from egovlp.data.tokenizer import Tokenizer
from egovlp.models.weights import read_model_config
from models.test_frozen import released_egovlp_tiny, save_release_checkpoint

from .conftest import charades_paths, epic_paths

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "egovlp" / "configs"


@pytest.fixture(scope="session")
def wordpiece(world, tmp_path_factory) -> Path:
    """A WordPiece-uncased tokenizer (DistilBERT's kind) trained on the world's narrations."""
    out = tmp_path_factory.mktemp("wordpiece")
    table = load_egoclip(world["egoclip"])
    texts = [clean_narration(table.text(i)) for i in range(len(table))]
    Tokenizer.train(texts, 200, out, min_frequency=1, kind="wordpiece")
    return out


@pytest.fixture(scope="session")
def egovlp_release(tmp_path_factory) -> dict[str, Path]:
    """A tiny EgoVLP release file (16 temporal rows, 4 trained) converted twice: at 4 frames and kept at 16."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("egovlp_release")
    save_release_checkpoint(released_egovlp_tiny(), root / "egovlp.pth")
    files = {"4": root / "egovlp4.safetensors", "16": root / "egovlp16.safetensors"}
    for frames, out in files.items():
        assert main(["convert", str(root / "egovlp.pth"), "--out", str(out), "--num-frames", frames,
                     "--arch", "egovlp-tiny"]) == 0  # fmt: skip
    return files


def _metrics(path: Path) -> dict:
    return json.loads(path.read_text())["metrics"]


def test_egomcq_prints_only_the_dual_rows_of_a_converted_egovlp(world, wordpiece, egovlp_release, tmp_path, capsys):
    common = ["evaluate", "egomcq", f"data.metadata={world['egomcq']}", f"data.video_root={world['videos']}",
              f"tokenizer={wordpiece}", f"data.chunk_seconds={world.chunk_seconds}", "data.num_frames=4",
              "data.num_workers=0"]  # fmt: skip
    assert main([*common, "--checkpoint", str(egovlp_release["4"]), "--output", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert "EgoMCQ accuracy" in out and "dual" in out and "fusion" not in out and "ensemble" not in out
    four = _metrics(tmp_path / "a.json")
    assert four["questions"] == 13 and not any(k.startswith(("fusion/", "ensemble/")) for k in four)
    assert 0.0 <= four["dual/inter"] <= 100.0 and 0.0 <= four["dual/intra"] <= 100.0
    # the file kept at 16 rows and run at 4 frames uses the same first 4 rows: the same answers
    assert main([*common, "--checkpoint", str(egovlp_release["16"]), "--output", str(tmp_path / "b.json")]) == 0
    assert _metrics(tmp_path / "b.json") == four


def test_epic_mir_and_charades_run_a_converted_egovlp(world, wordpiece, egovlp_release, tmp_path, capsys):
    weights = str(egovlp_release["4"])
    epic = [p.replace(f"={world['tokenizer']}", f"={wordpiece}") for p in epic_paths(world)]
    charades = [p.replace(f"={world['tokenizer']}", f"={wordpiece}") for p in charades_paths(world)]
    assert main(["evaluate", "epic_mir", "--checkpoint", weights, *epic, "data.num_frames=4", "eval.num_workers=0",
                 "--output", str(tmp_path / "mir.json")]) == 0  # fmt: skip
    mir = _metrics(tmp_path / "mir.json")
    assert all(0.0 < mir[k] <= 100.0 for k in ("mAP_V2T", "mAP_T2V", "nDCG_V2T", "nDCG_T2V"))
    assert main(["evaluate", "charades", "--checkpoint", weights, *charades, "data.num_frames=4",
                 "eval.num_workers=0", "--output", str(tmp_path / "ch.json")]) == 0  # fmt: skip
    ch = _metrics(tmp_path / "ch.json")
    assert 0.0 < ch["mAP"] <= 100.0 and ch["videos"] == 12
    out = capsys.readouterr().out
    assert "EK-100 multi-instance retrieval" in out and "Charades-Ego" in out


def test_extract_writes_the_dual_video_features_of_a_converted_egovlp(world, egovlp_release, tmp_path):
    from egovlp.features.store import read_features

    out = tmp_path / "features"
    assert main(["extract", "--checkpoint", str(egovlp_release["4"]), "--videos", str(world["videos"]),
                 "--out", str(out), "window.size=2", "window.unit=seconds", "window.num_frames=4"]) == 0  # fmt: skip
    files = sorted(out.rglob("*.safetensors"))
    assert len(files) == 15  # one per chunk file (5 videos x 3 chunks of 15 s)
    features = np.concatenate([read_features(path).arrays["features"] for path in files])
    assert features.ndim == 2 and features.shape[1] == 32 and np.isfinite(features).all()  # the 32-d projections
    assert not np.allclose(features, features[:1])  # windows differ


@pytest.mark.parametrize("task", ["epic_mir", "charades"])
def test_finetune_from_a_converted_egovlp(task, world, wordpiece, egovlp_release, tmp_path, capsys):
    out = tmp_path / "run"
    paths = epic_paths(world) if task == "epic_mir" else charades_paths(world)
    paths = [p.replace(f"={world['tokenizer']}", f"={wordpiece}") for p in paths]
    argv = ["finetune", task, "--config", str(CONFIGS / "finetune" / f"{task}.yaml"), *paths,
            "model.arch=egovlp-tiny", "model.grad_checkpointing=false", f"init.checkpoint={egovlp_release['4']}",
            "data.num_frames=4", "train_data.batch_size=4", "train_data.num_workers=0", "eval.num_workers=0",
            "optim.lr=1e-3", "train.max_steps=2", "train.log_every=1", "train.progress=false",
            "train.tensorboard=false", f"train.output_dir={out}", "train.device=cpu"]  # fmt: skip
    assert main(argv) == 0
    assert "finished at step 2" in capsys.readouterr().out
    cfg = read_model_config(out / "model.safetensors")
    assert (cfg.family, cfg.num_fusion_layers, cfg.video.num_frames) == ("frozen", 0, 4)
    assert main(["evaluate", task, "--checkpoint", str(out / "model.safetensors"), *paths, "data.num_frames=4",
                 "eval.num_workers=0", "--output", str(tmp_path / "again.json")]) == 0  # fmt: skip
    key = "mAP_AVG" if task == "epic_mir" else "mAP"
    final = _metrics(out / "results.json")
    assert 0.0 < final[key] <= 100.0
    assert _metrics(tmp_path / "again.json")[key] == pytest.approx(final[key], abs=1e-6)
