"""All-in-one through the downstream tasks: multiple-choice QA (MSRVTT-MC format), EgoMCQ with the VTM score,
EK-100 MIR and Charades-Ego through the contrastive projections."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from egovlp.cli.main import main
from egovlp.data.tokenizer import Tokenizer
from egovlp.data.transforms import eval_transform
from egovlp.data.video_mc import VideoMCCollate, VideoMCDataset, load_video_mc
from egovlp.errors import DataError
from egovlp.models.allinone_model import AllInOne
from egovlp.models.registry import get_model_config
from egovlp.models.weights import load_model, save_weights
from egovlp.tasks.video_mc import mc_accuracy, option_scores

from .conftest import charades_paths, epic_paths


def allinone_weights(path: Path, arch: str = "allinone-test-vtc") -> Path:
    """A seeded random tiny All-in-one that takes the synthetic world's BPE tokenizer (300 ids, pad 1)."""
    cfg = get_model_config(arch)
    cfg = dataclasses.replace(cfg, text=dataclasses.replace(cfg.text, tokenizer="bpe", vocab_size=300, pad_token_id=1))
    torch.manual_seed(0)
    return save_weights(AllInOne(cfg), path)


def write_mc(path: Path, world, count: int = 5) -> list[dict]:
    """MSRVTT-MC records whose clips are chunks of the world's videos (``<uid>/<k>`` -> ``<root>/<uid>/<k>.mp4``)."""
    videos = sorted(p.name for p in Path(world.files["videos"]).iterdir() if p.is_dir())
    sentences = ["#C C picks up the red cube", "#C C puts down a cube", "#C C moves the ball", "#C C opens it",
                 "#C C looks around"]  # fmt: skip
    records = [
        {"clip_name": f"{videos[i % len(videos)]}/0", "options": sentences, "answer": i % 5} for i in range(count)
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return records


# ------------------------------------------------------------------------------------------------- the format
def test_mc_files_are_read_with_errors_naming_line_and_field(tmp_path):
    good = tmp_path / "mc.jsonl"
    good.write_text('{"clip_name": "video7010", "options": ["a", "b", "c"], "answer": 2}\n\n'
                    '{"clip_name": "video7011", "options": ["d", "e", "f"], "answer": 0}\n')  # fmt: skip
    questions = load_video_mc(good)
    assert [(q.clip_name, q.answer, len(q.options)) for q in questions] == [("video7010", 2, 3), ("video7011", 0, 3)]
    as_list = tmp_path / "mc.json"
    as_list.write_text(json.dumps([{"clip_name": "v", "options": ["a", "b"], "answer": 1}]))
    assert load_video_mc(as_list)[0].options == ("a", "b")
    cases = {
        '{"clip_name": "v", "options": ["a", "b"], "answer": 2}': r"mc.jsonl:1: field 'answer' must be an option",
        '{"clip_name": "v", "options": ["a"], "answer": 0}': r"mc.jsonl:1: field 'options' must be a list of at least",
        '{"options": ["a", "b"], "answer": 0}': r"mc.jsonl:1: missing field 'clip_name'",
        '{"clip_name": "v", "options": ["a", "b"], "answer": 0}\n{"clip_name": "v"': r"mc.jsonl:2: invalid JSON",
        '{"clip_name": "v", "options": ["a", "b"], "answer": 0}\n{"clip_name": "w", "options": ["a", "b", "c"], '
        '"answer": 0}': r"same number of options, found \[2, 3\]",
    }
    for content, message in cases.items():
        (tmp_path / "mc.jsonl").write_text(content)
        with pytest.raises(DataError, match=message):
            load_video_mc(tmp_path / "mc.jsonl")


def test_mc_tables_csv_and_tsv_read_as_the_json_form(tmp_path):
    csv_file = tmp_path / "mc.csv"
    csv_file.write_text('answer,clip_name,option_1,option_0,option_2\n2,video7010,"b, with a comma",a,c\n\n'
                        "0,video7011,e,d,f\n")  # fmt: skip
    questions = load_video_mc(csv_file)
    assert [(q.clip_name, q.answer, q.options) for q in questions] == [
        ("video7010", 2, ("a", "b, with a comma", "c")), ("video7011", 0, ("d", "e", "f"))
    ]  # fmt: skip
    tsv_file = tmp_path / "mc.tsv"
    tsv_file.write_text("clip_name\tanswer\toption_0\toption_1\nv\t1\tx, y\tz\n")
    assert load_video_mc(tsv_file)[0].options == ("x, y", "z")
    cases = {
        "clip_name,answer,option_0\nv,0,a\n": r"mc.csv:1: the header must name clip_name, answer and option_0",
        "clip_name,answer,option_0,option_2\nv,0,a,b\n": r"mc.csv:1: the header must name",
        "clip_name,option_0,option_1\nv,a,b\n": r"mc.csv:1: the header must name",
        "clip_name,answer,option_0,option_1\nv,0,a\n": r"mc.csv:2: 3 fields, the header has 4",
        "clip_name,answer,option_0,option_1\nv,0,a,b\nw,one,a,b\n": r"mc.csv:3: field 'answer' must be an option",
        "clip_name,answer,option_0,option_1\nv,0,a,b\nw,2,a,b\n": r"mc.csv:3: field 'answer' must be an option index",
        "": r"mc.csv: empty file",
    }
    for content, message in cases.items():
        csv_file.write_text(content)
        with pytest.raises(DataError, match=message):
            load_video_mc(csv_file)


class _Scorer:
    """A stand-in model: the score of an option is its second token id (so the answer is known)."""

    def vtm_score(self, video, input_ids, attention_mask):
        assert video.shape[0] == input_ids.shape[0]
        return input_ids[:, 1].float() + video.flatten(1)[:, 0]


def test_options_are_scored_question_major_and_the_best_wins():
    video = torch.zeros(2, 1, 3, 4, 4)
    video[1] = 100.0  # question 1's video adds 100 to all its options: the argmax is unchanged
    ids = torch.tensor([[0, 5], [0, 9], [0, 7], [0, 3], [0, 4], [0, 8]])  # 2 questions x 3 options
    scores = option_scores(_Scorer(), video, ids, torch.ones_like(ids))
    assert scores.tolist() == [[5, 9, 7], [103, 104, 108]]
    assert mc_accuracy(scores.numpy(), np.array([1, 0])) == 50.0
    assert mc_accuracy(np.array([[1.0, 1.0]]), np.array([0])) == 100.0  # ties: the first option


# ------------------------------------------------------------------------------------------------ end to end
def test_evaluate_video_mc_with_an_allinone_checkpoint(small_world, tmp_path, capsys):
    weights = allinone_weights(tmp_path / "aio.safetensors", "allinone-test")
    write_mc(tmp_path / "mc.jsonl", small_world)
    args = ["evaluate", "video_mc", "--checkpoint", str(weights), f"data.metadata={tmp_path / 'mc.jsonl'}",
            f"data.video_root={small_world.files['videos']}", f"data.tokenizer={small_world.files['tokenizer']}",
            "data.num_workers=0", "device=cpu", "--output", str(tmp_path / "mc.json")]  # fmt: skip
    assert main(args) == 0
    assert "multiple-choice video QA, 5 questions" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "mc.json").read_text())["metrics"]
    assert metrics["questions"] == 5
    # the same accuracy recomputed one question at a time from the library parts
    model = load_model(weights).eval()
    questions = load_video_mc(tmp_path / "mc.jsonl")
    dataset = VideoMCDataset(questions, small_world.files["videos"], 3, eval_transform(32))
    collate = VideoMCCollate(Tokenizer.from_dir(small_world.files["tokenizer"]))
    best = []
    for i in range(len(questions)):
        batch = collate([dataset[i]])
        best.append(int(option_scores(model, batch["video"], batch["input_ids"], batch["attention_mask"]).argmax()))
    expected = 100.0 * np.mean([b == q.answer for b, q in zip(best, questions)])
    assert metrics["accuracy"] == pytest.approx(expected)


