"""Ego4D NLQ: the VSLNet head, span labels / pooling / decoding against loops, feature caching, the CLI end to end."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from egovlp.cli.main import main
from egovlp.data.nlq import NLQAnnotations, NLQQuery, load_nlq, read_nlq_submission
from egovlp.episodic.spans import highlight_labels, pool_edges, pool_windows, span_labels, top_spans
from egovlp.episodic.vslnet import VSLNet, VSLNetConfig, vslnet_config_from_state, vslnet_loss
from egovlp.tasks.nlq import prior_windows

CFG = VSLNetConfig(video_dim=12, text_dim=10, hidden=16, num_heads=4, max_pos_len=40, dropout=0.0)


def _batch(seed: int = 0, n: int = 20, lengths=(20, 13, 7)) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    b = len(lengths)
    video_mask = (torch.arange(n)[None] < torch.tensor(lengths)[:, None]).long()
    text_mask = (torch.arange(6)[None] < torch.tensor([6, 4, 3][:b])[:, None]).long()
    start = torch.tensor([min(3, ln - 1) for ln in lengths])
    end = torch.tensor([min(7, ln - 1) for ln in lengths])
    highlight = ((torch.arange(n)[None] >= start[:, None]) & (torch.arange(n)[None] <= end[:, None])).float()
    return {"video": torch.randn(b, n, 12, generator=g) * video_mask[..., None], "video_mask": video_mask,
            "text": torch.randn(b, 6, 10, generator=g), "text_mask": text_mask, "start": start, "end": end,
            "highlight": highlight}  # fmt: skip


def _forward(head, batch):
    return head(batch["video"], batch["video_mask"], batch["text"], batch["text_mask"])


def test_vslnet_shapes_and_masking():
    head = VSLNet(CFG).eval()
    batch = _batch()
    out = _forward(head, batch)
    assert out.start_logits.shape == out.end_logits.shape == out.highlight.shape == (3, 20)
    pad = batch["video_mask"] == 0
    assert (out.start_logits[pad] < -1e29).all() and (out.end_logits[pad] < -1e29).all()
    assert (out.highlight[pad] == 0).all() and ((out.highlight[~pad] > 0) & (out.highlight[~pad] < 1)).all()
    # a clip alone equals the clip padded in a batch: padding changes nothing on the real windows
    alone = {k: v[2:3, :7] if v.ndim > 1 and v.shape[1] == 20 else v[2:3] for k, v in batch.items()}
    single = _forward(head, alone)
    torch.testing.assert_close(single.start_logits[0], out.start_logits[2, :7], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(single.highlight[0], out.highlight[2, :7], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="max_pos_len"):
        head(torch.zeros(1, 41, 12), torch.ones(1, 41), torch.zeros(1, 6, 10), torch.ones(1, 6))


def test_a_training_step_lowers_the_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    head = VSLNet(CFG).train()
    batch = _batch()
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)

    def loss() -> dict[str, torch.Tensor]:
        return vslnet_loss(_forward(head, batch), batch["start"], batch["end"], batch["highlight"],
                           batch["video_mask"], CFG.highlight_weight)  # fmt: skip

    first = loss()
    for _ in range(30):
        opt.zero_grad()
        loss()["loss"].backward()
        opt.step()
    last = loss()
    assert last["loss"] < 0.5 * first["loss"]
    parts = first["span_loss"].item() + 5.0 * first["highlight_loss"].item()
    assert first["loss"].item() == pytest.approx(parts)


def test_highlight_loss_weighs_positives_twice_over_real_windows():
    from egovlp.episodic.vslnet import VSLNetOutput

    h = torch.tensor([[0.8, 0.4, 0.3, 0.5]])
    out = VSLNetOutput(torch.zeros(1, 4), torch.zeros(1, 4), h)
    labels, mask = torch.tensor([[1.0, 0.0, 1.0, 0.0]]), torch.tensor([[1, 1, 1, 0]])
    got = vslnet_loss(out, torch.tensor([0]), torch.tensor([2]), labels, mask, 5.0)["highlight_loss"]
    expected = (2 * -np.log(0.8) + -np.log(0.6) + 2 * -np.log(0.3)) / 3
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_head_config_is_read_back_from_its_weights():
    head = VSLNet(CFG)
    cfg = vslnet_config_from_state(head.state_dict(), num_heads=4, dropout=0.0)
    assert cfg == CFG


def _pool_loop(x: np.ndarray, max_len: int) -> np.ndarray:
    """The release's visual_feature_sampling, as a loop."""
    n = len(x)
    if n <= max_len:
        return x
    idxs = np.round(np.arange(0, max_len + 1, 1.0) / max_len * n).astype(np.int32)
    idxs[idxs > n - 1] = n - 1
    out = []
    for i in range(max_len):
        s, e = idxs[i], idxs[i + 1]
        out.append(np.mean(x[s:e], axis=0) if s < e else x[s])
    return np.asarray(out)


