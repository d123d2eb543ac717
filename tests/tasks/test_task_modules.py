"""EK-100 MIR and Charades-Ego task modules and evaluators: losses, learning on a fixed batch, sharded evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from egovlp.data.epic_mir import load_epic_mir
from egovlp.data.epic_mir_dataset import ClipCollate, EpicMIRDataset
from egovlp.data.tokenizer import Tokenizer
from egovlp.data.transforms import train_transform
from egovlp.losses import adaptive_max_margin_loss, cosine_similarity_matrix, egonce_loss
from egovlp.models.weights import load_model
from egovlp.tasks.charades import CharadesData, CharadesEval, CharadesEvaluator, CharadesModule, ContrastiveLossConfig
from egovlp.tasks.epic_mir import (
    EpicMIRData,
    EpicMIREval,
    EpicMIREvaluator,
    EpicMIRModule,
    MarginLossConfig,
)
from egovlp.tasks.shared import encode_texts, encode_videos, merge_shards
from egovlp.train.datasets import TrainingDataset
from egovlp.train.distributed import DistInfo

CPU = torch.device("cpu")


def _dist(rank: int = 0, world: int = 1) -> DistInfo:
    return DistInfo(rank, world, 0, CPU)


@pytest.fixture
def tokenizer(world):
    return Tokenizer.from_dir(world["tokenizer"])


@pytest.fixture
def epic_batch(world, tokenizer):
    ann = load_epic_mir(world["epic"], "train", relevancy="none")
    dataset = TrainingDataset(EpicMIRDataset(ann, world["epic"] / "videos", 4, train_transform(32), train=True), 1)
    return ClipCollate(tokenizer, 30, "max_length")([dataset[i][0] for i in range(8)])


def _train_steps(module, batch, steps: int = 12) -> list[float]:
    """AdamW steps on one batch, dropout off (so the loss sequence is a property of the loss, not of the noise)."""
    module.eval()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    losses = []
    for _ in range(steps):
        loss = module(batch)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_margin_module_is_the_relevancy_weighted_loss(tiny_weights, epic_batch):
    model = load_model(tiny_weights).eval()
    module = EpicMIRModule(model, MarginLossConfig(margin=0.2))
    assert module.has_unused_parameters  # fusion layers idle in the dual pass
    v = model.encode_video(epic_batch["video"])
    t = model.encode_text(epic_batch["input_ids"], epic_batch["attention_mask"])
    expected = adaptive_max_margin_loss(cosine_similarity_matrix(t, v), epic_batch["relevancy"], 0.2)
    torch.testing.assert_close(module(epic_batch)["loss"], expected)
    assert epic_batch["relevancy"].min() > 0.1 and epic_batch["input_ids"].shape == (8, 30)


def test_margin_module_learns_a_fixed_batch(tiny_weights, epic_batch):
    torch.manual_seed(0)
    losses = _train_steps(EpicMIRModule(load_model(tiny_weights), MarginLossConfig()), epic_batch)
    assert all(np.isfinite(losses)) and min(losses[-3:]) < 0.5 * losses[0], losses


def test_contrastive_module_learns_a_fixed_batch(tiny_weights, tokenizer):
    torch.manual_seed(0)
    names = ["Picking up a cube", "Pushing a ball", "Pulling a cone", "Putting down a ring"]
    batch = {"video": torch.randn(4, 4, 3, 32, 32), **tokenizer(names, 15, "max_length")}
    module = CharadesModule(load_model(tiny_weights), ContrastiveLossConfig(), 20)
    losses = _train_steps(module, batch)
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0] and losses[-1] == min(losses[3:]), losses


def test_same_class_positives_is_egonce_over_class_labels(tiny_weights, tokenizer):
    names = ["Picking up a cube", "Pushing a ball", "Picking up a cube", "Putting down a ring"]
    batch = {"video": torch.randn(4, 4, 3, 32, 32), "target": torch.tensor([0, 7, 0, 13]), **tokenizer(names, 15)}
    model = load_model(tiny_weights).eval()
    plain = CharadesModule(model, ContrastiveLossConfig(), 20)(batch)["loss"]
    merged = CharadesModule(model, ContrastiveLossConfig(same_class_positives=True), 20)(batch)["loss"]
    v = model.encode_video(batch["video"])
    t = model.encode_text(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(plain, egonce_loss(t, v, None, None, 0.05, "none").loss)
    same = torch.nn.functional.one_hot(batch["target"], 20)
    torch.testing.assert_close(merged, egonce_loss(t, v, same, None, 0.05, "verb").loss)
    assert merged < plain  # segments 0 and 2 (same class) stop pushing each other apart


def _shards(model, evaluator_type, data, cfg, tokenizer, world_size: int, keep=()) -> list[dict]:
    """What each of ``world_size`` ranks encodes (no process group: every rank's loader in turn)."""
    loaders = [evaluator_type(data, cfg, tokenizer, 32, _dist(r, world_size)).loader for r in range(world_size)]
    return [encode_videos(model, loader, CPU, keep) for loader in loaders]


@pytest.fixture
def tiny(tiny_weights):
    return load_model(tiny_weights, num_frames=4).eval()


def test_epic_sharded_evaluation_equals_one_process(world, tiny, tokenizer):
    data = EpicMIRData(str(world["epic"]), str(world["epic"] / "videos"), str(world["tokenizer"]), num_frames=4)
    cfg = EpicMIREval(batch_size=3, num_workers=0)
    single = EpicMIREvaluator(data, cfg, tokenizer, 32, _dist())
    reference = single(tiny)
    shards = _shards(tiny, EpicMIREvaluator, data, cfg, tokenizer, 2)
    assert sorted(len(s["index"]) for s in shards) == [len(single.annotations) // 2, (len(single.annotations) + 1) // 2]
    merged = merge_shards(shards)
    whole = encode_videos(tiny, single.loader, CPU)
    np.testing.assert_array_equal(merged["index"], np.arange(len(single.annotations)))
    np.testing.assert_allclose(merged["video"], whole["video"], atol=1e-6)
    texts = single.annotations.texts
    text_shards = [
        {"index": np.arange(r, len(texts), 2), "text": encode_texts(tiny, tokenizer, texts[r::2], CPU)} for r in (0, 1)
    ]
    sentences = merge_shards(text_shards)["text"]
    sharded = single.metrics(merged, sentences)
    for key, value in reference.items():
        assert sharded[key] == pytest.approx(value, abs=1e-6), key
    for key in ("mAP_V2T", "mAP_T2V", "mAP_AVG", "nDCG_V2T", "nDCG_T2V", "nDCG_AVG"):
        assert 0.0 < reference[key] <= 100.0
    assert reference["clips"] == len(single.annotations) and reference["skipped_clips"] == 0


def test_epic_metrics_of_perfect_features(world, tokenizer):
    data = EpicMIRData(str(world["epic"]), str(world["epic"] / "videos"), str(world["tokenizer"]), num_frames=4)
    evaluator = EpicMIREvaluator(data, EpicMIREval(num_workers=0), tokenizer, 32, _dist())
    ann = evaluator.annotations
    verbs, nouns = ann.class_arrays
    key = verbs * nouns.shape[1] + nouns.argmax(axis=1)  # one class per synthetic clip: (verb, noun)
    onehot = np.eye(key.max() + 1, dtype=np.float32)[key]
    videos = {"index": np.arange(len(ann)), "video": onehot, "skipped": 0}
    metrics = evaluator.metrics(videos, onehot[ann.sentence_clip_index])
    assert metrics["mAP_V2T"] == pytest.approx(100.0) and metrics["mAP_T2V"] == pytest.approx(100.0)
    subset = {"index": np.array([2, 0]), "video": onehot[[2, 0]], "skipped": 1}  # rows follow the indices
    assert evaluator.metrics(subset, onehot[ann.sentence_clip_index])["mAP_V2T"] == pytest.approx(100.0)


def test_charades_sharded_evaluation_and_perfect_scores(world, tiny, tokenizer):
    data = CharadesData(str(world["charades"]), str(world["charades"] / "videos"), "", str(world["tokenizer"]), 4)
    cfg = CharadesEval(batch_size=5, num_workers=0)
    single = CharadesEvaluator(data, cfg, tokenizer, 32, _dist())
    reference = single(tiny)
    merged = merge_shards(_shards(tiny, CharadesEvaluator, data, cfg, tokenizer, 3, keep=("label",)))
    prompts = encode_texts(tiny, tokenizer, single.annotations.prompts, CPU, max_length=30)
    sharded = single.metrics(merged, prompts)
    assert sharded["mAP"] == pytest.approx(reference["mAP"], abs=1e-6) and 0 < reference["mAP"] <= 100
    labels = single.annotations.labels()
    assert reference["classes_skipped"] == (labels.sum(axis=0) == 0).sum() > 0  # the small test split lacks some
    assert reference["skipped_class_ids"] == np.flatnonzero(labels.sum(axis=0) == 0).tolist()
    perfect = {"index": np.arange(len(labels)), "video": labels.astype(np.float32), "label": labels, "skipped": 0}
    assert single.metrics(perfect, np.eye(labels.shape[1], dtype=np.float32))["mAP"] == pytest.approx(100.0)
