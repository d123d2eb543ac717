"""``egovlp demo`` end to end on the session's small world: both stages, the evaluation table, the files it names."""

import json

from egovlp.cli.demo import format_table
from egovlp.cli.main import main
from helpers import as_overrides


def test_demo_runs_both_stages_and_prints_the_table(small_world, tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "data").symlink_to(small_world.root)  # an existing world is reused, not generated again
    text = ["--text-set=train.max_steps=3", "--text-set=train.progress=false", "--text-set=data.batch_size=8"]
    stage2 = as_overrides({
        "data.batch_size": 4, "data.num_workers": 0, "egomcq.batch_size": 4, "egomcq.num_workers": 0,
        "train.max_steps": 3, "train.eval_every": 0, "train.save_every": 0, "train.progress": False,
        "train.tensorboard": False,
    })  # fmt: skip
    assert main(["demo", "--out", str(out), *text, *stage2]) == 0
    printed = capsys.readouterr().out
    assert "EgoMCQ accuracy (%) on the synthetic world (13 questions)" in printed
    for row in ("chance", "dual (cosine)", "fusion (VTM)", "ensemble", "dual (cosine), frames reversed"):
        assert f"\n{row} " in printed, row
    assert (out / "text" / "roberta" / "model.safetensors").is_file()
    for name in ("model.safetensors", "loss_curve.png", "demo_results.json", "metrics.jsonl"):
        assert (out / "run" / name).is_file(), name
    results = json.loads((out / "run" / "demo_results.json").read_text())
    assert set(results) == {"forward", "reversed"} and results["forward"]["questions"] == 13
    config = (out / "run" / "config.yaml").read_text()
    assert "roberta: " + str(out / "text" / "roberta") in config and "- text" in config  # stage 1 -> stage 2, fixed


def test_format_table_rows():
    m = {"dual/inter": 90.0, "dual/intra": 80.0, "fusion/inter": 50.0, "fusion/intra": 40.0, "questions": 10}
    table = format_table({"forward": m, "reversed": {**m, "dual/intra": 5.0}})
    lines = table.splitlines()
    assert lines[0] == "EgoMCQ accuracy (%) on the synthetic world (10 questions)"
    assert lines[2].split() == ["chance", "20.0", "20.0"]
    assert lines[3].split()[-2:] == ["90.0", "80.0"] and lines[-1].split()[-1] == "40.0"
    assert "dual (cosine), frames reversed" in table and lines[5].split()[-1] == "5.0"