@pytest.mark.parametrize("n, max_len", [(10, 16), (17, 16), (300, 256), (40, 7), (9, 8)])
def test_pooling_equals_the_release_loop(n, max_len):
    x = np.random.default_rng(n).normal(size=(n, 5)).astype(np.float32)
    start = np.arange(n, dtype=np.float64) * 0.5
    pooled, s, e = pool_windows(x, start, start + 0.5, max_len)
    np.testing.assert_allclose(pooled, _pool_loop(x, max_len), rtol=1e-5, atol=1e-6)
    assert len(pooled) == min(n, max_len) and (s[1:] >= s[:-1]).all() and (e > s).all()
    if n > max_len:
        edges = pool_edges(n, max_len)
        assert s[0] == 0.0 and e[-1] <= start[-1] + 0.5 and edges[-1] == n - 1


def test_span_labels_are_the_best_iou_pair_of_a_brute_force_search():
    from egovlp.metrics.grounding import temporal_iou

    rng = np.random.default_rng(0)
    start = np.arange(12) * 0.5
    end = start + 0.5
    for _ in range(50):
        a = rng.uniform(0, 6)
        window = (a, min(6.0, a + rng.uniform(0.1, 3)))
        best, arg = -1.0, None
        for i in range(12):
            for j in range(i, 12):
                iou = float(temporal_iou(np.array([start[i], end[j]]), np.array(window)))
                if iou > best:
                    best, arg = iou, (i, j)
        assert span_labels(start, end, window) == arg
    assert span_labels(start, end, (1.0, 2.0)) == (2, 3)  # exactly units 2..3
    np.testing.assert_array_equal(highlight_labels(2, 5, 10, 0.25), [0, 1, 1, 1, 1, 1, 1, 0, 0, 0])  # x = round(1.0)
    np.testing.assert_array_equal(highlight_labels(0, 1, 3, 0.0), [1, 1, 0])


def test_top_spans_equal_a_brute_force_ranking():
    g = torch.Generator().manual_seed(1)
    s_logits, e_logits = torch.randn(4, 9, generator=g), torch.randn(4, 9, generator=g)
    mask = (torch.arange(9)[None] < torch.tensor([9, 6, 4, 9])[:, None]).long()
    s_logits[3] = 0.0  # ties: equal scores are ranked by (start, end)
    e_logits[3] = 0.0
    starts, ends, scores = top_spans(s_logits.masked_fill(mask == 0, -1e30), e_logits.masked_fill(mask == 0, -1e30),
                                     mask, 5)  # fmt: skip
    for row in range(4):
        n = int(mask[row].sum())
        ps, pe = torch.softmax(s_logits[row, :n], 0), torch.softmax(e_logits[row, :n], 0)
        pairs = sorted((-(ps[i] * pe[j]).item(), i, j) for i in range(n) for j in range(i, n))[:5]
        assert [(i, j) for _, i, j in pairs] == list(zip(starts[row].tolist(), ends[row].tolist()))
        np.testing.assert_allclose(scores[row].numpy(), [-p for p, _, _ in pairs], rtol=1e-5)


def test_prior_windows_are_the_most_common_normalised_train_windows():
    def q(i: int, window, duration=10.0) -> NLQQuery:
        return NLQQuery("v", "c", "a", i, "when?", window, duration)

    queries = (q(0, (1.0, 2.0)), q(1, (1.2, 1.9)), q(2, (4.0, 8.0), 20.0), q(3, (0.0, 3.0)))
    ann = NLQAnnotations("train.json", queries, {}, (), ())
    np.testing.assert_allclose(prior_windows(ann, 10, 3), [[0.1, 0.2], [0.0, 0.3], [0.2, 0.4]])


# ------------------------------------------------------------------------------------------------ CLI end to end
def _paths(world) -> list[str]:
    ep = world["episodic"]
    return [f"data.annotation_dir={ep}", f"data.video_root={ep / 'videos'}", f"data.tokenizer={world['tokenizer']}",
            "features.window.fps=8", "features.num_workers=0", "features.progress=false"]  # fmt: skip


