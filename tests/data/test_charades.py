"""Charades-Ego annotations: CSV and class-list parsing, labels, prompts, writers and error reporting."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import numpy as np
import pytest

from egovlp.data.charades import (
    CHARADES_COLUMNS,
    CharadesAction,
    CharadesVideo,
    load_charades_ego,
    parse_actions,
    read_charades_classes,
    read_charades_csv,
    write_charades_classes,
    write_charades_csv,
)
from egovlp.errors import DataError
from egovlp.metrics import charades_map

HEADER = [*CHARADES_COLUMNS, "egocentric"]
ROWS = [
    ["005BUEGO", "JGS5", "Kitchen", "6", "7", "Yes", "A person opens a fridge, then drinks.", "fridge;cup",
     "Person opens the fridge; drinks from a cup.", "c001 0.00 5.50;c002 4.10 11.90", "24.83", "Yes"],
    ["00HFPEGO", "VE4B", "Bedroom", "", "", "Yes", "Holding clothes", "clothes", "", "", "30.20", "Yes"],
    ["01K8XEGO", "7TUR", "Hallway", "5", "6", "No", "Someone runs", "", "", "c001 2.00 3.00", "12.00", "Yes"],
]  # fmt: skip
CLASSES = "c000 Holding some clothes\nc001 Putting clothes somewhere\nc002 Taking some clothes from somewhere\n"


def _csv(rows: list[list[str]], header: list[str] = HEADER) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *rows])
    return out.getvalue()


@pytest.fixture
def ann_dir(tmp_path: Path) -> Path:
    (tmp_path / "CharadesEgo_v1_test_only1st.csv").write_text(_csv(ROWS))
    (tmp_path / "Charades_v1_classes.txt").write_text(CLASSES)
    return tmp_path


def test_reads_videos_labels_and_prompts(ann_dir: Path) -> None:
    ann = load_charades_ego(ann_dir)
    assert [v.id for v in ann.videos] == ["005BUEGO", "00HFPEGO", "01K8XEGO"]
    first = ann.videos[0]
    assert first.actions == (CharadesAction(1, 0.0, 5.5), CharadesAction(2, 4.1, 11.9))
    assert first.is_first_person and first.length == pytest.approx(24.83)
    assert first.script == "A person opens a fridge, then drinks." and first.field("egocentric") == "Yes"
    assert ann.videos[1].actions == ()
    np.testing.assert_array_equal(ann.labels(), [[0, 1, 1], [0, 0, 0], [0, 1, 0]])
    assert ann.prompts == ["Holding some clothes", "Putting clothes somewhere", "Taking some clothes from somewhere"]
    assert ann.video_path("/v", 2) == Path("/v/01K8XEGO.mp4")
    assert [(i, a.class_id) for i, a in ann.action_segments()] == [(0, "c001"), (0, "c002"), (2, "c001")]
    m = charades_map(np.eye(3)[[1, 0, 1]], ann.labels())  # labels feed the metric directly; class 0 has no positive
    assert m.skipped_classes == (0,) and m.num_videos_without_labels == 1


def test_first_person_filter(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = [*ROWS, ["0A8CF", "X", "Kitchen", "", "", "Yes", "", "", "", "c000 0.0 1.0", "5.0", "No"]]
    (tmp_path / "all.csv").write_text(_csv(rows))
    assert len(read_charades_csv(tmp_path / "all.csv")) == 4
    with caplog.at_level(logging.INFO, logger="egovlp.data.charades"):
        videos = read_charades_csv(tmp_path / "all.csv", first_person_only=True)
    assert [v.id for v in videos] == ["005BUEGO", "00HFPEGO", "01K8XEGO"] and "dropped 1" in caplog.text


def test_round_trip(tmp_path: Path, ann_dir: Path) -> None:
    videos = read_charades_csv(ann_dir / "CharadesEgo_v1_test_only1st.csv")
    write_charades_csv(tmp_path / "out.csv", videos)
    assert read_charades_csv(tmp_path / "out.csv") == videos
    empty_fields = tuple((c, "") for c in HEADER[1:9])
    generated = [  # odd floats (1/3) must survive too
        CharadesVideo(
            f"V{i}EGO", (CharadesAction(i % 3, 0.1 * i, 0.1 * i + 1.0 / 3),), (*empty_fields, ("length", "9.50"))
        )
        for i in range(5)
    ]
    write_charades_csv(tmp_path / "gen.csv", generated)
    assert read_charades_csv(tmp_path / "gen.csv") == tuple(generated)
    names = ("Holding some clothes", "Putting clothes somewhere")
    write_charades_classes(tmp_path / "classes.txt", names)
    assert read_charades_classes(tmp_path / "classes.txt") == names


@pytest.mark.parametrize(
    ("column", "bad"),
    [
        ("actions", "c001 0.00"),
        ("actions", "x001 0.00 1.00"),
        ("actions", "c001 zero 1.00"),
        ("actions", "c001 0.00 1.00;"),
        ("actions", "c157 0.00 1.00"),
        ("actions", "c001 0.00 inf"),
        ("length", "long"),
        ("id", ""),
    ],
)
def test_malformed_rows_name_file_line_column(tmp_path: Path, column: str, bad: str) -> None:
    rows = [list(r) for r in ROWS]
    rows[1][HEADER.index(column)] = bad
    path = tmp_path / "bad.csv"
    path.write_text(_csv(rows))
    with pytest.raises(DataError) as info:
        read_charades_csv(path, num_classes=157)
    assert f"{path}, line 3, column '{column}'" in str(info.value)


def test_structural_errors(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(_csv([r[:9] for r in ROWS], [h for h in HEADER if h != "actions"][:9]))
    with pytest.raises(DataError, match=r"missing column\(s\) \['actions'\]"):
        read_charades_csv(path)
    path.write_text(_csv([*ROWS, ROWS[0]]))
    with pytest.raises(DataError, match="line 5, column 'id': '005BUEGO' repeats line 2"):
        read_charades_csv(path)
    path.write_text(_csv(ROWS) + "X1EGO,only,three\n")
    with pytest.raises(DataError, match="line 5: expected 12 fields, got 3"):
        read_charades_csv(path)
    (tmp_path / "classes.txt").write_text("c000 Holding some clothes\nc002 Skipped one\n")
    with pytest.raises(DataError, match="line 2: expected class c001"):
        read_charades_classes(tmp_path / "classes.txt")
    (tmp_path / "classes.txt").write_text("c000\n")
    with pytest.raises(DataError, match="line 1: expected 'cNNN class name'"):
        read_charades_classes(tmp_path / "classes.txt")
    assert parse_actions("  ") == ()
