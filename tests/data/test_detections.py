"""Detections for OA-Trans: the BUTD npz and JSON readers (every bad-record case), the class vocabulary, anchor-frame
selection, top objects, patch masks, tag spans, and the object streams of the synthetic world's clips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from egovlp.data.detections import (
    BUTDDetections,
    FrameDetections,
    JSONDetections,
    butd_frame_times,
    load_class_vocab,
    open_detections,
)
from egovlp.data.oa_clips import box_patch_masks, select_anchor, tag_token_spans, top_objects
from egovlp.errors import DataError
from egovlp.utils.safe_pickle import RefusedGlobalError

VOCAB = ("__unused__", "stop sign", "cup", "table")


@pytest.fixture
def vocab_file(tmp_path) -> Path:
    path = tmp_path / "objects_vocab.txt"
    path.write_text("yolk,yolks\nStop Sign,stopsign\ncup\ntable,tables\n")
    return path


def test_vocabulary_takes_the_first_synonym_lowercased(vocab_file, tmp_path):
    assert load_class_vocab(vocab_file) == ("yolk", "stop sign", "cup", "table")
    bad = tmp_path / "bad.txt"
    bad.write_text("cup\n\ntable\n")
    with pytest.raises(DataError, match=r"bad.txt:2: empty class name"):
        load_class_vocab(bad)


def write_butd(path: Path, boxes, ids, conf, h=200, w=400, info_extra=None) -> None:
    """A BUTD record as the MILVLG extractor saves it: pixel boxes, and ``info`` a pickled dict (object array)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"image_id": path.stem, "image_h": h, "image_w": w, "num_boxes": len(ids),
            "objects_id": np.asarray(ids, dtype=np.int64), "objects_conf": np.asarray(conf, dtype=np.float32),
            **(info_extra or {})}  # fmt: skip
    np.savez_compressed(path, x=np.zeros((len(ids), 8), np.float32), bbox=np.asarray(boxes, np.float32).reshape(-1, 4),
                        num_bbox=len(ids), image_h=h, image_w=w, info=info)  # fmt: skip


def test_butd_frames_are_read_without_pickle_and_normalised(tmp_path, vocab_file):
    root = tmp_path / "butd"
    for k in range(4):
        write_butd(root / "7" / f"{k}.npz", [[40, 20, 200, 100], [0, 0, 400, 200]], [1, 3], [0.5, 0.9 - k / 10])
    det = open_detections(root, vocab_file, butd_frames=4)
    assert isinstance(det, BUTDDetections)
    frames = det.clip("7", 10.0, 18.0)
    assert [f.time for f in frames] == [11.0, 13.0, 15.0, 17.0]  # middles of 4 segments
    np.testing.assert_allclose(frames[0].boxes, [[0.1, 0.1, 0.5, 0.5], [0, 0, 1, 1]])
    assert frames[0].labels == ("stop sign", "table")
    np.testing.assert_allclose(frames[2].scores, [0.5, 0.7])


def test_butd_missing_frame_raises_or_is_counted(tmp_path, vocab_file):
    root = tmp_path / "butd"
    for k in (0, 2):
        write_butd(root / "7" / f"{k}.npz", [[40, 20, 200, 100]], [2], [0.5])
    with pytest.raises(DataError, match=r"7/1.npz: detections of frame 1 of clip 7 not found"):
        BUTDDetections(root, load_class_vocab(vocab_file), 3, "raise").clip("7", 0.0, 3.0)
    det = BUTDDetections(root, load_class_vocab(vocab_file), 3, "skip")
    frames = det.clip("7", 0.0, 3.0)
    assert [f.time for f in frames] == [0.5, 2.5] and det.counts.missing_frames == 1
    write_butd(root / "7_1.npz", [[40, 20, 200, 100]], [3], [0.5])  # the flat layout fills the gap
    frames = BUTDDetections(root, load_class_vocab(vocab_file), 3, "raise").clip("7", 0.0, 3.0)
    assert [f.labels for f in frames] == [("cup",), ("table",), ("cup",)]


