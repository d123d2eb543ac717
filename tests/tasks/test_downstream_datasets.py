"""EK-100 MIR and Charades-Ego datasets on the synthetic files: items, official training pairs, skip policy, collate."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from egovlp.data.charades import load_charades_ego
from egovlp.data.charades_dataset import CharadesActionDataset, CharadesVideoDataset
from egovlp.data.epic_mir import EpicClip, build_relevancy, default_sentences, load_epic_mir
from egovlp.data.epic_mir_dataset import ClipCollate, EpicMIRDataset
from egovlp.data.tokenizer import Tokenizer
from egovlp.data.transforms import eval_transform, train_transform
from egovlp.errors import VideoReadError
from egovlp.train.datasets import TrainingDataset


def _clip(i: int, verb: int, nouns: tuple[int, ...]) -> EpicClip:
    return EpicClip(f"P01_01_{i}", "P01", "P01_01", "00:00:00.00", 0.0, 1.0, 0, 8, f"text {i}", "v", verb, "n",
                    nouns[0] if nouns else 0, tuple(f"n{n}" for n in nouns), nouns)  # fmt: skip


def test_relevancy_row_equals_the_built_matrix(world):
    from egovlp.data.epic_mir import EpicMIRAnnotations

    clips = [_clip(0, 1, (2, 3)), _clip(1, 1, (3,)), _clip(2, 2, (2, 3, 4)), _clip(3, 2, ()), _clip(4, 3, ())]
    sentences = default_sentences(clips)
    matrix = build_relevancy(clips, sentences)
    ann = EpicMIRAnnotations(tuple(clips), sentences, None)  # empty noun sets: IoU(empty, empty) = 1
    np.testing.assert_array_equal(np.stack([ann.relevancy_row(i) for i in range(len(clips))]), matrix)
    train = load_epic_mir(world["epic"], "train", relevancy="none")
    full = build_relevancy(train.clips, train.sentences)
    np.testing.assert_array_equal(np.stack([train.relevancy_row(i) for i in range(len(train))]), full)


def test_epic_training_items_follow_the_official_pairing(world):
    ann = load_epic_mir(world["epic"], "train", relevancy="none")
    matrix = build_relevancy(ann.clips, ann.sentences)
    dataset = TrainingDataset(EpicMIRDataset(ann, world["epic"] / "videos", 4, train_transform(32), train=True), 5)
    for index in range(0, len(ann), 3):
        item, replaced = dataset[index]
        j = item["sentence_index"]
        assert replaced == 0 and item["clip_index"] == index and item["video"].shape == (4, 3, 32, 32)
        assert j >= 0 and matrix[index, j] > 0.1  # every synthetic clip has positives (its own narration's)
        assert item["relevancy"] == pytest.approx(matrix[index, j])
        assert item["text"] == ann.sentences[j].csv_text
    again, _ = dataset[3]
    first, _ = dataset[3]
    torch.testing.assert_close(again["video"], first["video"])  # seeded per item
    assert again["sentence_index"] == first["sentence_index"]


def test_epic_eval_items_and_collate(world):
    ann = load_epic_mir(world["epic"], "test")
    dataset = EpicMIRDataset(ann, world["epic"] / "videos", 4, eval_transform(32))
    batch = ClipCollate()([dataset[0], None, dataset[1]])
    assert batch["video"].shape == (2, 4, 3, 32, 32) and batch["index"].tolist() == [0, 1]
    assert batch["num_skipped"] == 1 and set(batch) == {"video", "index", "num_skipped"}
    torch.testing.assert_close(dataset[0]["video"], dataset[0]["video"])  # segment middles: deterministic
    assert ClipCollate()([None, None]) == {"num_skipped": 2}


def test_text_collate_tokenises_to_max_length(world):
    tok = Tokenizer.from_dir(world["tokenizer"])
    items = [{"video": torch.zeros(1), "text": "pick up red cube", "relevancy": 0.5, "clip_index": 3}] * 2
    batch = ClipCollate(tok, 30, "max_length")(items)
    assert batch["input_ids"].shape == (2, 30) and batch["relevancy"].dtype == torch.float32
    assert batch["clip_index"].dtype == torch.long and batch["text"] == ["pick up red cube"] * 2


def test_missing_video_raises_or_is_skipped(world, tmp_path):
    ann = load_epic_mir(world["epic"], "test")
    empty = tmp_path / "videos"
    with pytest.raises(VideoReadError, match="P0"):
        EpicMIRDataset(ann, empty, 4, eval_transform(32))[0]
    assert EpicMIRDataset(ann, empty, 4, eval_transform(32), bad_input="skip")[0] is None
    charades = load_charades_ego(world["charades"], "test")
    assert CharadesVideoDataset(charades, empty, 4, eval_transform(32), "skip")[0] is None


def test_charades_video_items_cover_the_whole_video(world, tmp_path):
    ann = load_charades_ego(world["charades"], "test")
    dataset = CharadesVideoDataset(ann, world["charades"] / "videos", 32, eval_transform(32))
    item = dataset[2]
    assert item["video"].shape == (32, 3, 32, 32) and item["index"] == 2
    np.testing.assert_array_equal(item["label"].numpy(), ann.labels()[2])
    batch = ClipCollate()([dataset[0], dataset[1]])
    assert batch["label"].shape == (2, 20)


def test_charades_action_items_are_class_name_pairs(world, tmp_path):
    ann = load_charades_ego(world["charades"], "train")
    dataset = TrainingDataset(CharadesActionDataset(ann, world["charades"] / "videos", 8, train_transform(32)), 0)
    segments = ann.action_segments()
    assert len(dataset) == len(segments)
    item, _ = dataset[1]
    _, action = segments[1]
    assert item["text"] == ann.class_names[action.class_index] and item["target"] == action.class_index
    assert item["video"].shape == (8, 3, 32, 32)
    # an action running past the video's end is clamped to its length instead of failing
    root = tmp_path / "charades"
    shutil.copytree(world["charades"], root)
    csv = root / "CharadesEgo_v1_train_only1st.csv"
    first = ann.videos[0]
    text = csv.read_text().replace(f"{first.actions[0].end:.2f}", f"{first.length + 30:.2f}", 1)
    csv.write_text(text)
    late = load_charades_ego(root, "train")
    assert late.videos[0].actions[0].end > late.videos[0].length
    assert CharadesActionDataset(late, root / "videos", 4, train_transform(32))[0]["video"].shape[0] == 4
