"""EgoTaskQA end to end: the synthetic set, the answer head in weight files and release checkpoints, a training
step, fine-tuning (fusion and dual) and evaluation through the CLI, deterministic frames."""

from __future__ import annotations

import collections
import json
import sys
import types
from pathlib import Path

import pytest
import torch

from egovlp.cli.main import main
from egovlp.data.egotaskqa import load_egotaskqa
from egovlp.data.epic_mir_dataset import ClipCollate
from egovlp.data.tokenizer import Tokenizer
from egovlp.errors import CheckpointError
from egovlp.models import create_model
from egovlp.models.answer_head import AnswerHead
from egovlp.models.convert import convert_official_checkpoint
from egovlp.models.weights import load_model, save_weights
from egovlp.tasks.egotaskqa import (
    EgoTaskQAEval,
    EgoTaskQAEvaluator,
    EgoTaskQALoss,
    EgoTaskQAModule,
    head_from_checkpoint,
    head_input_dim,
    qa_features,
)
from egovlp.train.distributed import DistInfo

from .conftest import TINY

DIST = DistInfo(0, 1, 0, torch.device("cpu"))


@pytest.fixture
def batch():
    """Two random clips (4 frames, 32 px) and token rows, the second padded."""
    g = torch.Generator().manual_seed(1)
    video = torch.randn(2, 4, 3, 32, 32, generator=g)
    ids = torch.randint(5, 250, (2, 9), generator=g)
    ids[:, 0], ids[:, 8] = 0, 2
    mask = torch.ones(2, 9, dtype=torch.long)
    ids[1, 6], ids[1, 7:], mask[1, 7:] = 2, 1, 0
    return video, ids, mask


def qa_paths(world) -> list[str]:
    root = world["egotaskqa"]
    return [
        f"data.split_dir={root / 'Data/qa/direct'}",
        f"data.video_root={root}",
        f"data.tokenizer={world['tokenizer']}",
    ]


@pytest.fixture(scope="module")
def val_split(world):
    return load_egotaskqa(world["egotaskqa"] / "Data/qa/direct", "val")


def test_synthetic_set_reads_back_and_needs_the_video(world):
    root = world["egotaskqa"] / "Data/qa/direct"
    splits = {s: load_egotaskqa(root, s) for s in ("train", "val", "test")}
    intervals = [{r.interval for r in sp.records} for sp in splits.values()]
    assert not (intervals[0] & intervals[1]) and not (intervals[1] & intervals[2])  # split by video
    for sp in splits.values():
        for r in sp.records:
            assert sp.answers[r.answer_id] == r.answer
            assert Path(sp.video_path(world["egotaskqa"], r)).is_file()
    train = splits["train"]
    assert {r.type for r in train.records} == {"open", "binary"}
    assert train.reasoning_type_names == ("descriptive", "object", "temporal", "predictive")
    kinds = collections.Counter(t for r in train.records for t in r.reasoning_types)
    assert kinds["descriptive"] and kinds["object"] and kinds["temporal"] and not kinds["predictive"]
    # one question never has two answers in one video
    seen: dict[tuple[str, str], str] = {}
    for r in train.records:
        assert seen.setdefault((r.interval, r.question), r.answer) == r.answer
    # yes / no are balanced enough that the answer prior cannot solve the binary questions
    binary = collections.Counter(r.answer for r in train.records if r.type == "binary")
    assert 0.3 < binary["yes"] / sum(binary.values()) < 0.7


def test_answer_head_shapes_and_modes(batch):
    model = create_model(TINY).eval()
    video, ids, mask = batch
    for mode in ("fusion", "dual"):
        x = qa_features(model, mode, video, ids, mask)
        assert x.shape == (len(video), head_input_dim(model.cfg, mode))
        assert AnswerHead(x.shape[1], 7)(x).shape == (len(video), 7)
    assert head_input_dim(model.cfg, "dual") == model.cfg.video.width + model.cfg.text.width