@pytest.mark.parametrize(
    ("boxes", "ids", "kind", "message"),
    [
        ([[200, 20, 40, 100]], [1], "bad_boxes", r"0.npz, box 0: bad box \[0.5, 0.1, 0.1, 0.5\]"),
        ([[40, 20, 500, 100]], [1], "bad_boxes", r"box 0: bad box"),  # beyond the right edge
        ([[np.nan, 20, 50, 100]], [1], "bad_boxes", r"box 0: bad box"),
        ([[40, 20, 200, 100]], [4], "unknown_classes", r"0.npz, box 0: unknown class id 4 \(vocabulary: 4\)"),
        ([[40, 20, 200, 100]], [-1], "unknown_classes", r"unknown class id -1"),
    ],
)
def test_butd_bad_box_or_unknown_class_raises_or_is_counted(tmp_path, vocab_file, boxes, ids, kind, message):
    write_butd(tmp_path / "b" / "c" / "0.npz", [*boxes, [0, 0, 40, 20]], [*ids, 2], [0.9, 0.8])
    with pytest.raises(DataError, match=message):
        BUTDDetections(tmp_path / "b", load_class_vocab(vocab_file), 1, "raise").clip("c", 0, 1)
    det = BUTDDetections(tmp_path / "b", load_class_vocab(vocab_file), 1, "skip")
    (frame,) = det.clip("c", 0, 1)
    assert frame.labels == ("cup",) and getattr(det.counts, kind) == 1  # the good box stays


class NotData:
    pass


def test_butd_info_with_a_foreign_object_is_refused(tmp_path, vocab_file):
    write_butd(tmp_path / "b" / "c" / "0.npz", [[0, 0, 10, 10]], [1], [0.9], info_extra={"hook": NotData()})
    with pytest.raises(RefusedGlobalError, match="NotData"):
        BUTDDetections(tmp_path / "b", load_class_vocab(vocab_file), 1).clip("c", 0, 1)


def test_butd_needs_the_vocabulary_and_its_fields(tmp_path, vocab_file):
    (tmp_path / "b" / "c").mkdir(parents=True)
    with pytest.raises(DataError, match="give the class vocabulary"):
        BUTDDetections(tmp_path / "b", None)
    np.savez(tmp_path / "b" / "c" / "0.npz", bbox=np.zeros((1, 4)), image_h=1, image_w=1)
    with pytest.raises(DataError, match=r"0.npz: field 'objects_id' missing"):
        BUTDDetections(tmp_path / "b", load_class_vocab(vocab_file), 1).clip("c", 0, 1)


def write_json(path: Path, clips: dict) -> Path:
    path.write_text(json.dumps({"clips": clips}))
    return path


def test_json_ids_and_tag_names(tmp_path, vocab_file):
    frame = {"time": 3.5, "boxes": [[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.9, 1.0]], "labels": [2, "Red Cube"]}
    det = open_detections(write_json(tmp_path / "d.json", {"12": [frame]}), vocab_file)
    assert isinstance(det, JSONDetections)
    (f,) = det.clip("12", 0, 9)
    assert f.time == 3.5 and f.labels == ("cup", "red cube") and f.scores.tolist() == [1.0, 1.0]
    # names need no vocabulary, ids do
    names = JSONDetections(write_json(tmp_path / "n.json", {"1": [{**frame, "labels": ["a", "b"]}]}), None)
    assert names.clip("1", 0, 1)[0].labels == ("a", "b")
    with pytest.raises(DataError, match=r"clip '12', frame 0, box 0: class id 2 but no class vocabulary"):
        JSONDetections(tmp_path / "d.json", None).clip("12", 0, 1)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ({"time": 1, "boxes": [[0.1, 0.1, 0.2]], "labels": [1]}, r"frame 0: malformed frame"),
        ({"time": 1, "boxes": [[0.1, 0.1, 0.2, 0.2]], "labels": [1, 2]}, r"frame 0: 1 boxes, 2 labels and 2 scores"),
        ({"time": 1, "boxes": [[0.1, 0.1, 0.2, 0.2]], "labels": [[1]]}, r"frame 0, box 0: a label must be"),
        ({"boxes": [], "labels": []}, r"frame 0: a frame is \{'time', 'boxes', 'labels'"),
    ],
)
def test_json_malformed_frames_name_the_clip_and_frame(tmp_path, vocab_file, frame, message):
    path = write_json(tmp_path / "d.json", {"5": [frame]})
    with pytest.raises(DataError, match=r"d.json: clip '5', " + message):
        JSONDetections(path, load_class_vocab(vocab_file), "skip").clip("5", 0, 1)