def test_egomcq_scores_the_allinone_vtm(small_world, tmp_path, capsys):
    weights = allinone_weights(tmp_path / "aio.safetensors", "allinone-test")
    out = tmp_path / "egomcq.json"
    args = ["evaluate", "egomcq", "--checkpoint", str(weights), f"data.metadata={small_world.files['egomcq']}",
            f"data.video_root={small_world.files['videos']}", f"data.chunk_seconds={small_world.chunk_seconds}",
            "data.num_frames=3", "data.num_workers=0", f"tokenizer={small_world.files['tokenizer']}", "device=cpu",
            "--output", str(out)]  # fmt: skip
    assert main(args) == 0
    assert "fusion" in capsys.readouterr().out
    metrics = json.loads(out.read_text())["metrics"]
    assert metrics["questions"] == 13 and 0 <= metrics["fusion/overall"] <= 100


def test_epic_mir_and_charades_run_through_the_contrastive_projections(small_world, tmp_path, capsys):
    weights = allinone_weights(tmp_path / "aio_vtc.safetensors")
    world = small_world.files
    common = ["--checkpoint", str(weights), "data.num_frames=3", "eval.num_workers=0", "device=cpu"]
    assert main(["evaluate", "epic_mir", *common, *epic_paths(world), "--output", str(tmp_path / "e.json")]) == 0
    assert "EK-100 multi-instance retrieval" in capsys.readouterr().out
    epic = json.loads((tmp_path / "e.json").read_text())["metrics"]
    assert 0 < epic["mAP_AVG"] <= 100 and epic["clips"] > 1
    args = ["evaluate", "charades", *common, *charades_paths(world), "--output", str(tmp_path / "c.json")]
    assert main(args) == 0
    assert 0 < json.loads((tmp_path / "c.json").read_text())["metrics"]["mAP"] <= 100


