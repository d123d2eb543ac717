"""EgoMCQ: items, reversed frames, malformed JSON messages, collate."""

from __future__ import annotations

import json

import pytest
import torch

from egovlp.data.collate import EgoMCQCollate
from egovlp.data.egomcq import EgoMCQDataset, load_egomcq
from egovlp.data.tokenizer import Tokenizer
from egovlp.data.transforms import eval_transform
from egovlp.errors import DataError


def test_items(small_world):
    ds = EgoMCQDataset(small_world["egomcq"], small_world["videos"], 4, eval_transform(32), chunk_seconds=10)
    raw = json.loads(small_world["egomcq"].read_text())
    assert len(ds) == len(raw) == 16
    item = ds[9]
    q = raw["9"]
    assert item["video"].shape == (5, 4, 3, 32, 32) and item["video"].dtype == torch.float32
    assert item["text"] == q["query"]["clip_text"].replace("#C C", "C")
    assert (item["answer"], item["type"], item["index"]) == (q["answer"], q["types"], 9)
    assert item["option_text"][q["answer"]] == item["text"]
    assert {ds[i]["type"] for i in range(0, 16, 5)} == {1, 2}


def test_reverse_frames(small_world):
    args = (small_world["egomcq"], small_world["videos"], 4, eval_transform(32))
    forward = EgoMCQDataset(*args, chunk_seconds=10)[0]["video"]
    backward = EgoMCQDataset(*args, chunk_seconds=10, reverse_frames=True)[0]["video"]
    assert torch.equal(forward.flip(1), backward)


def test_collate(small_world):
    ds = EgoMCQDataset(small_world["egomcq"], small_world["videos"], 2, eval_transform(16), chunk_seconds=10)
    batch = EgoMCQCollate(Tokenizer.from_dir(small_world["tokenizer"]))([ds[0], None, ds[1]])
    assert batch["video"].shape == (2, 5, 2, 3, 16, 16) and batch["num_skipped"] == 1
    assert batch["answer"].tolist() == [ds[0]["answer"], ds[1]["answer"]] and batch["index"].tolist() == [0, 1]
    assert batch["input_ids"].shape[0] == 2 and batch["attention_mask"][:, 0].all()


def _question(**change):
    option = {"video_uid": "v", "clip_start": 1.0, "clip_end": 2.0, "clip_text": "#C C x"}
    q = {"query": {"clip_text": "#C C x"}, "choices": {str(i): dict(option) for i in range(5)}, "answer": 2, "types": 1}
    q.update(change)
    return q


@pytest.mark.parametrize(
    ("question", "message"),
    [
        (_question(answer=5), r"question '0': 'answer' must be an int in \[0, 5\), got 5"),
        (_question(types=3), r"question '0': 'types' must be 1 \(inter-video\) or 2 \(intra-video\), got 3"),
        (_question(query={}), r"question '0' \['query'\]: missing field 'clip_text'"),
        (
            _question(choices={"0": {"video_uid": "v", "clip_start": 1.0}}),
            r"question '0' \['choices'\]\['0'\]: missing field 'clip_end'",
        ),
        (
            _question(choices={"0": {"video_uid": "v", "clip_start": "soon", "clip_end": 2}}),
            r"field 'clip_start' must be a number, got 'soon'",
        ),
        (
            _question(query={"clip_text": None}),
            r"question '0' \['query'\]: field 'clip_text' must be a string, got null",
        ),
        (
            _question(
                choices={str(i): {"video_uid": "v", "clip_start": 1, "clip_end": 2, "clip_text": [i]} for i in range(5)}
            ),
            r"question '0' \['choices'\]\['0'\]: field 'clip_text' must be a string, got \[0\]",
        ),
        (
            _question(choices={"0": {"video_uid": "v", "clip_start": 1, "clip_end": 2, "clip_text": None}}, answer=0),
            r"question '0' \['choices'\]\['0'\]: field 'clip_text' must be a string, got null",
        ),
    ],
)
def test_malformed_questions(tmp_path, question, message):
    path = tmp_path / "egomcq.json"
    path.write_text(json.dumps({"0": question}))
    with pytest.raises(DataError, match=r"egomcq\.json: (.*: )?" + message):
        load_egomcq(path)


def test_invalid_json_names_line_and_column(tmp_path):
    path = tmp_path / "egomcq.json"
    path.write_text('{"0": {\n  "answer": 1,,\n}}')
    with pytest.raises(DataError, match=r"egomcq\.json:2:\d+: invalid JSON"):
        load_egomcq(path)


def test_questions_sorted_by_integer_key(tmp_path):
    path = tmp_path / "egomcq.json"
    path.write_text(json.dumps({"10": _question(), "2": _question(types=2)}))
    assert [(q.index, q.type) for q in load_egomcq(path)] == [(2, 2), (10, 1)]


def test_option_text_may_be_left_out(tmp_path):
    path = tmp_path / "egomcq.json"
    q = _question()
    del q["choices"]["3"]["clip_text"]
    path.write_text(json.dumps({"0": q}))
    (question,) = load_egomcq(path)
    assert [o[3] for o in question.options] == ["#C C x", "#C C x", "#C C x", "", "#C C x"]


def test_a_file_without_questions_is_an_error(tmp_path):
    path = tmp_path / "egomcq.json"
    path.write_text("{}")
    with pytest.raises(DataError, match=r"egomcq\.json: no questions"):
        load_egomcq(path)
