"""Ego4D NLQ v1 reader and challenge submission files, on real-layout JSON fixtures."""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import pytest

from egovlp.data.nlq import NLQPrediction, load_nlq, read_nlq_submission, write_nlq_submission
from egovlp.errors import DataError


def _lq(start: float | None, end: float | None, query: str | None = "where did I put the knife?", **extra) -> dict:
    q: dict = {"template": "Objects: Where is object X before / after event Y?", "slot_x": "knife", "verb_x": "put"}
    if start is not None:
        q["clip_start_sec"], q["video_start_sec"] = start, 100.0 + start
    if end is not None:
        q["clip_end_sec"], q["video_end_sec"] = end, 100.0 + end
    if query is not None:
        q["query"] = query
    q.update(extra)
    return q


def nlq_data() -> dict:
    """Two videos, three clips; clip c1 has two annotations, one query without text, one window past the clip end."""
    return {
        "version": "v1",
        "date": "220302",
        "description": "NLQ Annotations (train)",
        "videos": [
            {
                "video_uid": "v0",
                "split": "train",
                "clips": [
                    {
                        "clip_uid": "c1",
                        "video_start_sec": 100.0,
                        "video_end_sec": 580.0,
                        "clip_start_sec": 0.0,
                        "clip_end_sec": 480.0,
                        "source_clip_uid": "s1",
                        "annotations": [
                            {
                                "annotation_uid": "a1",
                                "language_queries": [
                                    _lq(10.5, 12.25, "Where did I put the knife?"),
                                    _lq(20.0, 30.0, None),  # no query text: skipped, counted, index 1 kept
                                    _lq(40.0, 480.4, "  what did I cut?  "),  # 0.4 s past the end: clamped
                                ],
                            },
                            {"annotation_uid": "a2", "language_queries": [_lq(0.0, 0.0, "who did I talk to?")]},
                        ],
                    },
                    {
                        "clip_uid": "c2",
                        "video_start_sec": 600.0,
                        "video_end_sec": 900.0,
                        "clip_start_sec": 0.0,
                        "clip_end_sec": 300.0,
                        "annotations": [],
                    },
                ],
            },
            {
                "video_uid": "v1",
                "clips": [
                    {
                        "clip_uid": "c3",
                        "video_start_sec": 0.0,
                        "video_end_sec": 119.5,  # frame rounding: the duration is clip_end_sec - clip_start_sec
                        "clip_start_sec": 3.0,
                        "clip_end_sec": 123.0,
                        "annotations": [
                            {"annotation_uid": "a3", "language_queries": [_lq(1.0, 2.0, "", slot_x="x")]},
                            {"annotation_uid": "a4", "language_queries": [_lq(-0.5, 119.0, "how many cups?")]},
                        ],
                    }
                ],
            },
        ],
    }


def write(tmp_path: Path, data: object, name: str = "nlq_train.json") -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(data))
    return p


def test_load_nlq_every_field(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="egovlp.data.nlq"):
        ann = load_nlq(write(tmp_path, nlq_data()))
    assert [q.key for q in ann.queries] == [("c1", "a1", 0), ("c1", "a1", 2), ("c1", "a2", 0), ("c3", "a4", 0)]
    q = ann.queries[0]
    assert (q.video_uid, q.query, q.window, q.clip_duration) == ("v0", "Where did I put the knife?", (10.5, 12.25), 480)
    assert q.template == "Objects: Where is object X before / after event Y?"
    assert ann.queries[1].query == "what did I cut?"  # stripped
    assert ann.queries[1].window == (40.0, 480.0)  # clamped to the clip end
    assert ann.queries[2].window == (0.0, 0.0)  # a zero-length window is kept
    assert ann.queries[3].window == (0.0, 119.0) and ann.queries[3].clip_duration == 120.0  # 3 .. 123
    # skipped: missing query and blank query, counted by key
    assert ann.without_query == (("c1", "a1", 1), ("c3", "a3", 0)) and ann.num_without_query == 2
    assert ann.clamped == (("c1", "a1", 2), ("c3", "a4", 0)) and ann.num_clamped == 2
    assert "skipped 2 language queries" in caplog.text
    assert set(ann.clips) == {"c1", "c2", "c3"}  # a clip without annotations is still a clip
    c1 = ann.clips["c1"]
    assert (c1.video_uid, c1.video_start_sec, c1.video_end_sec, c1.duration) == ("v0", 100.0, 580.0, 480.0)
    assert ann.has_windows and len(ann) == 4


