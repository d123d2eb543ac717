"""``egovlp demo`` end to end on the session's small world: both stages, the evaluation table, the files it names."""

import json
from pathlib import Path
from types import SimpleNamespace

from egovlp.cli.demo import format_table
from egovlp.cli.demo_search import NUM_QUERIES, TOP, Occurrence, is_true, pick_queries
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
    # the search stage: an index of the world's videos, two queries with their top moments, an attention PNG
    assert "\nSearch of 4 synthetic videos (" in printed and "fusion re-rank of the top 5" in printed
    search = json.loads((out / "run" / "demo_search.json").read_text())
    assert len(search["queries"]) == NUM_QUERIES and search["windows"] > 0
    for q in search["queries"]:
        assert f'"{q["query"]}" ({len(q["occurrences"])} occurrence(s)' in printed
        for ranking in (q["dual"], q["rerank"]):
            assert 1 <= len(ranking) <= TOP and [m["rank"] for m in ranking] == list(range(1, len(ranking) + 1))
            for m in ranking:  # the printed verdict is the overlap rule on the JSON moments
                places = [Occurrence(**p) for p in q["occurrences"]]
                assert m["true"] == is_true(SimpleNamespace(**m), places)
    png = Path(search["attention_png"])
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_format_table_rows():
    m = {"dual/inter": 90.0, "dual/intra": 80.0, "fusion/inter": 50.0, "fusion/intra": 40.0, "questions": 10}
    table = format_table({"forward": m, "reversed": {**m, "dual/intra": 5.0}})
    lines = table.splitlines()
    assert lines[0] == "EgoMCQ accuracy (%) on the synthetic world (10 questions)"
    assert lines[2].split() == ["chance", "20.0", "20.0"]
    assert lines[3].split()[-2:] == ["90.0", "80.0"] and lines[-1].split()[-1] == "40.0"
    assert "dual (cosine), frames reversed" in table and lines[5].split()[-1] == "5.0"


def _narrations(texts_by_uid):
    return {
        uid: {"narration_pass_1": {"narrations": [{"timestamp_sec": t, "narration_text": x} for t, x in items]}}
        for uid, items in texts_by_uid.items()
    }


def test_pick_queries_takes_the_rarest_texts_with_distinct_verbs():
    narrations = _narrations({
        "a": [(1.0, "#C C picks up the red cube"), (5.0, "#C C picks up the red cube"), (9.0, "#C C pushes the ball")],
        "b": [(2.0, "#C C picks up the blue cone"), (4.0, "#C C pulls the ball"), (6.0, "#C C pushes the ball")],
        "c": [(3.0, "#C C puts down the cube")],  # not among the indexed videos
    })  # fmt: skip
    chosen = pick_queries(narrations, ["a", "b"], Path("/v"), num=2)
    # counts: blue cone 1, pulls 1, red cube 2, pushes 2; "picks up the blue cone" is first by text among the 1s
    assert list(chosen) == ["C picks up the blue cone", "C pulls the ball"]
    assert chosen["C pulls the ball"] == [Occurrence("/v/b", 4.0)]
    assert list(pick_queries(narrations, ["a"], Path("/v"), num=3)) == ["C pushes the ball", "C picks up the red cube"]


def test_is_true_needs_the_same_video_and_an_overlap_of_the_narration_window():
    places = [Occurrence("/v/a", 10.0)]
    moment = lambda source, start, end: SimpleNamespace(source=source, start=start, end=end)
    assert is_true(moment("/v/a", 8.0, 10.0), places)  # contains the time
    assert is_true(moment("/v/a", 10.5, 12.0), places)  # within 1 s after it
    assert not is_true(moment("/v/a", 11.0, 13.0), places)  # touches the window's end only
    assert not is_true(moment("/v/a", 7.0, 9.0), places)  # touches its start only
    assert not is_true(moment("/v/b", 9.0, 11.0), places)  # another video


def test_is_true_compares_a_relative_occurrence_with_the_absolute_path_the_index_records(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    places = [Occurrence("demo/data/videos/a", 10.0)]
    assert is_true(SimpleNamespace(source=str(tmp_path / "demo/data/videos/a"), start=9.0, end=11.0), places)
