"""Ego4D MQ: detector targets on a hand-built case, losses, Soft-NMS against its loop reference, a training step that
lowers the loss, local attention SDPA vs reference, and ``egovlp finetune|evaluate mq`` end to end on the synthetic
episodic set with a tiny model (submission round trip)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from egovlp.cli.main import main
from egovlp.data.moments import load_moments, read_mq_submission
from egovlp.episodic.detector import DetectorConfig, TemporalDetector, local_window_mask, padded_length
from egovlp.episodic.inference import InferenceConfig, detect_clips
from egovlp.episodic.loss import DetectionLoss, DetectionLossConfig
from egovlp.episodic.soft_nms import soft_nms, soft_nms_reference
from egovlp.episodic.targets import (
    assign_targets,
    decode_segments,
    diou_loss_1d,
    make_points,
    regression_ranges,
    sigmoid_focal_loss,
)
from egovlp.models.layers import set_attention_impl

TINY_HEAD = DetectorConfig(embed_dim=16, num_levels=3, num_heads=2, window_size=3, path_drop=0.0)


# ------------------------------------------------------------------------------------------------ targets
def test_points_and_ranges():
    pts = make_points(16, 3)
    assert pts.position.tolist() == [*range(16), *range(0, 16, 2), *range(0, 16, 4)]
    assert pts.stride.tolist() == [1.0] * 16 + [2.0] * 8 + [4.0] * 4
    assert regression_ranges(3) == [(0.0, 4.0), (4.0, 8.0), (8.0, math.inf)]


def test_assignment_hand_built_case():
    """Segment A [2, 6] (class 1) and B [1, 14] (class 3) on a 16-step, 3-level pyramid, centre radius 1.5.

    Level 0 (stride 1, range [0, 4]): A's centre region is (2.5, 5.5) -> points 3, 4, 5 (reach 3, 2, 3); B's is
    (6, 9) -> points 7, 8 reach 7 > 4. Level 1 (stride 2, [4, 8]): A's region (2, 6) has position 4, reach 2 < 4;
    B's (4.5, 10.5) has 6 (reach 8), 8 (reach 7) and 10 (reach 9 > 8). Level 2 (stride 4, [8, inf]): B's (1.5, 13.5)
    has 4 (reach 10), 8 (reach 7 < 8) and 12 (reach 11).
    """
    pts = make_points(16, 3)
    cls, reg = assign_targets(pts, torch.tensor([[2.0, 6.0], [1.0, 14.0]]), torch.tensor([1, 3]), 5)
    positive = torch.nonzero(cls.sum(1)).squeeze(1).tolist()
    assert positive == [3, 4, 5, 16 + 3, 16 + 4, 24 + 1, 24 + 3]
    assert cls[[3, 4, 5]].argmax(1).tolist() == [1, 1, 1] and cls[[19, 20, 25, 27]].argmax(1).tolist() == [3] * 4
    assert cls.sum().item() == 7  # one class per positive point
    expected = [[1, 3], [2, 2], [3, 1], [5 / 2, 8 / 2], [7 / 2, 6 / 2], [3 / 4, 10 / 4], [11 / 4, 2 / 4]]
    assert reg[positive].tolist() == expected
    # decoding the regression targets gives the segments back
    seg = decode_segments(pts, reg)[positive]
    assert seg.tolist() == [[2.0, 6.0]] * 3 + [[1.0, 14.0]] * 4


def test_assignment_shortest_wins_and_equal_lengths_share_the_point():
    pts = make_points(8, 1)  # one level, range [0, inf)
    segs = torch.tensor([[0.0, 7.0], [2.0, 5.0], [3.0, 6.0]])
    cls, reg = assign_targets(pts, segs, torch.tensor([0, 1, 2]), 3, center_radius=0)
    assert cls[1].tolist() == [1, 0, 0]  # only the long one contains 1
    assert cls[4].tolist() == [0, 1, 1]  # inside both length-3 segments: multi-hot, regression to the first
    assert reg[4].tolist() == [2.0, 1.0]
    empty_cls, empty_reg = assign_targets(pts, torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), 3)
    assert empty_cls.sum() == 0 and empty_reg.sum() == 0


# ------------------------------------------------------------------------------------------------- losses
def test_focal_loss_hand_computed():
    logits, target = torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.0])
    p = 1 / (1 + math.exp(-2.0))
    expected = 0.25 * 0.5**2 * math.log(2) + 0.75 * p**2 * -math.log(1 - p)
    assert sigmoid_focal_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    assert sigmoid_focal_loss(logits, target, alpha=-1, gamma=0).item() == pytest.approx(
        math.log(2) - math.log(1 - p), rel=1e-6
    )


def test_diou_loss_hand_computed():
    # pred [-1, 3] vs target [-2, 2] around the same point: overlap 3, union 5, enclosing 5, centres 1 and 0
    loss = diou_loss_1d(torch.tensor([[1.0, 3.0]]), torch.tensor([[2.0, 2.0]]))
    assert loss.item() == pytest.approx(1 - 3 / 5 + (1 / 5) ** 2)
    assert diou_loss_1d(torch.tensor([[2.0, 2.0]]), torch.tensor([[2.0, 2.0]])).item() == pytest.approx(0.0)


# ----------------------------------------------------------------------------------------------- soft-NMS
@pytest.mark.parametrize("method", ["gaussian", "linear", "hard"])
def test_soft_nms_equals_loop_reference(method):
    rng = np.random.default_rng(0)
    for trial in range(6):
        n = int(rng.integers(0, 60))
        start = rng.uniform(0, 50, n)
        seg = np.stack([start, start + rng.uniform(0.1, 10, n)], 1)
        scores, labels = rng.uniform(0, 1, n), rng.integers(0, 4, n)
        kwargs = dict(method=method, sigma=0.5, iou_threshold=0.3, min_score=0.05, max_num=40 if trial % 2 else 0)
        fast, ref = soft_nms(seg, scores, labels, **kwargs), soft_nms_reference(seg, scores, labels, **kwargs)
        assert fast.index.tolist() == ref.index.tolist()
        np.testing.assert_allclose(fast.scores, ref.scores, rtol=1e-12)
        assert np.array_equal(fast.labels, labels[ref.index]) and np.array_equal(fast.segments, seg[ref.index])


def test_soft_nms_hand_computed():
    seg = np.array([[0.0, 10.0], [0.0, 5.0], [20.0, 30.0], [0.0, 10.0]])
    scores, labels = np.array([0.9, 0.8, 0.7, 0.6]), np.array([0, 0, 0, 1])
    out = soft_nms(seg, scores, labels, "gaussian", sigma=0.5, min_score=0.0)
    # [0, 5] overlaps the kept [0, 10] with tIoU 0.5: 0.8 * exp(-0.25 / 0.5); class 1's copy is untouched
    assert out.index.tolist() == [0, 2, 3, 1]
    np.testing.assert_allclose(out.scores, [0.9, 0.7, 0.6, 0.8 * math.exp(-0.5)])
    hard = soft_nms(seg, scores, labels, "hard", iou_threshold=0.4, min_score=0.01)
    assert hard.index.tolist() == [0, 2, 3]
    assert soft_nms(np.zeros((0, 2)), np.zeros(0), np.zeros(0, int)).index.size == 0


# ----------------------------------------------------------------------------------------------- detector
def test_local_window_mask_and_attention_paths_agree():
    mask = torch.tensor([[True] * 6 + [False] * 2])
    bias = local_window_mask(mask, 3, torch.float32)[0, 0]
    seen = bias == 0
    assert seen[2].tolist() == [False, True, True, True, False, False, False, False]
    assert seen[7].tolist() == [False] * 7 + [True]  # a padded step far from valid ones sees itself only
    det = TemporalDetector(TINY_HEAD, 8, 3).eval()
    x, m = torch.randn(2, 16, 8), torch.ones(2, 16, dtype=torch.bool)
    m[1, 11:] = False
    fast = det(x, m)
    set_attention_impl(det, "reference")
    ref = det(x, m)
    for a, b in zip(fast.cls_logits + fast.offsets, ref.cls_logits + ref.offsets):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert [t.shape[1] for t in fast.cls_logits] == [16, 8, 4] and fast.masks[2][1].tolist() == [True] * 3 + [False]
    with pytest.raises(ValueError, match="multiple of 4"):
        det(torch.randn(1, 10, 8), torch.ones(1, 10, dtype=torch.bool))
    assert padded_length(10, 3) == 12 and padded_length(0, 3) == 4


def _fixed_batch():
    torch.manual_seed(1)
    feats = torch.randn(2, 32, 8)
    feats[0, 4:12, 0] += 3.0  # the action shows in the features
    feats[1, 20:30, 0] += 3.0
    mask = torch.ones(2, 32, dtype=torch.bool)
    segments = [torch.tensor([[4.0, 11.0]]), torch.tensor([[20.0, 29.0]])]
    return feats, mask, segments, [torch.tensor([1]), torch.tensor([2])]


def test_training_steps_lower_the_loss_and_detections_follow():
    feats, mask, segments, labels = _fixed_batch()
    det = TemporalDetector(TINY_HEAD, 8, 3)
    loss_fn = DetectionLoss(DetectionLossConfig(), 3)
    points = make_points(32, TINY_HEAD.num_levels)
    opt = torch.optim.AdamW(det.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        out = loss_fn(det(feats, mask), points, segments, labels)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.5 * losses[0]
    assert loss_fn.normalizer.item() < 100.0  # the running number of positives moved from its start
    det.eval()
    batch = {"t0": [0.25, 0.25], "dt": [0.5, 0.5], "offset": [0, 0], "duration": [16.0, 16.0]}
    clips = detect_clips(det(feats, mask), points, batch, InferenceConfig())
    for clip, truth, label in zip(clips, ([2.25, 5.75], [10.25, 14.75]), (1, 2)):
        assert clip.labels[0] == label and np.all(np.diff(clip.scores) <= 0)
        top = clip.segments[0]
        iou = max(0.0, min(top[1], truth[1]) - max(top[0], truth[0])) / (max(top[1], truth[1]) - min(top[0], truth[0]))
        assert iou > 0.5


# -------------------------------------------------------------------------------------------- end to end
def _paths(world) -> list[str]:
    e = world["episodic"]
    return [f"data.val={e / 'moments_val.json'}", f"data.video_root={e / 'videos'}",
            f"data.tokenizer={world['tokenizer']}", "data.num_frames=4", "data.extract=[window.fps=30,num_workers=0]",
            "eval.num_workers=0"]  # fmt: skip


@pytest.mark.timeout(240)
def test_finetune_then_evaluate_mq_end_to_end(small_world, tiny_weights, tmp_path, capsys):
    e, cache, run = small_world["episodic"], tmp_path / "features", tmp_path / "run"
    common = [*_paths(small_world), f"data.feature_cache={cache}"]
    args = ["finetune", "mq", "--config", "finetune/mq", f"init.checkpoint={tiny_weights}",
            f"data.train={e / 'moments_train.json'}", *common, "head.embed_dim=16", "head.num_levels=3",
            "head.num_heads=2", "train_data.num_workers=0", "train.epochs=2", f"train.output_dir={run}",
            "train.device=cpu", "train.progress=false", "train.tensorboard=false", "train.plot=false"]  # fmt: skip
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "Ego4D MQ" in out and "Recall@1..5x tIoU 0.5" in out
    trained = json.loads((run / "results.json").read_text())["metrics"]
    assert {"mAP@0.1", "mAP@0.5", "average_mAP", "R1x@0.3", "R5x@0.7"} <= set(trained)
    assert trained["clips"] == 1 and trained["clips_without_features"] == 0
    [folder] = list(cache.iterdir())  # extracted once, into the weights' fingerprint folder
    stamp = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.safetensors")}
    assert len(stamp) == 5  # 4 train clips + 1 val clip

    # evaluate the fine-tuned weight file: same features (the backbone is frozen), same numbers
    result = tmp_path / "mq.json"
    eval_args = ["evaluate", "mq", "--checkpoint", str(run / "model.safetensors"), *common, "device=cpu",
                 f"output_dir={tmp_path / 'eval'}", "--output", str(result)]  # fmt: skip
    assert main(eval_args) == 0
    evaluated = json.loads(result.read_text())["metrics"]
    assert {k: v for k, v in evaluated.items() if k != "submission"} == {
        k: v for k, v in trained.items() if k not in ("submission", "step")
    }
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.safetensors")} == stamp  # nothing re-extracted

    # the submission round-trips through the reader and ranks each clip's detections by score
    classes = load_moments(e / "moments_train.json").classes
    sub = read_mq_submission(evaluated["submission"], classes)
    val = load_moments(e / "moments_val.json", classes=classes)
    assert set(sub) == {c.clip_uid for c in val.clips}
    dets = next(iter(sub.values()))
    assert len(dets) == evaluated["detections"] and all(a.score >= b.score for a, b in itertools.pairwise(dets))

    # the test split: the challenge file only
    test_args = [*eval_args[:-2], f"data.test={e / 'moments_test_unannotated.json'}", "eval.split=test",
                 "--output", str(tmp_path / "test.json")]  # fmt: skip
    assert main(test_args) == 0
    tested = json.loads((tmp_path / "test.json").read_text())["metrics"]
    assert "average_mAP" not in tested and Path(tested["submission"]).name == "mq_submission_test.json"
    assert len(read_mq_submission(tested["submission"], classes)) == 1


def test_evaluate_mq_without_a_detector_is_explained(small_world, tiny_weights, tmp_path, capsys):
    args = ["evaluate", "mq", "--checkpoint", str(tiny_weights), *_paths(small_world),
            f"data.feature_cache={tmp_path}", "device=cpu"]  # fmt: skip
    assert main(args) != 0
    assert "holds no MQ detector (heads.mq.*): train one with `egovlp finetune mq`" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # refused before extracting anything


def test_mq_is_a_registered_fine_tunable_task_importing_no_sibling():
    import subprocess
    import sys

    from egovlp.tasks.registry import list_tasks

    assert "mq" in list_tasks(finetune=True)
    probe = ("import sys; import egovlp.tasks.mq; print(sorted(m for m in sys.modules if m.startswith('egovlp.tasks.') "
             "and m.rpartition('.')[2] not in ('mq', 'registry', 'shared', 'tasks')))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_uniform_proposals_hand_computed():
    from egovlp.data.moments import MQClip
    from egovlp.episodic.baselines import uniform_proposals

    train = [MQClip("v", "a", 0, 20, ((0.0, 2.0), (5.0, 9.0), (1.0, 4.0)), (0, 1, 0), ("x", "y", "x"))]
    clip = MQClip("w", "b", 0, 7, (), (), ())
    uids, labels, segments, scores = uniform_proposals([clip], train, 3)
    # mean length 3, stride 1.5: starts 0, 1.5 and 3 (the last start is at most 7 - 3 = 4)
    assert segments[:3].tolist() == [[0.0, 3.0], [1.5, 4.5], [3.0, 6.0]]
    assert labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3 and uids == ["b"] * 9
    np.testing.assert_allclose(scores, [2 / 3] * 3 + [1 / 3] * 3 + [0.0] * 3)