def test_load_nlq_test_file_without_windows(tmp_path):
    data = nlq_data()
    for v in data["videos"]:
        for c in v["clips"]:
            for a in c["annotations"]:
                for lq in a["language_queries"]:
                    for k in ("clip_start_sec", "clip_end_sec", "video_start_sec", "video_end_sec"):
                        lq.pop(k)
    ann = load_nlq(write(tmp_path, data, "nlq_test_unannotated.json"))
    assert len(ann) == 4 and all(q.window is None for q in ann.queries)
    assert not ann.has_windows and ann.num_clamped == 0 and ann.num_without_query == 2


def _break(path_keys: list, value, delete: bool = False) -> dict:
    data = copy.deepcopy(nlq_data())
    obj = data
    for k in path_keys[:-1]:
        obj = obj[k]
    if delete:
        del obj[path_keys[-1]]
    else:
        obj[path_keys[-1]] = value
    return data


LQ0 = ["videos", 0, "clips", 0, "annotations", 0, "language_queries", 0]


@pytest.mark.parametrize(
    "keys, value, delete, needles",
    [
        ([*LQ0, "clip_end_sec"], None, True, ["clip c1", "annotation a1", "query 0", "'clip_end_sec'", "missing"]),
        ([*LQ0, "clip_start_sec"], "10", False, ["clip c1", "annotation a1", "query 0", "'clip_start_sec'"]),
        ([*LQ0, "clip_start_sec"], 13.0, False, ["clip c1", "annotation a1", "query 0", "before its start"]),
        ([*LQ0, "clip_end_sec"], 482.0, False, ["clip c1", "query 0", "leaves the clip [0, 480]"]),
        ([*LQ0, "clip_start_sec"], -1.5, False, ["clip c1", "query 0", "leaves the clip"]),
        ([*LQ0, "query"], 7, False, ["clip c1", "annotation a1", "query 0", "'query' must be a string"]),
        ([*LQ0, "template"], 3, False, ["query 0", "'template'"]),
        (LQ0, "not an object", False, ["clip c1", "annotation a1", "query 0", "JSON object"]),
        (["videos", 0, "clips", 0, "annotations", 1, "annotation_uid"], None, True, ["clip c1", "annotations[1]"]),
        (["videos", 0, "clips", 0, "annotations", 1, "language_queries"], {}, False, ["annotation a2", "list"]),
        (["videos", 0, "clips", 1, "clip_end_sec"], None, True, ["clip c2", "'clip_end_sec'"]),
        (["videos", 0, "clips", 1, "clip_end_sec"], 0.0, False, ["clip c2", "must be after"]),
        (["videos", 0, "clips", 1, "video_end_sec"], 1.0, False, ["clip c2", "'video_end_sec'"]),
        (["videos", 0, "clips", 1, "clip_uid"], "c1", False, ["clip c1", "duplicate clip_uid"]),
        (["videos", 0, "clips", 1, "clip_uid"], None, True, ["video v0 clips[1]", "'clip_uid'"]),
        (["videos", 1, "video_uid"], 5, False, ["videos[1]", "'video_uid'"]),
        (["videos", 1, "clips"], None, True, ["video v1", "'clips'"]),
        (["videos"], None, True, ["'videos'"]),
    ],
)
def test_load_nlq_malformed_record_names_file_clip_annotation_field(tmp_path, keys, value, delete, needles):
    path = write(tmp_path, _break(keys, value, delete))
    with pytest.raises(DataError) as e:
        load_nlq(path)
    msg = str(e.value)
    assert msg.startswith(str(path)) and "\n" not in msg
    for n in needles:
        assert n in msg, (n, msg)


def test_load_nlq_tolerance_and_file_errors(tmp_path):
    path = write(tmp_path, nlq_data())
    with pytest.raises(DataError, match="tolerance 0.1 s"):  # the 0.4 s overshoot is now an error
        load_nlq(path, window_tolerance=0.1)
    assert load_nlq(path, window_tolerance=0.5).num_clamped == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"videos": [\n  {"video_uid": }]}')
    with pytest.raises(DataError, match=r"bad\.json:2:\d+: invalid JSON"):
        load_nlq(bad)
    with pytest.raises(DataError, match="no such NLQ annotation file"):
        load_nlq(tmp_path / "missing.json")
    with pytest.raises(DataError, match="no language queries"):
        load_nlq(write(tmp_path, {"videos": []}, "empty.json"))
    with pytest.raises(DataError, match="expected a JSON object"):
        load_nlq(write(tmp_path, [1, 2], "list.json"))