def test_a_training_step_lowers_the_loss_on_a_fixed_batch(batch):
    torch.manual_seed(0)
    model = create_model(TINY)
    module = EgoTaskQAModule(model, AnswerHead(model.cfg.video.width, 5, dropout=0.0), "fusion", EgoTaskQALoss())
    video, ids, mask = batch
    data = {"video": video, "input_ids": ids, "attention_mask": mask, "target": torch.arange(len(video)) % 5}
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        loss = module(data)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < losses[0]


def _head_file(tmp_path: Path, num_answers: int, mode: str = "fusion") -> tuple[Path, AnswerHead]:
    torch.manual_seed(1)
    model = create_model(TINY)
    head = AnswerHead(head_input_dim(model.cfg, mode), num_answers).eval()
    heads = {f"egotaskqa.{k}": v for k, v in head.state_dict().items()}
    return save_weights(model, tmp_path / f"{mode}.safetensors", heads=heads), head


def test_head_travels_in_the_weight_file_and_its_size_tells_the_mode(tmp_path):
    for mode in ("fusion", "dual"):
        path, head = _head_file(tmp_path, 9, mode)
        loaded = load_model(path)
        restored, found = head_from_checkpoint(loaded)
        assert found == mode
        for k, v in head.state_dict().items():
            torch.testing.assert_close(restored.state_dict()[k], v)
    plain = save_weights(create_model(TINY), tmp_path / "plain.safetensors")
    with pytest.raises(CheckpointError, match="no EgoTaskQA answer head"):
        head_from_checkpoint(load_model(plain))
    model = create_model(TINY)
    bad = save_weights(model, tmp_path / "bad.safetensors", heads={"egotaskqa.projector_1.weight": torch.zeros(3, 5)})
    with pytest.raises(CheckpointError, match="expected tensors"):
        head_from_checkpoint(load_model(bad))


def _evaluator(world, split, head, mode, tokenizer, **eval_kw) -> EgoTaskQAEvaluator:
    from egovlp.tasks.egotaskqa import EgoTaskQAData

    root = world["egotaskqa"]
    data = EgoTaskQAData(split_dir=str(root / "Data/qa/direct"), video_root=str(root),
                         tokenizer=str(world["tokenizer"]), num_frames=4)  # fmt: skip
    cfg = EgoTaskQAEval(split=split, batch_size=4, num_workers=0, max_questions=12, **eval_kw)
    return EgoTaskQAEvaluator(data, cfg, tokenizer, 32, DIST, head, mode)


def test_evaluation_is_deterministic_and_equals_a_per_question_loop(world, val_split):
    tokenizer = Tokenizer.from_dir(world["tokenizer"])
    torch.manual_seed(2)
    model = create_model(TINY).eval()
    head = AnswerHead(model.cfg.video.width, val_split.num_answers).eval()
    evaluator = _evaluator(world, "val", head, "fusion", tokenizer)
    first, second = evaluator(model), evaluator(model)
    assert first == second and first["All/count"] == 12
    # the same accuracy from one question at a time
    collate, correct = ClipCollate(tokenizer, 30), 0
    dataset = evaluator.loader.dataset
    with torch.no_grad():
        for i in range(12):
            b = collate([dataset[i]])
            logits = head(qa_features(model, "fusion", b["video"], b["input_ids"], b["attention_mask"]))
            correct += int(logits.argmax(-1).item() == val_split.records[i].answer_id)
    assert first["All"] == pytest.approx(100.0 * correct / 12)
    # the release's random frames: repeatable per seed
    rand = _evaluator(world, "val", head, "fusion", tokenizer, frame_sample="random", seed=5)
    assert rand(model) == rand(model)


def _official_qa_checkpoint(model, head: AnswerHead, path: Path) -> None:
    state = {"module." + k: v for k, v in model.state_dict().items()}
    state["module.text_model.embeddings.position_ids"] = torch.arange(model.cfg.text.max_positions).expand(1, -1)
    state.update({"module." + k: v for k, v in head.state_dict().items()})
    mod = types.ModuleType("parse_config")

    class ConfigParser:  # the release pickles its own config class: an unimportable one
        pass

    ConfigParser.__module__, ConfigParser.__qualname__ = "parse_config", "ConfigParser"
    mod.ConfigParser = ConfigParser  # type: ignore[attr-defined]
    sys.modules["parse_config"] = mod
    try:
        torch.save({"state_dict": state, "epoch": 3, "config": ConfigParser()}, path)
    finally:
        del sys.modules["parse_config"]


