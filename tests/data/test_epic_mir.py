"""EK-100 MIR annotations: official CSV parsing, relevancy from classes, training pairs, writers and errors."""

from __future__ import annotations

import csv
import io
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from egovlp.data.epic_mir import (
    CLIP_COLUMNS,
    EpicClip,
    batch_relevancy,
    build_relevancy,
    default_sentences,
    format_timestamp,
    load_epic_mir,
    parse_timestamp,
    read_epic_mir_clips,
    read_epic_mir_sentences,
    sample_positive_sentence,
    write_epic_mir_csvs,
)
from egovlp.errors import DataError
from egovlp.utils.safe_pickle import RefusedGlobalError

CLIP_HEADER = list(CLIP_COLUMNS)
# verb / noun-set classes: A (1, {2, 3}), B (1, {3}), C (2, {2, 3, 4}), D (2, {})
CLIP_ROWS = [
    ["P01_11_0", "P01", "P01_11", "00:00:00.560", "00:00:00.14", "00:00:01.89", "8", "113", "wash pan", "wash", "1",
     "pan", "2", "['pan', 'tap']", "[2, 3]"],
    ["P01_11_1", "P01", "P01_11", "00:00:05.000", "00:00:04.50", "00:01:02.50", "270", "3750", "wash tap", "wash", "1",
     "tap", "3", "['tap']", "[3]"],
    ["P02_03_7", "P02", "P02_03", "01:00:00.000", "01:00:01.00", "01:00:03.25", "216060", "216195", "put pan tap lid",
     "put", "2", "pan", "2", "['pan', 'tap', 'lid']", "[2, 3, 4]"],
    ["P02_03_8", "P02", "P02_03", "01:00:09.000", "01:00:09.00", "01:00:10.00", "216540", "216600", "put", "put", "2",
     "", "0", "[]", "[]"],
]  # fmt: skip


def _csv(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *rows])
    return out.getvalue()


CLIPS_CSV = _csv(CLIP_HEADER, CLIP_ROWS)
SENTENCES_CSV = "narration_id,narration\nP01_11_0,wash pan\nP02_03_7,put pan tap lid\nP02_03_8,something else\n"


@pytest.fixture
def ann_dir(tmp_path: Path) -> Path:
    (tmp_path / "EPIC_100_retrieval_test.csv").write_text(CLIPS_CSV)
    (tmp_path / "EPIC_100_retrieval_test_sentence.csv").write_text(SENTENCES_CSV)
    return tmp_path