def test_nlq_submission_round_trip(tmp_path):
    preds = [
        NLQPrediction("c1", "a1", 0, ((1.0, 2.5), (0.0, 4.0), (3.0, 3.0), (5.0, 9.0), (1.0, 1.5), (7.0, 8.0))),
        NLQPrediction("c1", "a1", 2, ((40.0, 60.0),)),
        NLQPrediction("c3", "a4", 0, ((0.25, 119.0), (2.0, 3.0))),
    ]
    path = write_nlq_submission(tmp_path / "sub" / "nlq_submission.json", preds)
    raw = json.loads(path.read_text())
    assert raw["version"] == "1.0" and raw["challenge"] == "ego4d_nlq_challenge"
    assert raw["results"][0] == {
        "clip_uid": "c1",
        "annotation_uid": "a1",
        "query_idx": 0,
        "predicted_times": [[1.0, 2.5], [0.0, 4.0], [3.0, 3.0], [5.0, 9.0], [1.0, 1.5]],  # top 5, order kept
    }
    back = read_nlq_submission(path)
    assert back[0] == NLQPrediction("c1", "a1", 0, preds[0].predicted_times[:5])
    assert back[1:] == preds[1:]
    assert [p.key for p in back] == [("c1", "a1", 0), ("c1", "a1", 2), ("c3", "a4", 0)]
    assert (
        len(
            json.loads(write_nlq_submission(tmp_path / "k1.json", preds, top_k=1).read_text())["results"][0][
                "predicted_times"
            ]
        )
        == 1
    )


def test_write_nlq_submission_rejects_bad_predictions(tmp_path):
    ok = NLQPrediction("c1", "a1", 0, ((1.0, 2.0),))
    with pytest.raises(ValueError, match="duplicate"):
        write_nlq_submission(tmp_path / "s.json", [ok, ok])
    with pytest.raises(ValueError, match="no windows"):
        write_nlq_submission(tmp_path / "s.json", [NLQPrediction("c1", "a1", 0, ())])
    with pytest.raises(ValueError, match="reversed"):
        write_nlq_submission(tmp_path / "s.json", [NLQPrediction("c1", "a1", 0, ((2.0, 1.0),))])
    with pytest.raises(ValueError, match="non-finite"):
        write_nlq_submission(tmp_path / "s.json", [NLQPrediction("c1", "a1", 0, ((float("nan"), 1.0),))])
    assert not (tmp_path / "s.json").exists()


def _sub(**over) -> dict:
    r = {"clip_uid": "c1", "annotation_uid": "a1", "query_idx": 0, "predicted_times": [[1.0, 2.0], [0, 3]]}
    r.update(over)
    return {"version": "1.0", "challenge": "ego4d_nlq_challenge", "results": [r]}


@pytest.mark.parametrize(
    "data, needles",
    [
        ({**_sub(), "version": "2.0"}, ["'version'"]),
        ({**_sub(), "challenge": "ego4d_moment_queries"}, ["'challenge'"]),
        ({"version": "1.0", "challenge": "ego4d_nlq_challenge"}, ["'results'"]),
        (_sub(query_idx=-1), ["results[0]", "'query_idx'"]),
        (_sub(query_idx=True), ["results[0]", "'query_idx'"]),
        (_sub(clip_uid=""), ["results[0]", "'clip_uid'"]),
        (_sub(predicted_times=[]), ["results[0]", "clip c1 annotation a1 query 0", "empty"]),
        (_sub(predicted_times=[[1.0, 2.0], [1.0]]), ["results[0]", "predicted_times[1]"]),
        (_sub(predicted_times=[[1.0, "2"]]), ["predicted_times[0]"]),
        (_sub(predicted_times=[[3.0, 2.0]]), ["predicted_times[0]", "ends before it starts"]),
        ({**_sub(), "results": _sub()["results"] * 2}, ["results[1]", "duplicate"]),
    ],
)
def test_read_nlq_submission_errors(tmp_path, data, needles):
    path = write(tmp_path, data, "sub.json")
    with pytest.raises(DataError) as e:
        read_nlq_submission(path)
    assert str(e.value).startswith(str(path))
    for n in needles:
        assert n in str(e.value), (n, str(e.value))
