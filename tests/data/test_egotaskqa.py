"""EgoTaskQA reader: every field, the answer set, reasoning types, and each malformed case."""

from __future__ import annotations

import json
import os

import pytest

from egovlp.data.egotaskqa import egotaskqa_video_path, load_answer_set, load_egotaskqa
from egovlp.errors import DataError

ANSWERS = ["yes", "no", "cup", "left"]


def _record(**kw):
    base = {
        "interval": "P01_R01_0010_0030",
        "question": "what did the person pick up?",
        "answer": "cup",
        "answer_encode": 2,
        "type": "open",
        "category": "object",
        "semantic": "object",
        "reasoning_type": "descriptive$intent",
        "structural": "query",  # extra fields are ignored
    }
    base.update(kw)
    return base


def _write(tmp_path, records, split="train", answers=ANSWERS, types=None, nested=False):
    split_dir = tmp_path / "qa" / "direct"
    split_dir.mkdir(parents=True, exist_ok=True)
    (split_dir / f"formatted_{split}_qas_encode.json").write_text(json.dumps(records))
    answer_dir = split_dir.parent if nested else split_dir
    (answer_dir / "answer_set.txt").write_text("\n".join(answers) + "\n")
    if types is not None:
        (split_dir.parent / "all_reasoning_types.txt").write_text("\n".join(types) + "\n")
    return split_dir


def test_fields(tmp_path):
    records = [
        _record(),
        _record(
            interval="v2",
            question="is it open?",
            answer="no",
            answer_encode=1,
            type="binary",
            category="state",
            semantic="state",
            reasoning_type="predictive",
        ),
    ]
    split_dir = _write(tmp_path, records, types=["descriptive", "explanatory", "intent", "predictive"])
    qa = load_egotaskqa(split_dir, "train")
    assert qa.split == "train" and qa.num_answers == 4 and qa.answers == tuple(ANSWERS)
    r0, r1 = qa.records
    assert (r0.index, r0.interval, r0.question, r0.answer, r0.answer_id) == (
        0,
        "P01_R01_0010_0030",
        records[0]["question"],
        "cup",
        2,
    )
    assert (r0.type, r0.category, r0.semantic, r0.reasoning_types) == (
        "open",
        "object",
        "object",
        ("descriptive", "intent"),
    )
    assert (r1.index, r1.answer_id, r1.type, r1.category, r1.reasoning_types) == (
        1,
        1,
        "binary",
        "state",
        ("predictive",),
    )
    assert qa.reasoning_type_names == ("descriptive", "explanatory", "intent", "predictive")  # a type with no question
    assert qa.video_path("/data", r1) == os.path.join("/data", "qa_videos", "v2.mp4")
    assert egotaskqa_video_path("/d", "x") == os.path.join("/d", "qa_videos", "x.mp4")


def test_answer_set_in_parent_and_types_from_records(tmp_path):
    split_dir = _write(
        tmp_path, [_record(reasoning_type="b$a"), _record(reasoning_type="c$a")], split="val", nested=True
    )
    qa = load_egotaskqa(split_dir, "val")
    assert qa.num_answers == 4 and qa.reasoning_type_names == ("b", "a", "c")


def test_answer_not_in_set_checked_by_range_only(tmp_path):
    split_dir = _write(tmp_path, [_record(answer="mug", answer_encode=3)])
    assert load_egotaskqa(split_dir, "train").records[0].answer_id == 3


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"interval": None}, r"record 1: field 'interval' must be a non-empty string"),
        ({"interval": "../x"}, r"record 1: field 'interval' must be a video file stem"),
        ({"question": ""}, r"record 1: field 'question' must be a non-empty string"),
        ({"answer": 3}, r"record 1: field 'answer' must be a string"),
        ({"answer_encode": 4}, r"record 1: field 'answer_encode' must be an int in \[0, 4\), got 4"),
        ({"answer_encode": -1}, r"record 1: field 'answer_encode' must be an int"),
        ({"answer_encode": "2"}, r"record 1: field 'answer_encode' must be an int"),
        ({"answer_encode": True}, r"record 1: field 'answer_encode' must be an int"),
        ({"answer_encode": 0}, r"record 1: field 'answer_encode' is 0 \('yes'\) but answer 'cup' is class 2"),
        ({"type": "multi"}, r"record 1: field 'type' must be one of \['open', 'binary'\], got 'multi'"),
        ({"reasoning_type": "a$$b"}, r"record 1: field 'reasoning_type' has an empty name"),
        ({"reasoning_type": ""}, r"record 1: field 'reasoning_type' must be a non-empty string"),
        ({"category": 1}, r"record 1: field 'category' must be a string"),
        ({"semantic": None}, r"record 1: field 'semantic' must be a string"),
    ],
)
def test_malformed_record(tmp_path, change, match):
    split_dir = _write(tmp_path, [_record(), _record(**change)], split="test")
    with pytest.raises(DataError, match="formatted_test_qas_encode.json: " + match):
        load_egotaskqa(split_dir, "test")


@pytest.mark.parametrize(
    "field", ["interval", "question", "answer", "answer_encode", "type", "category", "semantic", "reasoning_type"]
)
def test_missing_field(tmp_path, field):
    bad = _record()
    del bad[field]
    split_dir = _write(tmp_path, [bad])
    with pytest.raises(DataError, match=f"record 0: missing field '{field}'"):
        load_egotaskqa(split_dir, "train")


def test_malformed_files(tmp_path):
    split_dir = _write(tmp_path, [_record()])
    with pytest.raises(DataError, match="split must be one of"):
        load_egotaskqa(split_dir, "dev")
    with pytest.raises(DataError, match="formatted_val_qas_encode.json: no such EgoTaskQA file"):
        load_egotaskqa(split_dir, "val")
    (split_dir / "formatted_train_qas_encode.json").write_text('[{"interval": ')
    with pytest.raises(DataError, match=r"formatted_train_qas_encode.json:1:\d+: invalid JSON"):
        load_egotaskqa(split_dir, "train")
    (split_dir / "formatted_train_qas_encode.json").write_text('{"a": 1}')
    with pytest.raises(DataError, match="expected a JSON list"):
        load_egotaskqa(split_dir, "train")
    (split_dir / "formatted_train_qas_encode.json").write_text("[]")
    with pytest.raises(DataError, match="no question records"):
        load_egotaskqa(split_dir, "train")
    (split_dir / "formatted_train_qas_encode.json").write_text("[3]")
    with pytest.raises(DataError, match="record 0: expected a JSON object"):
        load_egotaskqa(split_dir, "train")
    (split_dir / "answer_set.txt").write_text("yes\n\nno\n")
    with pytest.raises(DataError, match=r"answer_set.txt:2: empty answer"):
        load_answer_set(split_dir / "answer_set.txt")
    (split_dir / "answer_set.txt").unlink()
    with pytest.raises(DataError, match="no answer_set.txt"):
        load_egotaskqa(split_dir, "train")