def test_json_missing_clip_bad_box_and_unknown_id(tmp_path, vocab_file):
    frame = {"time": 1, "boxes": [[0.1, 0.1, 0.2, 0.2], [0.3, 0.3, 0.2, 0.4], [0.1, 0.1, 0.5, 0.5]],
             "labels": [1, 2, 9], "scores": [0.5, 0.6, 0.7]}  # fmt: skip
    path = write_json(tmp_path / "d.json", {"5": [frame]})
    vocab = load_class_vocab(vocab_file)
    with pytest.raises(DataError, match=r"clip '6' has no detections"):
        JSONDetections(path, vocab, "raise").clip("6", 0, 1)
    with pytest.raises(DataError, match=r"clip '5', frame 0, box 1: bad box"):
        JSONDetections(path, vocab, "raise").clip("5", 0, 1)
    det = JSONDetections(path, vocab, "skip")
    assert det.clip("6", 0, 1) == []
    (f,) = det.clip("5", 0, 1)
    assert f.labels == ("stop sign",)
    assert (det.counts.missing_frames, det.counts.bad_boxes, det.counts.unknown_classes) == (1, 1, 1)
    with pytest.raises(DataError, match="not a JSON file"):
        (tmp_path / "x.json").write_text("{")
        JSONDetections(tmp_path / "x.json", vocab)


# ---------------------------------------------------------------------------------- anchor, objects, masks, spans
def _frame(time: float, n: int) -> FrameDetections:
    return FrameDetections(time, np.tile([[0.0, 0.0, 0.5, 0.5]], (n, 1)).astype(np.float32),
                           tuple(f"o{i}" for i in range(n)), np.linspace(0.1, 0.9, n, dtype=np.float32))  # fmt: skip


def test_anchor_is_the_frame_with_boxes_closest_to_the_clip_time():
    frames = [_frame(1.0, 2), _frame(2.0, 0), _frame(3.0, 1), _frame(5.0, 1)]
    assert select_anchor(frames, 2.1) == 2  # 2.0 is closer but has no boxes
    assert select_anchor(frames, 2.0) == 0  # 1.0 and 3.0 tie: the first
    assert select_anchor(frames, 4.5) == 3
    assert select_anchor([_frame(1.0, 0)], 1.0) is None and select_anchor([], 0) is None
    assert butd_frame_times(0, 8, 8).tolist() == [0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5]


def test_top_objects_by_confidence_with_ties_in_order():
    f = FrameDetections(0, np.arange(16, dtype=np.float32).reshape(4, 4) / 16, ("a", "b", "c", "d"),
                        np.array([0.2, 0.9, 0.2, 0.5], np.float32))  # fmt: skip
    boxes, labels = top_objects(f, 3)
    assert labels == ("b", "d", "a") and np.array_equal(boxes, f.boxes[[1, 3, 0]])
    assert top_objects(f, 10)[1] == ("b", "d", "a", "c")


def test_box_patch_masks_floor_and_ceil_like_the_release():
    boxes = np.array([[0.0, 0.0, 1.0, 1.0], [0.1, 0.3, 0.2, 0.31], [0.5, 0.5, 0.5 + 1e-3, 0.75]])
    m = box_patch_masks(boxes, 4)
    assert m[0].all()
    expected = np.zeros((4, 4), bool)
    expected[1, 0] = True  # rows floor(1.2)=1 .. ceil(1.24)=2, cols floor(0.4)=0 .. ceil(0.8)=1
    assert np.array_equal(m[1], expected)
    expected = np.zeros((4, 4), bool)
    expected[2, 2] = True  # rows 2 .. ceil(3.0)=3, cols 2 .. ceil(2.004)=3
    assert np.array_equal(m[2], expected)
    grid14 = box_patch_masks(np.array([[0.25, 0.5, 0.75, 1.0]]), 14)[0]
    assert grid14.sum() == (14 - 7) * (11 - 3)  # rows 7..13, cols floor(3.5)=3 .. ceil(10.5)-1=10


