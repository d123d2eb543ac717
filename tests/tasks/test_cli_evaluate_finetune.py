"""``egovlp evaluate`` and ``egovlp finetune`` end to end on the synthetic world with a tiny random model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from egovlp.cli.main import main
from egovlp.data.charades import load_charades_ego

from .conftest import TINY, charades_paths, epic_paths

CONFIGS = Path(__file__).resolve().parents[2] / "src" / "egovlp" / "configs"
MIR_KEYS = ("mAP_V2T", "mAP_T2V", "mAP_AVG", "nDCG_V2T", "nDCG_T2V", "nDCG_AVG")


def _results(path: Path) -> dict:
    return json.loads(path.read_text())["metrics"]


def test_evaluate_epic_mir_both_relevancy_sources(world, tiny_weights, tmp_path, capsys):
    config = str(CONFIGS / "eval" / "epic_mir.yaml")
    common = ["--checkpoint", str(tiny_weights), "--config", config, *epic_paths(world), "data.num_frames=4",
              "eval.num_workers=0", "device=cpu"]  # fmt: skip
    assert main(["evaluate", "epic_mir", *common, "--output", str(tmp_path / "build.json")]) == 0
    out = capsys.readouterr().out
    assert "EK-100 multi-instance retrieval" in out and "nDCG" in out
    built = _results(tmp_path / "build.json")
    assert all(0.0 < built[k] <= 100.0 for k in MIR_KEYS)
    assert built["mAP_AVG"] == pytest.approx((built["mAP_V2T"] + built["mAP_T2V"]) / 2)
    assert built["skipped_clips"] == 0 and built["clips"] > built["sentences"] > 1
    assert main(["evaluate", "epic-mir", *common, "data.relevancy=pickle", "--output", str(tmp_path / "p.json")]) == 0
    assert _results(tmp_path / "p.json") == built


def test_evaluate_charades_at_32_frames(world, tiny_weights, tmp_path, capsys):
    out = tmp_path / "charades.json"
    args = [
        "evaluate",
        "--checkpoint",
        str(tiny_weights),
        "charades",
        *charades_paths(world),
        "eval.num_workers=0",
        "--output",
        str(out),
    ]  # fmt: skip  (options before and after TASK)
    assert main(args) == 0
    assert "Charades-Ego" in capsys.readouterr().out
    payload = json.loads(out.read_text())
    metrics = payload["metrics"]
    assert payload["config"]["data"]["num_frames"] == 32  # the release's frame count, temporal embedding resized
    assert 0.0 < metrics["mAP"] <= 100.0 and metrics["videos"] == 12
    assert metrics["classes_evaluated"] + metrics["classes_skipped"] == 20
    assert len(metrics["skipped_class_ids"]) == metrics["classes_skipped"]


def test_evaluate_egomcq(world, tiny_weights, tmp_path, capsys):
    out = tmp_path / "mcq.json"
    args = ["evaluate", "egomcq", "--checkpoint", str(tiny_weights), f"data.metadata={world['egomcq']}",
            f"data.video_root={world['videos']}", f"tokenizer={world['tokenizer']}",
            f"data.chunk_seconds={world.chunk_seconds}", "data.num_frames=4", "data.num_workers=0",
            "--output", str(out)]  # fmt: skip
    assert main(args) == 0
    assert "EgoMCQ accuracy" in capsys.readouterr().out
    metrics = _results(out)
    assert metrics["questions"] == 13  # 6 inter + 7 intra
    for mode in ("dual", "fusion", "ensemble"):  # the tiny model has fusion layers and a VTM head
        assert 0.0 <= metrics[f"{mode}/inter"] <= 100.0 and 0.0 <= metrics[f"{mode}/intra"] <= 100.0


def _finetune_args(task: str, world, out: Path, tiny_weights) -> list[str]:
    paths = epic_paths(world) if task == "epic_mir" else charades_paths(world)
    return ["finetune", task, "--config", str(CONFIGS / "finetune" / f"{task}.yaml"), *paths,
            f"model.arch={TINY}", "model.grad_checkpointing=false", f"init.checkpoint={tiny_weights}",
            "data.num_frames=4", "train_data.batch_size=4", "train_data.num_workers=0", "eval.num_workers=0",
            "optim.lr=1e-3", "train.max_steps=2", "train.log_every=1", "train.progress=false",
            "train.tensorboard=false", f"train.output_dir={out}", "train.device=cpu"]  # fmt: skip


@pytest.mark.parametrize("task", ["epic_mir", "charades"])
def test_finetune_then_evaluate_the_saved_weights(task, world, tiny_weights, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(_finetune_args(task, world, out, tiny_weights)) == 0
    assert "finished at step 2" in capsys.readouterr().out
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2] and all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in train)
    final = _results(out / "results.json")
    key = "mAP_AVG" if task == "epic_mir" else "mAP"
    assert 0.0 < final[key] <= 100.0
    # the saved weights (4 frames, as data.num_frames) give the same numbers through `egovlp evaluate`
    paths = epic_paths(world) if task == "epic_mir" else charades_paths(world)
    again = tmp_path / "again.json"
    assert main(["evaluate", task, "--checkpoint", str(out / "model.safetensors"), *paths, "data.num_frames=4",
                 "eval.num_workers=0", "--output", str(again)]) == 0  # fmt: skip
    assert _results(again)[key] == pytest.approx(final[key], abs=1e-6)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["evaluate", "epic_mr", "--checkpoint", "w.safetensors"], "did you mean epic_mir or epic_mir_vtm?"),
        (["finetune", "egomcq"], "unknown fine-tunable task 'egomcq' (known: charades, "),
        (["evaluate", "charades"], "--checkpoint is required"),
        (["evaluate", "charades", "--checkpoint", "w.safetensors"], "data.annotation_dir, data.video_root"),
        (["evaluate", "epic_mir", "--checkpoint", "missing.safetensors", "data.annotation_dir=a", "data.video_root=b",
          "data.tokenizer=c"], "weight file not found: missing.safetensors"),
        (["evaluate", "epic_mir", "--checkpoint", "w.safetensors", "eval.batchsize=3"],
         "did you mean 'eval.batch_size'"),
    ],
)  # fmt: skip
def test_bad_input_is_reported_in_one_line(argv, message, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_missing_annotations_name_the_file(world, tiny_weights, tmp_path, capsys):
    argv = ["evaluate", "epic_mir", "--checkpoint", str(tiny_weights), f"data.annotation_dir={tmp_path}",
            f"data.video_root={tmp_path}", f"data.tokenizer={world['tokenizer']}", "device=cpu"]  # fmt: skip
    assert main(argv) == 1
    assert f"{tmp_path / 'EPIC_100_retrieval_test.csv'}: annotation file not found" in capsys.readouterr().err


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_evaluate_under_two_gloo_processes_equals_one_process(world, tiny_weights, tmp_path):
    """torchrun-style launch of `egovlp evaluate`: clips and sentences sharded, gathered, scored once on rank 0."""
    import os
    import subprocess
    import sys

    common = ["evaluate", "epic_mir", "--checkpoint", str(tiny_weights), *epic_paths(world), "data.num_frames=4",
              "eval.num_workers=0", "eval.batch_size=5", "eval.text_batch_size=4", "device=cpu"]  # fmt: skip
    assert main([*common, "--output", str(tmp_path / "one.json")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1"}
    env["MASTER_PORT"] = str(_free_port())
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    cmd = [sys.executable, "-m", "egovlp.cli.main", *common, "--output", str(tmp_path / "two.json")]
    procs = [
        subprocess.Popen(cmd, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
        for r in range(2)
    ]  # fmt: skip
    outputs = [p.communicate(timeout=180)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    one, two = _results(tmp_path / "one.json"), _results(tmp_path / "two.json")
    assert two["clips"] == one["clips"] and two["sentences"] == one["sentences"]
    for key in MIR_KEYS:
        assert two[key] == pytest.approx(one[key], abs=1e-4), key


def test_skipped_videos_are_counted_and_none_readable_is_an_error(world, tiny_weights, tmp_path, capsys):
    argv = ["evaluate", "charades", "--checkpoint", str(tiny_weights), *charades_paths(world), "data.num_frames=4",
            "eval.num_workers=0", "eval.bad_input=skip", "--output", str(tmp_path / "c.json")]  # fmt: skip
    assert main([*argv, f"data.video_root={tmp_path}"]) == 1
    assert "Charades-Ego test: no video could be read (12 skipped)" in capsys.readouterr().err
    videos = tmp_path / "videos"
    videos.mkdir()
    missing = load_charades_ego(world["charades"], "test").videos[0].id
    for path in (world["charades"] / "videos").glob("*.mp4"):
        if path.stem != missing:
            (videos / path.name).symlink_to(path)
    assert main([*argv, f"data.video_root={videos}"]) == 0
    metrics = _results(tmp_path / "c.json")
    assert metrics["skipped_videos"] == 1 and metrics["videos"] == 11
