"""Ego4D MQ (moments) reader and challenge submission files, on real-layout JSON fixtures."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from egovlp.data.moments import MQDetection, load_moments, read_mq_submission, write_mq_submission
from egovlp.errors import DataError


def _label(start: float, end: float, label: str, primary: bool = True) -> dict:
    return {
        "start_time": start,
        "end_time": end,
        "video_start_time": 1000.0 + start,
        "video_end_time": 1000.0 + end,
        "video_start_frame": int(30 * start),
        "video_end_frame": int(30 * end),
        "label": label,
        "primary": primary,
    }


def moments_data() -> dict:
    """Two videos, three clips; two annotators on c1, a non-primary label, a segment 0.3 s past the clip end."""
    return {
        "version": "v1",
        "videos": [
            {
                "video_uid": "v0",
                "duration_sec": 1500.0,
                "split": "train",
                "clips": [
                    {
                        "clip_uid": "c1",
                        "video_start_sec": 1000.0,
                        "video_end_sec": 1480.0,
                        "video_start_frame": 30000,
                        "video_end_frame": 44400,
                        "annotations": [
                            {
                                "annotator_uid": "u1",
                                "labels": [
                                    _label(5.0, 20.5, "wash_dishes_/_utensils_/_bakeware_etc."),
                                    _label(30.0, 31.0, "use_phone", primary=False),
                                    _label(470.0, 480.3, "cut_/_chop_/_slice_a_vegetable,_fruit,_or_meat"),
                                ],
                            },
                            {"annotator_uid": "u2", "labels": [_label(6.0, 6.0, "use_phone")]},
                        ],
                    },
                    {"clip_uid": "c2", "video_start_sec": 0.0, "video_end_sec": 480.0, "annotations": []},
                ],
            },
            {
                "video_uid": "v1",
                "duration_sec": 600.0,
                "split": "train",
                "clips": [
                    {
                        "clip_uid": "c3",
                        "video_start_sec": 120.0,
                        "video_end_sec": 600.0,
                        "annotations": [{"annotator_uid": "u3", "labels": [_label(-0.2, 10.0, "use_phone")]}],
                    }
                ],
            },
        ],
    }


CUT = "cut_/_chop_/_slice_a_vegetable,_fruit,_or_meat"
WASH = "wash_dishes_/_utensils_/_bakeware_etc."


def write(tmp_path: Path, data: object, name: str = "moments_train.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return p


def test_load_moments_primary_only(tmp_path):
    ann = load_moments(write(tmp_path, moments_data()))
    assert ann.classes == (CUT, "use_phone", WASH)  # sorted names of the kept labels
    assert ann.class_to_id == {CUT: 0, "use_phone": 1, WASH: 2}
    assert [c.clip_uid for c in ann.clips] == ["c1", "c2", "c3"] and len(ann) == 3
    c1 = ann.clips[0]
    assert (c1.video_uid, c1.video_start_sec, c1.video_end_sec, c1.duration) == ("v0", 1000.0, 1480.0, 480.0)
    assert c1.segments == ((5.0, 20.5), (470.0, 480.0), (6.0, 6.0))  # clamped end; both annotators kept
    assert c1.labels == (2, 0, 1) and c1.label_names == (WASH, CUT, "use_phone")
    assert ann.clips[1].segments == () and ann.clips[1].labels == ()  # a clip without labels is kept
    assert ann.clips[2].segments == ((0.0, 10.0),) and ann.clips[2].video_uid == "v1"
    assert ann.num_non_primary == 1 and ann.num_clamped == 2 and ann.num_segments == 4


def test_load_moments_all_labels_and_given_vocabulary(tmp_path):
    path = write(tmp_path, moments_data())
    ann = load_moments(path, primary_only=False)
    assert ann.num_non_primary == 0 and ann.num_segments == 5
    assert ann.clips[0].segments[1] == (30.0, 31.0) and ann.clips[0].label_names[1] == "use_phone"
    vocab = ["use_phone", "unused_class", CUT, WASH]
    ann = load_moments(path, classes=vocab)
    assert ann.classes == tuple(vocab) and ann.clips[0].labels == (3, 2, 0)
    with pytest.raises(DataError, match=r"clip c1: label 'wash_dishes.*' is not one of the 2 classes"):
        load_moments(path, classes=["use_phone", CUT])
    with pytest.raises(DataError, match=r"names \['use_phone'\] more than once"):
        load_moments(path, classes=["use_phone", CUT, WASH, "use_phone"])


def _break(keys: list, value, delete: bool = False) -> dict:
    data = copy.deepcopy(moments_data())
    obj = data
    for k in keys[:-1]:
        obj = obj[k]
    if delete:
        del obj[keys[-1]]
    else:
        obj[keys[-1]] = value
    return data


L0 = ["videos", 0, "clips", 0, "annotations", 0, "labels", 0]
C2 = ["videos", 0, "clips", 1]


@pytest.mark.parametrize(
    "keys, value, delete, needles",
    [
        ([*L0, "end_time"], None, True, ["clip c1", "labels[0]", WASH, "missing field 'end_time'"]),
        ([*L0, "start_time"], "5", False, ["clip c1", "labels[0]", "'start_time'"]),
        ([*L0, "start_time"], 21.0, False, ["clip c1", "labels[0]", "before its start"]),
        ([*L0, "end_time"], 482.0, False, ["clip c1", "labels[0]", "leaves the clip [0, 480]"]),
        ([*L0, "label"], "", False, ["clip c1", "labels[0]", "'label'"]),
        ([*L0, "primary"], "yes", False, ["clip c1", "labels[0]", "'primary'"]),
        ([*L0, "primary"], None, True, ["clip c1", "labels[0]", "'primary'"]),
        (["videos", 0, "clips", 0, "annotations", 1, "labels"], None, True, ["clip c1 annotations[1]", "'labels'"]),
        (["videos", 0, "clips", 0, "annotations"], None, True, ["clip c1", "'annotations'"]),
        ([*C2, "video_end_sec"], None, True, ["clip c2", "'video_end_sec'"]),
        ([*C2, "video_end_sec"], 0.0, False, ["clip c2", "must be after"]),
        ([*C2, "clip_uid"], "c1", False, ["clip c1", "duplicate clip_uid"]),
        ([*C2, "clip_uid"], None, True, ["video v0 clips[1]", "'clip_uid'"]),
        (["videos", 1, "video_uid"], None, True, ["videos[1]", "'video_uid'"]),
        (["videos"], {}, False, ["'videos' must be a list"]),
    ],
)
def test_load_moments_malformed_record_names_file_clip_field(tmp_path, keys, value, delete, needles):
    path = write(tmp_path, _break(keys, value, delete))
    with pytest.raises(DataError) as e:
        load_moments(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)


def test_load_moments_tolerance_and_file_errors(tmp_path):
    path = write(tmp_path, moments_data())
    with pytest.raises(DataError, match="clip c1 .*tolerance 0.25 s"):
        load_moments(path, segment_tolerance=0.25)
    # a non-primary label is not checked when only primary labels are used
    data = _break(["videos", 0, "clips", 0, "annotations", 0, "labels", 1, "end_time"], None, delete=True)
    assert load_moments(write(tmp_path, data, "np.json")).num_non_primary == 1
    with pytest.raises(DataError, match="'end_time'"):
        load_moments(write(tmp_path, data, "np.json"), primary_only=False)
    with pytest.raises(DataError, match="no clips"):
        load_moments(write(tmp_path, {"videos": [{"video_uid": "v", "clips": []}]}, "empty.json"))
    with pytest.raises(DataError, match="no such MQ annotation file"):
        load_moments(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{\n\n  oops")
    with pytest.raises(DataError, match=r"bad\.json:3:\d+: invalid JSON"):
        load_moments(tmp_path / "bad.json")


def test_mq_submission_round_trip_ranks_by_score(tmp_path):
    dets = {
        "c1": [
            MQDetection("use_phone", 0.2, (1.0, 4.0)),
            MQDetection(CUT, 0.9, (470.0, 480.0)),
            MQDetection(WASH, 0.5, (5.0, 20.0)),
            MQDetection("use_phone", 0.5, (0.0, 2.0)),  # tie with WASH: input order kept
        ],
        "c2": [],
        "c3": [MQDetection("use_phone", 1.0, (0.0, 10.0))],
    }
    path = write_mq_submission(tmp_path / "out" / "mq_submission.json", dets)
    raw = json.loads(path.read_text())
    assert raw["version"] == "1.0" and raw["challenge"] == "ego4d_moment_queries"
    assert list(raw["detect_results"]) == ["c1", "c2", "c3"]
    assert raw["detect_results"]["c1"][0] == {"label": CUT, "score": 0.9, "segment": [470.0, 480.0]}
    assert [d["score"] for d in raw["detect_results"]["c1"]] == [0.9, 0.5, 0.5, 0.2]
    back = read_mq_submission(path, classes=[CUT, "use_phone", WASH])
    assert back == {"c1": [dets["c1"][i] for i in (1, 2, 3, 0)], "c2": [], "c3": dets["c3"]}


def test_write_mq_submission_rejects_bad_detections(tmp_path):
    with pytest.raises(ValueError, match="clip c1"):
        write_mq_submission(tmp_path / "s.json", {"c1": [MQDetection("a", 0.5, (3.0, 1.0))]})
    with pytest.raises(ValueError, match="clip c1"):
        write_mq_submission(tmp_path / "s.json", {"c1": [MQDetection("a", float("inf"), (0.0, 1.0))]})
    assert not (tmp_path / "s.json").exists()


def _sub(**over) -> dict:
    d = {"label": "use_phone", "score": 0.5, "segment": [1.0, 2.0]}
    d.update(over)
    return {"version": "1.0", "challenge": "ego4d_moment_queries", "detect_results": {"c1": [d]}}


@pytest.mark.parametrize(
    "data, needles",
    [
        ({**_sub(), "version": "0.9"}, ["'version'"]),
        ({**_sub(), "challenge": "ego4d_nlq_challenge"}, ["'challenge'"]),
        ({"version": "1.0", "challenge": "ego4d_moment_queries", "detect_results": []}, ["'detect_results'"]),
        ({**_sub(), "detect_results": {"c1": {}}}, ["clip c1", "must be a list"]),
        (_sub(label=3), ["clip c1 detection 0", "'label'"]),
        (_sub(label="fly"), ["clip c1 detection 0", "'fly' is not one of the 1 classes"]),
        (_sub(score="high"), ["clip c1 detection 0", "'score'"]),
        (_sub(score=None), ["clip c1 detection 0", "'score'"]),
        (_sub(segment=[1.0]), ["clip c1 detection 0", "'segment'"]),
        (_sub(segment=[2.0, 1.0]), ["clip c1 detection 0", "ends before it starts"]),
    ],
)
def test_read_mq_submission_errors(tmp_path, data, needles):
    path = write(tmp_path, data, "sub.json")
    with pytest.raises(DataError) as e:
        read_mq_submission(path, classes=["use_phone"])
    assert str(e.value).startswith(str(path))
    for n in needles:
        assert n in str(e.value), (n, str(e.value))