def test_tag_spans_cover_exactly_each_tags_word_pieces(tmp_path):
    from egovlp.data.tokenizer import Tokenizer

    texts = ["c picks up the red cube", "c puts down the blue ball", "stop sign near a red ball"] * 3
    tok = Tokenizer.train(texts, 120, tmp_path / "wp", min_frequency=1, kind="wordpiece")
    ids, spans = tag_token_spans(tok, "c picks up the cube", ["red cube", "stop sign"], 16)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert tok.decode(ids) == "c picks up the cube red cube stop sign"
    for o, tag in enumerate(["red cube", "stop sign"]):
        assert tok.decode([ids[p] for p in np.flatnonzero(spans[o])]) == tag
    short_ids, short = tag_token_spans(tok, "c picks up the cube", ["red cube", "stop sign"], 8)
    assert len(short_ids) == 8 and not short[1].any() and short[0].any()  # the second tag was truncated away


# --------------------------------------------------------------------------------- the synthetic world's streams
def test_synthetic_clips_carry_exact_object_streams(small_world):
    from egovlp.data.egoclip import EgoClipDataset
    from egovlp.data.oa_clips import ObjectAwareClips
    from egovlp.data.transforms import eval_transform

    base = EgoClipDataset(small_world["egoclip"], small_world["videos"], 2, eval_transform(32),
                          chunk_seconds=small_world.chunk_seconds, num_verbs=small_world.num_verbs,
                          num_nouns=small_world.num_nouns)  # fmt: skip
    det = open_detections(small_world["detections"], small_world["objects_vocab"])
    ds = ObjectAwareClips(base, det, top_k=3, size=32, patch_size=8)
    item = ds[0]
    row = base.table
    frames = det.clip(str(item["clip_idx"]), float(row.clip_start[0]), float(row.clip_end[0]))
    anchor = frames[select_anchor(frames, float(row.clip_start[0] + row.clip_end[0]) / 2)]
    assert item["has_objects"] and item["tags"] == " ".join(top_objects(anchor, 3)[1])
    handled = item["text"].split()[-2:]  # "... the <colour> <shape>": the most confident object
    assert item["tags"].startswith(" ".join(handled))
    union = item["object_masks"].any(0)  # (4, 4) patches of 8 px
    pixels = union.repeat_interleave(8, 0).repeat_interleave(8, 1)
    assert torch.all(item["anchor"][:, ~pixels] == 0) and item["anchor"][:, pixels].abs().sum() > 0
    assert det.counts.bad_boxes == det.counts.unknown_classes == 0


def test_scene_negative_pairs_keep_their_object_streams_aligned(small_world, tmp_path):
    """With scene-aware negatives every item is a pair; the collate flattens both the clips and their objects in the
    same order (2B rows), and a clip without detections is flagged, not dropped."""
    from egovlp.data.collate import EgoClipCollate
    from egovlp.data.egoclip import EgoClipDataset
    from egovlp.data.oa_clips import ObjectAwareClips, ObjectCollate
    from egovlp.data.tokenizer import Tokenizer
    from egovlp.data.transforms import eval_transform

    base = EgoClipDataset(small_world["egoclip"], small_world["videos"], 2, eval_transform(32),
                          chunk_seconds=small_world.chunk_seconds, scene_negatives=True,
                          num_verbs=small_world.num_verbs, num_nouns=small_world.num_nouns)  # fmt: skip
    clips = json.loads(small_world["detections"].read_text())["clips"]
    first = str(int(base.table.clip_idx[0]))
    del clips[first]  # clip of row 0 has no detections
    path = write_json(tmp_path / "d.json", clips)
    ds = ObjectAwareClips(base, open_detections(path, small_world["objects_vocab"], bad_input="skip"), 3, 32, 8)
    tok = Tokenizer.from_dir(small_world["tokenizer"])
    items = [ds[i] for i in range(3)]
    assert all(isinstance(it, tuple) and len(it) == 2 for it in items)
    batch = ObjectCollate(EgoClipCollate(tok, 12, "max_length", None), tok, 24)(items)
    order = [pair[0] for pair in items] + [pair[1] for pair in items]  # samples, then their negatives
    assert batch["clip_idx"].tolist() == [it["clip_idx"] for it in order]
    assert batch["anchor"].shape == (6, 3, 32, 32) and batch["tag_input_ids"].shape == (6, 24)
    assert batch["has_objects"].tolist() == [it["clip_idx"] != int(first) for it in order]
    assert not batch["has_objects"][0] and not batch["anchor"][0].any() and not batch["object_valid"][0].any()
    for n, it in enumerate(order):
        assert torch.equal(batch["anchor"][n], it["anchor"]) and tok.decode(batch["tag_input_ids"][n]) == it["tags"]