@pytest.mark.timeout(400)
def test_finetune_evaluate_and_submission_end_to_end(world, tiny_weights, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["finetune", "nlq", "--config", "finetune/nlq", *_paths(world), f"init.checkpoint={tiny_weights}",
            f"model.arch={tiny_weights}", "head.hidden=16", "head.num_heads=2", "train_data.batch_size=8",
            f"train.output_dir={out}", "train.epochs=2", "train.eval_every=3", "train.save_every=0",
            "train.plot=false", "train.tensorboard=false", "train.progress=false", "train.log_every=1"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "last (epoch 2)" in printed and "val-selected (epoch" in printed and "prior window (train)" in printed
    results = json.loads((out / "results.json").read_text())["metrics"]
    val = load_nlq(world["episodic"] / "nlq_val.json")
    assert results["queries"] == len(val) and results["without_query"] == 1 and results["missing"] == 0
    assert set(results) >= {f"R{k}@{t}" for k in (1, 3, 5) for t in ("0.3", "0.5", "0.01")} | {"mIoU", "epoch"}
    cache = out / "features"
    files = sorted((cache / "val").glob("*.safetensors"))
    stamps = {p: os.stat(p).st_mtime_ns for p in files}
    # evaluate the kept best head: the cached val features are reused (same backbone), nothing is extracted again
    best_json = tmp_path / "best.json"
    argv = ["evaluate", "nlq", "--checkpoint", str(out / "nlq_best.safetensors"), "--config", "eval/nlq",
            *_paths(world), f"features.dir={cache}", "head.num_heads=2", "--output", str(best_json)]  # fmt: skip
    assert main(argv) == 0
    assert {p: os.stat(p).st_mtime_ns for p in files} == stamps
    best = json.loads(best_json.read_text())["metrics"]
    assert best["R1@0.3"] == pytest.approx(results["selected/R1@0.3"])
    assert best["mIoU"] == pytest.approx(results["selected/mIoU"])
    # the test split: the challenge submission, read back by the reader, 5 windows for every query with text
    sub = tmp_path / "sub.json"
    argv = ["evaluate", "nlq", "--checkpoint", str(out / "model.safetensors"), *_paths(world),
            f"features.dir={cache}", "head.num_heads=2", "eval.split=test", f"eval.submission={sub}",
            "--output", str(tmp_path / "test.json")]  # fmt: skip
    assert main(argv) == 0
    test = load_nlq(world["episodic"] / "nlq_test_unannotated.json")
    preds = read_nlq_submission(sub)
    assert [p.key for p in preds] == [q.key for q in test.queries]
    duration = {q.key: q.clip_duration for q in test.queries}
    assert all(len(p.predicted_times) == 5 and all(0 <= s <= e <= duration[p.key] for s, e in p.predicted_times)
               for p in preds)  # fmt: skip


def test_feature_cache_resumes_only_the_missing_clips(world, tiny_weights, tmp_path):
    from egovlp.data.tokenizer import Tokenizer
    from egovlp.episodic.nlq_data import NLQFeatureConfig, NLQFeatureSet, backbone_id, extract_nlq_features
    from egovlp.features.windows import WindowConfig
    from egovlp.models.weights import load_model

    model = load_model(tiny_weights, num_frames=4)
    cfg = NLQFeatureConfig(window=WindowConfig(num_frames=4, size=16, stride=16, last="drop", fps=8),
                           num_workers=0, progress=False)  # fmt: skip
    ann_path = world["episodic"] / "nlq_test_unannotated.json"
    tok = Tokenizer.from_dir(world["tokenizer"])
    args = (ann_path, str(world["episodic"] / "videos"), tmp_path / "test", model, tok, str(world["tokenizer"]),
            torch.device("cpu"))  # fmt: skip
    folder = extract_nlq_features(cfg, *args)
    first = sorted(folder.glob("*.safetensors"))
    assert len(first) == 1
    kept = NLQFeatureSet(load_nlq(ann_path), folder, 256, 0.1)
    stamp = os.stat(first[0]).st_mtime_ns
    extract_nlq_features(cfg, *args)  # everything cached: nothing rewritten
    assert os.stat(first[0]).st_mtime_ns == stamp
    first[0].unlink()
    extract_nlq_features(cfg, *args)  # the missing clip is extracted again, identically
    again = NLQFeatureSet(load_nlq(ann_path), folder, 256, 0.1)
    np.testing.assert_array_equal(again.samples[0].video, kept.samples[0].video)
    assert backbone_id(model) == backbone_id(load_model(tiny_weights, num_frames=4))
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert backbone_id(model) != backbone_id(load_model(tiny_weights, num_frames=4))
    from egovlp.errors import ConfigError, DataError

    with pytest.raises((ConfigError, DataError)):  # another backbone is refused by the store, not mixed in
        extract_nlq_features(cfg, *args)
