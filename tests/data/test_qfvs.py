"""QFVS readers: oracle summaries, per-shot tags, Tags.mat (a real MATLAB cell written by scipy), malformed files."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from egovlp.data.qfvs import (
    list_oracle_summaries,
    load_oracle_summary,
    load_qfvs,
    load_shot_tags,
    load_tags_mat,
    tags_mat_index,
)
from egovlp.errors import DataError


def _cell(videos: list[np.ndarray]) -> np.ndarray:
    """``Tags{1, v}{s, 1}`` = 1 x C double row, as MATLAB stores it."""
    outer = np.empty((1, len(videos)), dtype=object)
    for v, vecs in enumerate(videos):
        inner = np.empty((len(vecs), 1), dtype=object)
        for s, row in enumerate(vecs):
            inner[s, 0] = np.asarray(row, dtype=np.float64).reshape(1, -1)
        outer[0, v] = inner
    return outer


def _world(tmp_path, num_concepts=4, nested=True):
    root = tmp_path / "ute"
    base = root / "Query-Focused_Summaries" if nested else root
    p01 = [["Car", "Street"], [], ["Car"]]
    p02 = [["Food"], ["Food", "Car"], ["Street"], []]
    for name, shots in (("P01", p01), ("P02", p02)):
        d = root / "Dense_per_shot_tags" / name
        d.mkdir(parents=True)
        (d / f"{name}.txt").write_text("".join(",".join(s) + "\n" for s in shots))
    (base / "Oracle_Summaries" / "P01").mkdir(parents=True)
    (base / "Oracle_Summaries" / "P02").mkdir(parents=True)
    (base / "Oracle_Summaries" / "P01" / "Car_Street_oracle.txt").write_text("3\n1\n")
    (base / "Oracle_Summaries" / "P02" / "Food_Car_oracle.txt").write_text("2\n\n1\n")
    (base / "Oracle_Summaries" / "P02" / "Car_Street_oracle.txt").write_text("4\n")
    (base / "Oracle_Summaries" / "P02" / "notes.txt").write_text("ignored\n")
    vocab = ["Car", "Street", "Food", "Sun"][:num_concepts]
    vectors = [[[int(c in s) for c in vocab] for s in shots] for shots in (p01, p02)]
    scipy.io.savemat(str(root / "Dense_per_shot_tags" / "Tags.mat"), {"Tags": _cell(vectors)})
    return root, vectors


def test_load_qfvs(tmp_path):
    root, vectors = _world(tmp_path)
    p01, p02 = load_qfvs(root, num_concepts=4)
    assert (p01.name, p01.num_shots, p02.num_shots) == ("P01", 3, 4)
    assert p01.shot_tags == (("Car", "Street"), (), ("Car",))
    assert p02.shot_tags[1] == ("Food", "Car")
    assert p01.oracle == {("Car", "Street"): (0, 2)}
    assert p02.oracle == {("Car", "Street"): (3,), ("Food", "Car"): (0, 1)}
    assert p01.concepts is not None and p02.concepts is not None
    np.testing.assert_array_equal(p01.concepts, vectors[0])
    np.testing.assert_array_equal(p02.concepts, [[0, 0, 1, 0], [1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    assert p02.concepts.dtype == np.uint8
    assert [v.name for v in load_qfvs(root, videos=["P02"], num_concepts=4)] == ["P02"]


def test_oracle_directly_under_root_and_no_tags_mat(tmp_path):
    root, _ = _world(tmp_path, nested=False)
    (root / "Dense_per_shot_tags" / "Tags.mat").unlink()
    videos = load_qfvs(root)
    assert videos[0].concepts is None and videos[1].oracle[("Food", "Car")] == (0, 1)


def test_tags_mat_layout(tmp_path):
    path = tmp_path / "Tags.mat"
    rows = np.eye(48)[[0, 47, 5]]
    scipy.io.savemat(str(path), {"Tags": _cell([rows[:2], rows])})
    a, b = load_tags_mat(path)
    assert a.shape == (2, 48) and b.shape == (3, 48)
    assert a[1, 47] == 1 and a[1].sum() == 1 and b[2, 5] == 1
    assert tags_mat_index("P03") == 2


def test_tags_mat_malformed(tmp_path):
    path = tmp_path / "Tags.mat"
    with pytest.raises(DataError, match="no such QFVS Tags.mat"):
        load_tags_mat(path)
    path.write_text("not a mat file")
    with pytest.raises(DataError, match="Tags.mat: not a readable MATLAB file"):
        load_tags_mat(path)
    scipy.io.savemat(str(path), {"Other": np.zeros(3)})
    with pytest.raises(DataError, match="no variable 'Tags'"):
        load_tags_mat(path)
    scipy.io.savemat(str(path), {"Tags": np.zeros((1, 48))})
    with pytest.raises(DataError, match="must be a 1 x V cell array"):
        load_tags_mat(path)
    scipy.io.savemat(str(path), {"Tags": _cell([np.zeros((2, 48)), np.zeros((1, 47))])})
    with pytest.raises(DataError, match=r"Tags\{1,2\}\{1,1\} must be a 1 x 48 vector"):
        load_tags_mat(path)
    bad = np.zeros((2, 48))
    bad[1, 3] = 2
    scipy.io.savemat(str(path), {"Tags": _cell([bad])})
    with pytest.raises(DataError, match=r"Tags\{1,1\}\{2,1\} must hold only 0 and 1"):
        load_tags_mat(path)


def test_shot_count_mismatch(tmp_path):
    root, vectors = _world(tmp_path)
    scipy.io.savemat(str(root / "Dense_per_shot_tags" / "Tags.mat"), {"Tags": _cell([vectors[0], vectors[1][:3]])})
    with pytest.raises(DataError, match=r"Tags\{1,2\} has 3 shots but .*P02.txt has 4"):
        load_qfvs(root, num_concepts=4)
    scipy.io.savemat(str(root / "Dense_per_shot_tags" / "Tags.mat"), {"Tags": _cell([vectors[0]])})
    with pytest.raises(DataError, match=r"no cell Tags\{1,2\} for video P02"):
        load_qfvs(root, num_concepts=4)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("1\nx\n", r"oracle.txt:2: shot id must be an integer, got 'x'"),
        ("0\n", r"oracle.txt:1: shot id must be \[1, 5\] \(1-based\), got 0"),
        ("2\n6\n", r"oracle.txt:2: shot id must be \[1, 5\] \(1-based\), got 6"),
        ("2\n3\n2\n", r"oracle.txt:3: shot id 2 repeats line 1"),
        ("\n\n", r"oracle.txt: empty oracle summary"),
    ],
)
def test_oracle_malformed(tmp_path, text, match):
    path = tmp_path / "Car_Sun_oracle.txt"
    path.write_text(text)
    with pytest.raises(DataError, match=match):
        load_oracle_summary(path, num_shots=5)


def test_oracle_and_tags_files(tmp_path):
    path = tmp_path / "A_B_oracle.txt"
    path.write_text(" 5\n2 \n")
    assert load_oracle_summary(path) == (1, 4)
    with pytest.raises(DataError, match="no such QFVS oracle summary file"):
        load_oracle_summary(tmp_path / "missing.txt")
    assert list_oracle_summaries(tmp_path) == {("A", "B"): str(path)}
    with pytest.raises(DataError, match="no <c1>_<c2>_oracle.txt files"):
        list_oracle_summaries(_empty(tmp_path))
    tags = tmp_path / "P01.txt"
    tags.write_text("Car, Sun\n\nSun\n\n")
    assert load_shot_tags(tags) == (("Car", "Sun"), (), ("Sun",), ())
    with pytest.raises(DataError, match=r"P01.txt:1: unknown concept 'Sun'"):
        load_shot_tags(tags, vocabulary=("Car", "Sky"))
    tags.write_text("Car\n\nSun\n")
    with pytest.raises(DataError, match=r"P01.txt:3: unknown concept 'Sun'"):
        load_shot_tags(tags, vocabulary=("Car", "Sky"))
    tags.write_text("\n")
    assert load_shot_tags(tags) == ((),)
    tags.write_text("")
    with pytest.raises(DataError, match="P01.txt: no shots"):
        load_shot_tags(tags)


def _empty(tmp_path):
    d = tmp_path / "empty"
    d.mkdir()
    return d


def test_missing_layout(tmp_path):
    with pytest.raises(DataError, match="no Dense_per_shot_tags folder"):
        load_qfvs(tmp_path)
    (tmp_path / "Dense_per_shot_tags").mkdir()
    with pytest.raises(DataError, match="no Oracle_Summaries folder"):
        load_qfvs(tmp_path)
    (tmp_path / "Oracle_Summaries").mkdir()
    with pytest.raises(DataError, match="no video folders"):
        load_qfvs(tmp_path)
    (tmp_path / "Dense_per_shot_tags" / "P01").mkdir()
    with pytest.raises(DataError, match="P01.txt: no such QFVS per-shot tags file"):
        load_qfvs(tmp_path)
    (tmp_path / "Dense_per_shot_tags" / "P01" / "P01.txt").write_text("Car\n")
    with pytest.raises(DataError, match="Oracle_Summaries/P01: no such QFVS oracle-summary folder"):
        load_qfvs(tmp_path)