def test_epic_mir_vtm_reranks_and_with_every_item_equals_full_vtm(small_world, tmp_path, capsys):
    """A checkpoint without projections: k >= clips and sentences gives the full pairwise VTM ranking's metrics."""
    from egovlp.data.epic_mir import load_epic_mir
    from egovlp.data.epic_mir_dataset import EpicMIRDataset
    from egovlp.metrics import epic_mir_metrics
    from egovlp.models.vtm_rerank import full_vtm_matrix

    weights = allinone_weights(tmp_path / "aio.safetensors", "allinone-test")
    world = small_world.files
    common = ["evaluate", "epic_mir_vtm", "--checkpoint", str(weights), *epic_paths(world), "eval.num_workers=0",
              "device=cpu"]  # fmt: skip
    assert main([*common, "eval.k=100000", "--output", str(tmp_path / "all.json")]) == 0
    assert "VTM re-ranking of the top 100000" in capsys.readouterr().out
    every = json.loads((tmp_path / "all.json").read_text())["metrics"]
    assert every["vtm_pairs"] == every["full_pairs"] == every["clips"] * every["sentences"]

    model = load_model(weights).eval()
    annotations = load_epic_mir(world["epic"], "test", relevancy="build")
    clips = EpicMIRDataset(annotations, world["epic"] / "videos", 3, eval_transform(32))
    videos = torch.stack([clips[i]["video"] for i in range(len(clips))])
    tokens = Tokenizer.from_dir(world["tokenizer"])(annotations.texts, max_length=40)
    full = full_vtm_matrix(model.vtm_score, videos, tokens["input_ids"], tokens["attention_mask"]).T.numpy()
    assert annotations.relevancy is not None
    expected = epic_mir_metrics(full, annotations.relevancy).to_dict()
    for key, value in expected.items():
        assert every[key] == pytest.approx(value, abs=1e-6), key

    assert main([*common, "eval.k=2", "--output", str(tmp_path / "k2.json")]) == 0
    top2 = json.loads((tmp_path / "k2.json").read_text())["metrics"]
    assert top2["vtm_pairs"] <= 2 * (top2["clips"] + top2["sentences"]) < top2["full_pairs"]
    assert all(0 < top2[k] <= 100 for k in expected)


def test_charades_vtm_reranks_and_with_every_video_equals_full_vtm(small_world, tmp_path, capsys):
    from egovlp.data.charades import load_charades_ego
    from egovlp.data.charades_dataset import CharadesVideoDataset
    from egovlp.metrics import charades_map
    from egovlp.models.vtm_rerank import full_vtm_matrix

    weights = allinone_weights(tmp_path / "aio.safetensors", "allinone-test")
    world = small_world.files
    common = ["evaluate", "charades_vtm", "--checkpoint", str(weights), *charades_paths(world), "eval.num_workers=0",
              "device=cpu"]  # fmt: skip
    assert main([*common, "eval.k=100000", "--output", str(tmp_path / "all.json")]) == 0
    assert "VTM re-ranking of the top 100000 videos" in capsys.readouterr().out
    every = json.loads((tmp_path / "all.json").read_text())["metrics"]
    assert every["vtm_pairs"] == every["full_pairs"]

    model = load_model(weights).eval()
    annotations = load_charades_ego(world["charades"], "test")
    dataset = CharadesVideoDataset(annotations, world["charades"] / "videos", 3, eval_transform(32))
    items = [dataset[i] for i in range(len(dataset))]
    videos = torch.stack([it["video"] for it in items])
    tokens = Tokenizer.from_dir(world["tokenizer"])(annotations.prompts, max_length=30)
    full = full_vtm_matrix(model.vtm_score, videos, tokens["input_ids"], tokens["attention_mask"]).T  # (V, C)
    expected = charades_map(full.numpy(), torch.stack([it["label"] for it in items]).numpy())
    assert every["mAP"] == pytest.approx(100.0 * expected.map, abs=1e-6)

    assert main([*common, "eval.k=1", "--output", str(tmp_path / "k1.json")]) == 0
    one = json.loads((tmp_path / "k1.json").read_text())["metrics"]
    assert one["vtm_pairs"] <= len(annotations.prompts) < one["full_pairs"] and 0 < one["mAP"] <= 100