def test_release_checkpoint_converts_strictly_and_scores(world, val_split, tmp_path, capsys):
    torch.manual_seed(3)
    model = create_model("egovlpv2-tiny").eval()
    head = AnswerHead(model.cfg.video.width, val_split.num_answers).eval()
    _official_qa_checkpoint(model, head, tmp_path / "egotaskqa.pth")
    out = convert_official_checkpoint(tmp_path / "egotaskqa.pth", tmp_path / "qa.safetensors", arch="egovlpv2-tiny")
    loaded = load_model(out)
    restored, mode = head_from_checkpoint(loaded)
    assert mode == "fusion" and restored.num_answers == val_split.num_answers
    tokenizer = Tokenizer.from_dir(world["tokenizer"])
    expected = _evaluator(world, "val", head, "fusion", tokenizer)(model)
    argv = ["evaluate", "egotaskqa", "--checkpoint", str(out), *qa_paths(world), "data.num_frames=4", "eval.split=val",
            "eval.num_workers=0", "eval.max_questions=12", "--output", str(tmp_path / "r.json")]  # fmt: skip
    assert main(argv) == 0
    assert "EgoTaskQA accuracy" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "r.json").read_text())["metrics"]
    assert metrics["All"] == pytest.approx(expected["All"]) and metrics["reasoning/predictive/count"] == 0


@pytest.mark.parametrize("mode", ["fusion", "dual"])
def test_finetune_keeps_the_best_val_model_and_evaluate_scores_it(mode, world, tiny_weights, tmp_path, capsys):
    out = tmp_path / mode
    argv = ["finetune", "egotaskqa", *qa_paths(world), f"init.checkpoint={tiny_weights}", f"model.arch={tiny_weights}",
            "data.num_frames=4", f"head.mode={mode}", f"train.output_dir={out}", "train.max_steps=4",
            "train.eval_every=2", "train_data.batch_size=4", "train_data.num_workers=0", "eval.num_workers=0",
            "eval.max_questions=8", "train.save_every=0", "optim.lr=1e-3", "train.plot=false"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"{mode} head" in printed and "best All so far" in printed
    evaluations = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    vals = [e for e in evaluations if e.get("kind") == "eval"]
    assert len(vals) == 2
    for name in ("egotaskqa_best.safetensors", "model.safetensors"):
        assert head_from_checkpoint(load_model(out / name))[1] == mode
    argv = ["evaluate", "egotaskqa", "--checkpoint", str(out / "egotaskqa_best.safetensors"), *qa_paths(world),
            "data.num_frames=4", "eval.split=val", "eval.num_workers=0", "eval.max_questions=8",
            "--output", str(tmp_path / "best.json")]  # fmt: skip
    assert main(argv) == 0
    best = json.loads((tmp_path / "best.json").read_text())["metrics"]["All"]
    assert best == pytest.approx(max(v["All"] for v in vals))


def test_answer_prior_is_the_most_frequent_train_answer_per_type_and_category():
    from egovlp.data.egotaskqa import QARecord
    from egovlp.tasks.egotaskqa import answer_prior

    def rec(answer_id: int, qtype: str, category: str) -> QARecord:
        return QARecord(0, "v", "q?", str(answer_id), answer_id, qtype, category, category, ("descriptive",))

    train = [rec(0, "binary", "action"), rec(1, "binary", "action"), rec(1, "binary", "action"),
             rec(4, "open", "object"), rec(3, "open", "object"), rec(5, "open", "order")]  # fmt: skip
    questions = [rec(0, "binary", "action"), rec(9, "open", "object"), rec(9, "open", "unseen")]
    # binary/action: 1 (twice); open/object: 3 and 4 tie -> the lower id; unseen pair: the overall top answer (1)
    assert answer_prior(train, questions).tolist() == [1, 3, 1]