def test_reads_official_columns(ann_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    clips = read_epic_mir_clips(ann_dir / "EPIC_100_retrieval_test.csv")
    assert [c.narration_id for c in clips] == ["P01_11_0", "P01_11_1", "P02_03_7", "P02_03_8"]
    a = clips[0]
    assert (a.participant_id, a.video_id, a.start_frame, a.stop_frame) == ("P01", "P01_11", 8, 113)
    assert a.start_sec == pytest.approx(0.14) and a.stop_sec == pytest.approx(1.89)
    assert clips[1].stop_sec == pytest.approx(62.5) and clips[2].start_sec == pytest.approx(3601.0)
    assert a.all_nouns == ("pan", "tap") and a.all_noun_classes == (2, 3) and clips[3].all_noun_classes == ()
    with caplog.at_level(logging.INFO, logger="egovlp.data.epic_mir"):
        sentences = read_epic_mir_sentences(ann_dir / "EPIC_100_retrieval_test_sentence.csv", clips)
    assert [s.clip_index for s in sentences] == [0, 2, 3]
    assert sentences[2].text == "put" and sentences[2].csv_text == "something else"  # the clip row's narration wins
    assert "1 sentence(s) differ" in caplog.text
    ann = load_epic_mir(ann_dir)
    assert ann.texts == ["wash pan", "put pan tap lid", "put"] and ann.relevancy.shape == (4, 3)
    assert ann.video_path("/videos", 2) == Path("/videos/P02/P02_03.MP4")


def test_relevancy_hand_computed(ann_dir: Path) -> None:
    ann = load_epic_mir(ann_dir, relevancy="build")
    expected = np.array(
        [
            [(1 + 1) / 2, (0 + 2 / 3) / 2, (0 + 0) / 2],  # A vs sentences from A, C, D
            [(1 + 1 / 2) / 2, (0 + 1 / 3) / 2, 0.0],  # B
            [(0 + 2 / 3) / 2, (1 + 1) / 2, (1 + 0) / 2],  # C
            [0.0, (1 + 0) / 2, (1 + 1) / 2],  # D: IoU of two empty noun sets is 1
        ]
    )
    np.testing.assert_allclose(ann.relevancy, expected)


def _random_clips(rng: np.random.Generator, n: int) -> list[EpicClip]:
    clips = []
    for i in range(n):
        nouns = tuple(sorted({int(x) for x in rng.integers(0, 6, size=rng.integers(0, 4))}))
        verb = int(rng.integers(0, 3))
        start = float(rng.integers(0, 10_000)) / 100
        clips.append(
            EpicClip(
                f"P{i % 3:02d}_{i}", f"P{i % 3:02d}", f"P{i % 3:02d}_0{i % 2}", "00:00:00.000", start, start + 1.25,
                int(start * 60), int(start * 60) + 75, f"v{verb} {' '.join(map(str, nouns))}", f"v{verb}", verb,
                "n", nouns[0] if nouns else 0, tuple(f"n{k}" for k in nouns), nouns,
            )
        )  # fmt: skip
    return clips


def test_relevancy_matches_set_loop() -> None:
    rng = np.random.default_rng(0)
    clips = _random_clips(rng, 40)
    sentences = default_sentences(clips)
    rel = build_relevancy(clips, sentences, chunk_rows=7)
    for i, clip in enumerate(clips):
        for j, sentence in enumerate(sentences):
            other = clips[sentence.clip_index]
            a, b = set(clip.all_noun_classes), set(other.all_noun_classes)
            iou = len(a & b) / len(a | b) if a | b else 1.0
            assert rel[i, j] == pytest.approx(((clip.verb_class == other.verb_class) + iou) / 2), (i, j)
    np.testing.assert_array_equal(build_relevancy(clips, sentences, clip_indices=[5, 0]), rel[[5, 0]])


def test_training_pairs_follow_the_official_rule(ann_dir: Path) -> None:
    ann = load_epic_mir(ann_dir)
    rng = np.random.default_rng(0)
    draws = [sample_positive_sentence(ann.relevancy[1], rng) for _ in range(200)]
    assert {d[0] for d in draws} == {0, 1}  # relevancy 0.75 and 1/6 are > 0.1; 0 is not
    assert all(w == pytest.approx(ann.relevancy[1, j]) for j, w in draws)
    assert sample_positive_sentence(np.array([0.1, 0.0]), rng) == (-1, 1.0)  # strictly above 0.1
    clip_idx, sent_idx = [1, 2, 3], [0, -1, 1]
    weights = batch_relevancy(ann, clip_idx, sent_idx)
    np.testing.assert_allclose(np.diag(weights), [ann.relevancy[1, 0], 1.0, ann.relevancy[3, 1]])
    assert weights[0, 2] == pytest.approx(ann.relevancy[1, 1]) and weights[1, 0] == pytest.approx(ann.relevancy[2, 0])


def test_round_trip(tmp_path: Path) -> None:
    clips = _random_clips(np.random.default_rng(1), 25)
    sentences = default_sentences(clips)
    write_epic_mir_csvs(tmp_path / "c.csv", tmp_path / "s.csv", clips, sentences)
    back = read_epic_mir_clips(tmp_path / "c.csv")
    assert back == tuple(clips)
    assert read_epic_mir_sentences(tmp_path / "s.csv", back) == sentences
    assert format_timestamp(3723.45) == "01:02:03.45" and parse_timestamp("01:02:03.45") == pytest.approx(3723.45)


def test_relevancy_pickle(ann_dir: Path) -> None:
    built = load_epic_mir(ann_dir, relevancy="build").relevancy
    (ann_dir / "relevancy").mkdir()
    path = ann_dir / "relevancy" / "caption_relevancy_EPIC_100_retrieval_test.pkl"
    path.write_bytes(pickle.dumps(built, protocol=2))
    np.testing.assert_array_equal(load_epic_mir(ann_dir, relevancy="pickle").relevancy, built)
    path.write_bytes(pickle.dumps(built[:, :2]))
    with pytest.raises(DataError, match="shape"):
        load_epic_mir(ann_dir, relevancy="pickle")
    path.write_bytes(pickle.dumps({"m": built, "x": _Evil()}))
    with pytest.raises(RefusedGlobalError, match="system"):
        load_epic_mir(ann_dir, relevancy="pickle")
    assert not (ann_dir / "pwned").exists()


class _Evil:
    def __reduce__(self) -> tuple:
        return os.system, ("touch pwned",)


@pytest.mark.parametrize(
    ("line", "column", "bad"),
    [
        (2, "start_timestamp", "0:0:0.14"),
        (3, "all_noun_classes", "[3, x]"),
        (3, "all_noun_classes", "__import__('os').system('touch pwned')"),
        (3, "all_noun_classes", "[3, -1]"),
        (3, "all_noun_classes", "[" * 5000 + "]" * 5000),
        (3, "all_nouns", "[3]"),
        (4, "verb_class", "two"),
        (5, "stop_frame", "-4"),
        (2, "stop_timestamp", "00:00:00.01"),
    ],
)
def test_malformed_rows_name_file_line_column(tmp_path: Path, line: int, column: str, bad: str) -> None:
    rows = [list(r) for r in CLIP_ROWS]
    rows[line - 2][CLIP_HEADER.index(column)] = bad
    path = tmp_path / "clips.csv"
    path.write_text(_csv(CLIP_HEADER, rows))
    with pytest.raises(DataError) as info:
        read_epic_mir_clips(path)
    assert f"{path}, line {line}, column '{column}'" in str(info.value)
    assert not (tmp_path / "pwned").exists()


def test_structural_errors(tmp_path: Path, ann_dir: Path) -> None:
    path = tmp_path / "clips.csv"
    path.write_text(CLIPS_CSV.replace(",all_noun_classes", ",classes"))
    with pytest.raises(DataError, match=r"line 1: missing column\(s\) \['all_noun_classes'\]"):
        read_epic_mir_clips(path)
    path.write_text(CLIPS_CSV + "P9_1,P9\n")
    with pytest.raises(DataError, match="line 6: expected 15 fields, got 2"):
        read_epic_mir_clips(path)
    path.write_text(CLIPS_CSV + CLIPS_CSV.splitlines(keepends=True)[1])
    with pytest.raises(DataError, match="line 6: narration_id 'P01_11_0' repeats line 2"):
        read_epic_mir_clips(path)
    clips = read_epic_mir_clips(ann_dir / "EPIC_100_retrieval_test.csv")
    (tmp_path / "s.csv").write_text(SENTENCES_CSV + "P77_1,ghost\n")
    with pytest.raises(DataError, match=r"line 5, column 'narration_id': 'P77_1' is not a clip"):
        read_epic_mir_sentences(tmp_path / "s.csv", clips)
    with pytest.raises(DataError, match="not found"):
        read_epic_mir_clips(tmp_path / "missing.csv")


def test_byte_order_mark_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "clips.csv"
    path.write_bytes(b"\xef\xbb\xbf" + CLIPS_CSV.encode("utf-8"))
    assert read_epic_mir_clips(path)[0].narration_id == "P01_11_0"
