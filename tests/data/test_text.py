"""Narration cleaning, tag literals, taxonomies and EgoClip windows from Ego4D narrations."""

from __future__ import annotations

import json

import numpy as np
import pytest

from egovlp.data.narrations import build_egoclip, build_egoclip_rows, load_narrations, narration_windows
from egovlp.data.tags import multi_hot, parse_tag_column, parse_tag_list
from egovlp.data.taxonomy import Taxonomy, load_taxonomy, write_taxonomy
from egovlp.data.text import clean_narration
from egovlp.errors import DataError


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("#C C picks up the red cube", "C picks up the red cube"),
        ("#c C opens the door ", "C opens the door"),
        ("#O man X holds #unsure", "man X holds something"),
        ("#O A woman talks to C #summary", "A woman talks to C"),
        ("C  moves   the #Unsure  in the box", "C moves the something in the box"),
        ("plain text", "plain text"),
    ],
)
def test_clean_narration(raw, clean):
    assert clean_narration(raw) == clean


def test_clean_narration_options():
    assert clean_narration("#C C picks up the cube", drop_actor=True) == "picks up the cube"
    assert clean_narration("#C C holds #unsure", unsure="") == "C holds"


def test_parse_tag_list():
    assert parse_tag_list("[192, 115, 12]") == [192, 115, 12]
    assert parse_tag_list(" [ ] ") == []
    assert parse_tag_list([3, 4]) == [3, 4]
    for bad in ("[1 2]", "1, 2", "[1,]", "[-1]", "__import__('os')", "[1.5]"):
        with pytest.raises(ValueError):
            parse_tag_list(bad)


def test_parse_tag_column_matches_row_parser():
    column = ["[93]", "[192, 115, 12]", "[]", " [0,1] ", "[ 7 ]", "[1000000]"]
    values, offsets = parse_tag_column(column)
    assert [values[offsets[i] : offsets[i + 1]].tolist() for i in range(len(column))] == [
        parse_tag_list(c) for c in column
    ]
    for bad in (["[1 2]"], ["[,]"], ["[1,,2]"], ["1, 2"], ["[1]["], ["[a]"], ["[1]2"], ["[3]", "[x]"]):
        assert parse_tag_column(bad) is None
    np.testing.assert_array_equal(multi_hot([0, 2], 4), [1, 0, 1, 0])


def test_taxonomy_file_and_tagging(tmp_path):
    path = tmp_path / "verbs.csv"
    write_taxonomy(path, ["take_(pick,_grab)", "put_down"], [["pick", "picks", "grab"], ["put down", "puts down"]])
    tax = load_taxonomy(path)
    assert len(tax) == 2 and tax.labels[0] == "take_(pick,_grab)"
    assert tax.tag("#C C picks the cup then puts down the cup") == [0, 1]
    assert tax.tag("#C C takes a knife") == [0]  # label head word, plural -s stripped
    nouns = Taxonomy(["cup", "knife"], [["cup", "mug"], ["knife"]])
    assert nouns.tag("C washes the mugs and a knife") == [0, 1]


def test_taxonomy_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("label,group\nfoo,\"['a', 'b'\"\n")
    with pytest.raises(DataError, match=r"bad\.csv:2: column 'group' is not a list literal"):
        load_taxonomy(bad)
    bad.write_text("name\nfoo\n")
    with pytest.raises(DataError, match=r"bad\.csv:1: a taxonomy needs a header with a 'label' column"):
        load_taxonomy(bad)


def _narration_json(tmp_path):
    data = {
        "v1": {
            "narration_pass_1": {
                "narrations": [
                    {"timestamp_sec": 10.0, "narration_text": "#C C picks the cup"},
                    {"timestamp_sec": 4.0, "narration_text": "#C C grabs a mug"},
                    {"timestamp_sec": 1.0, "narration_text": "#C C puts down the knife"},
                    {"timestamp_sec": None, "narration_text": "broken"},
                ]
            },
            "narration_pass_2": {"narrations": [{"timestamp_sec": 2.0, "narration_text": "#C C picks the knife"}]},
        },
        "v2": {"status": "redacted"},
    }
    path = tmp_path / "narration.json"
    path.write_text(json.dumps(data))
    return path


def test_egovlp_clip_windows(tmp_path):
    narrations = load_narrations(_narration_json(tmp_path))
    assert set(narrations) == {"v1"} and len(narrations["v1"]["narration_pass_1"]) == 3
    half = narration_windows(narrations, alpha=4.9)
    beta = (3.0 + 6.0) / 2  # gaps of pass 1: 1->4->10
    assert half[("v1", "narration_pass_1")] == pytest.approx(beta / (2 * 4.9))
    assert half[("v1", "narration_pass_2")] == pytest.approx(beta / (2 * 4.9))  # single narration: mean beta
    verbs = Taxonomy(["take", "put_down"], [["pick", "picks", "grab", "grabs"], ["puts down"]])
    nouns = Taxonomy(["cup", "knife"], [["cup", "mug"], ["knife"]])
    rows = build_egoclip_rows(narrations, verbs, nouns, durations={"v1": 10.2})
    first = rows[0]
    assert (first["narration_source"], first["narration_ind"], first["clip_text"]) == (
        "narration_pass_1",
        2,
        "#C C puts down the knife",
    )
    assert float(first["clip_start"]) == pytest.approx(1.0 - beta / 9.8, abs=1e-5)
    assert (first["tag_verb"], first["tag_noun"]) == ("[1]", "[1]")
    assert rows[2]["clip_end"] == "10.200000"  # clamped to the video's duration
    assert [r["clip_idx"] for r in rows] == list(range(4))


def test_build_egoclip_writes_a_loadable_csv(tmp_path):
    from egovlp.data.egoclip_table import load_egoclip

    verbs = Taxonomy(["take"], [["pick", "picks", "grab", "grabs"]])
    nouns = Taxonomy(["cup", "knife"], [["cup", "mug"], ["knife"]])
    n = build_egoclip(_narration_json(tmp_path), verbs, nouns, tmp_path / "egoclip.csv")
    table = load_egoclip(tmp_path / "egoclip.csv")
    assert len(table) == n == 4
    assert table.row(1)["tag_noun"] == [0] and table.row(1)["video_dur"] > 10.0
