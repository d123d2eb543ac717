"""QFVS task: leave-one-out bookkeeping, the scorer and its losses, the feature cache (against the model's own fused
pass), and `egovlp finetune qfvs` / `egovlp evaluate qfvs` end to end on a small synthetic QFVS set."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from egovlp.cli.main import main
from egovlp.data.synthetic import SynthConfig, plan_world
from egovlp.data.synthetic.qfvs import write_qfvs
from egovlp.data.tokenizer import Tokenizer
from egovlp.data.transforms import eval_transform
from egovlp.features.qfvs import PROMPT_MAX_LENGTH, ShotFeatureCache
from egovlp.models.qfvs_scorer import QFVSScorer
from egovlp.models.weights import load_model
from egovlp.tasks.qfvs import (
    QFVSData,
    QFVSModule,
    QFVSQueries,
    QFVSSegments,
    QFVSSet,
    collate_queries,
    leave_one_out,
    scorers_from_checkpoint,
)
from egovlp.train.datasets import TrainingDataset

QFVS_WORLD = SynthConfig(seed=5, num_shapes=3, num_colours=3, qfvs_videos=3, qfvs_video_seconds=120.0,
                         qfvs_event_seconds=10.0, qfvs_props_per_video=4, workers=1)  # fmt: skip


@pytest.fixture(scope="module")
def qfvs_root(tmp_path_factory) -> Path:
    """3 videos of 24 shots, 3 concepts (cube, ball, cone): 3 queries per video."""
    out = tmp_path_factory.mktemp("qfvs_world")
    write_qfvs(plan_world(QFVS_WORLD), out)
    return out / "qfvs"


@pytest.fixture(scope="module")
def tiny(tiny_weights):
    return load_model(tiny_weights, num_frames=5).eval()


@pytest.fixture(scope="module")
def qset(qfvs_root, tiny, world) -> QFVSSet:
    cache = ShotFeatureCache(tiny, Tokenizer.from_dir(world["tokenizer"]), str(qfvs_root), eval_transform(32),
                             torch.device("cpu"), block=8)  # fmt: skip
    return QFVSSet(QFVSData(root=str(qfvs_root)), QFVSSegments(max_segments=4, max_segment_len=12), cache)


def test_leave_one_out_folds():
    folds = leave_one_out(["P03", "P01", "P02", "P01"])
    assert [f.test for f in folds] == ["P03", "P01", "P02"]
    for f in folds:
        assert f.test not in f.train and sorted((f.test, *f.train)) == ["P01", "P02", "P03"]
    with pytest.raises(Exception, match="at least 2 videos"):
        leave_one_out(["P01"])


def test_training_items_never_hold_their_test_video(qset):
    items = QFVSQueries(qset).items
    assert len(items) == sum(len(qset.queries[v]) for f in qset.folds for v in f.train)
    for k, query in items:
        assert query.video != qset.folds[k].test and query.video in qset.folds[k].train
    tested = [f.test for f in qset.folds]
    assert sorted(tested) == sorted(qset.videos) and len(set(tested)) == len(tested)
    for name, segs in qset.segments.items():  # KTS segments tile the video within the limits
        assert segs[0][0] == 0 and segs[-1][1] == qset.videos[name].num_shots and len(segs) <= 4
        assert all(a < b <= a + 12 for a, b in segs) and all(x[1] == y[0] for x, y in itertools.pairwise(segs))


def test_feature_cache_is_reused_and_equals_the_fused_pass(qset, tiny, world, qfvs_root):
    cache = qset.cache
    passes = cache.video_passes
    query = qset.queries["P02"][0]
    first = qset.features(query)
    QFVSQueries(qset)[0]  # a training item reads the cache
    assert cache.video_passes == passes and qset.features(query)[2] is first[2]  # nothing recomputed
    # a new prompt encodes the video once more, for that prompt only
    entry = cache.get("P02", qset.videos["P02"].num_shots, ["There is a ring"])
    assert cache.video_passes == passes + -(-qset.videos["P02"].num_shots // 8)
    assert entry.prompts[query.prompts[2]] is first[2]
    # slow reference: the model's own fused pass on one shot and one prompt
    from egovlp.data.qfvs_shots import QFVSShotBlocks, ShotReader, find_shot_source

    shots = QFVSShotBlocks(ShotReader(find_shot_source(qfvs_root, "P02"), 24), eval_transform(32), block=24)[0]
    tok = Tokenizer.from_dir(world["tokenizer"])([query.prompts[2]], max_length=PROMPT_MAX_LENGTH, padding="max_length")
    with torch.no_grad():
        fused = tiny.fuse(shots["shots"][5:6], tok["input_ids"], tok["attention_mask"], video_out="cls")
        ref = tiny.cross_modal_video_transform(fused.video[:, 0])[0]
    torch.testing.assert_close(first[2][5], ref, rtol=1e-4, atol=1e-5)


def _batch(qset, n=4):
    data = TrainingDataset(QFVSQueries(qset), seed=0)
    return collate_queries([data[i] for i in range(0, len(data), len(data) // n)][:n])


def test_a_training_step_lowers_the_loss_on_a_fixed_batch(qset):
    torch.manual_seed(0)
    dim = qset.features(qset.queries["P01"][0])[0].shape[1]
    scorers = nn.ModuleDict({f.test: QFVSScorer(dim, ff_dim=64, dropout=0.0, head_dropout=0.0) for f in qset.folds})
    module = QFVSModule(nn.Linear(1, 1), scorers, qset.folds)
    assert not any(p.requires_grad for p in module.model.parameters())  # the backbone is frozen
    batch = _batch(qset)
    assert len(set(batch["fold"])) > 1  # items of several folds in one batch
    optimizer = torch.optim.AdamW(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        out = module(batch)
        assert set(out) == {"loss", "loss_concept1", "loss_concept2", "loss_oracle"}
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < 0.8 * losses[0], losses
    # a fold's scorer gets gradients from its own items only
    module.zero_grad()
    only = {k: [v[0]] for k, v in batch.items() if k != "num_skipped"}
    module(only)["loss"].backward()
    held = qset.folds[only["fold"][0]].test
    for name, scorer in module.scorers.items():
        assert (scorer.summ_head.weight.grad is not None) == (name == held)


def _paths(world, root) -> list[str]:
    return [f"data.root={root}", f"data.tokenizer={world['tokenizer']}", "data.shot_block=8", "eval.top_fraction=0.1",
            "segments.max_segments=4", "segments.max_segment_len=12"]  # fmt: skip


def test_finetune_then_evaluate_qfvs(world, tiny_weights, qfvs_root, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["finetune", "qfvs", "--config", "finetune/qfvs", f"init.checkpoint={tiny_weights}",
            *_paths(world, qfvs_root), "scorer.ff_dim=64", "train.epochs=2", "optim.lr=1e-3", f"train.output_dir={out}",
            "train.device=cpu", "train.progress=false", "train.tensorboard=false", "train.plot=false",
            "train.resume="]  # fmt: skip
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "QFVS semantic matching" in table and "random scores (mean)" in table and "P03" in table
    final = json.loads((out / "results.json").read_text())["metrics"]
    assert final["queries"] == 9 and final["videos"] == ["P01", "P02", "P03"]
    for key in ("P", "R", "F1", "P01/F1", "random/F1"):
        assert 0 <= final[key] <= 100
    model = load_model(out / "model.safetensors", num_frames=5)
    assert sorted(scorers_from_checkpoint(model)) == ["P01", "P02", "P03"]
    result = tmp_path / "eval.json"
    argv = ["evaluate", "qfvs", "--checkpoint", str(out / "model.safetensors"), "--config", "eval/qfvs",
            *_paths(world, qfvs_root), "device=cpu", "--output", str(result)]  # fmt: skip
    assert main(argv) == 0
    again = json.loads(result.read_text())
    again = again.get("metrics", again)
    for key in ("P", "R", "F1", "P01/F1", "P02/F1", "P03/F1", "random/F1"):
        assert again[key] == pytest.approx(final[key], abs=1e-6), key


def test_evaluate_without_scorers_says_what_to_do(world, tiny_weights, qfvs_root, capsys):
    argv = ["evaluate", "qfvs", "--checkpoint", str(tiny_weights), *_paths(world, qfvs_root), "device=cpu"]
    assert main(argv) == 1
    assert "egovlp finetune qfvs" in capsys.readouterr().err
