"""EgoClip: CSV parsing of every column, malformed rows, scene-aware negatives, skip policy, DataLoader workers."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from egovlp.data.collate import EgoClipCollate
from egovlp.data.egoclip import EgoClipDataset, SceneGroups
from egovlp.data.egoclip_table import load_egoclip
from egovlp.data.tokenizer import Tokenizer
from egovlp.data.transforms import train_transform
from egovlp.errors import DataError, VideoReadError

from .conftest import EGOCLIP_HEADER, egoclip_line


def write_csv(path, *lines, header=EGOCLIP_HEADER):
    path.write_text(header + "".join(lines), encoding="utf-8")
    return path


def test_every_column_is_parsed(tmp_path):
    quoted = '"C says ""hi""\tand waves"'  # pandas-style quoting of a field holding a tab and quotes
    path = write_csv(
        tmp_path / "egoclip.csv",
        egoclip_line(),
        "\n",  # a blank line is ignored
        egoclip_line(7, "vid-1", 61.5, 61.0, 62.0, quoted, "[]", "[3]"),
        egoclip_line(8, "vid-0", 0.5, -0.1, 1.0, "#O man X holds #unsure — ünïcode", "[1, 2]", "[]"),
    )
    table = load_egoclip(path)
    assert len(table) == 3 and table.video_uids == ["vid-0", "vid-1"]
    assert table.row(0) == {
        "clip_idx": 0,
        "video_uid": "vid-0",
        "video_dur": 128.033333,
        "narration_source": "narration_pass_1",
        "narration_ind": 0,
        "narration_time": 3.3445,
        "clip_start": 2.967651,
        "clip_end": 3.721266,
        "clip_text": "#C C picks a bag of clothes from the floor",
        "tag_verb": [93],
        "tag_noun": [192, 115, 12],
    }
    assert table.row(1)["clip_text"] == 'C says "hi"\tand waves' and table.row(1)["tag_verb"] == []
    assert table.row(2)["clip_text"] == "#O man X holds #unsure — ünïcode" and table.row(2)["tag_verb"] == [1, 2]
    assert table.line.tolist() == [2, 4, 5] and table.where(1).endswith("egoclip.csv:4")


def test_extra_and_reordered_columns(tmp_path):
    header = "\t" + EGOCLIP_HEADER.replace("clip_idx\tvideo_uid", "video_uid\tclip_idx")
    line = egoclip_line(5)
    fields = line.split("\t")
    fields[0], fields[1] = fields[1], fields[0]
    table = load_egoclip(write_csv(tmp_path / "e.csv", "0\t" + "\t".join(fields), header=header))
    assert table.row(0)["clip_idx"] == 5 and table.row(0)["video_uid"] == "vid-0"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (egoclip_line(start="abc"), r"e\.csv:3: column 'clip_start' \(column 7\): cannot parse 'abc' as a number"),
        (egoclip_line(t="nan"), r"e\.csv:3: column 'narration_time' \(column 6\): 'nan' is not a finite number"),
        (egoclip_line(verb="[1 2]"), r"e\.csv:3: column 'tag_verb' \(column 10\): cannot parse '\[1 2\]' as a tag"),
        (egoclip_line(noun="__import__('os')"), r"e\.csv:3: column 'tag_noun' \(column 11\)"),
        (egoclip_line(uid=""), r"e\.csv:3: column 'video_uid' \(column 2\): empty video_uid"),
        ("1\tvid\t3.0\n", r"e\.csv:3: expected 11 tab-separated columns, found 3"),
        (egoclip_line().replace("0\tvid-0", "0.5\tvid-0", 1), r"column 'clip_idx' \(column 1\): cannot parse '0\.5'"),
    ],
)
def test_malformed_rows_name_file_line_and_column(tmp_path, line, message):
    path = write_csv(tmp_path / "e.csv", egoclip_line(), line, egoclip_line(2))
    with pytest.raises(DataError, match=message):
        load_egoclip(path)
    table = load_egoclip(path, bad_rows="skip")
    assert len(table) == 2 and table.num_bad_rows == 1 and table.line.tolist() == [2, 4]


def test_missing_column_and_empty_file(tmp_path):
    with pytest.raises(DataError, match=r"e\.csv:1: missing column\(s\) \['tag_noun'\]"):
        load_egoclip(write_csv(tmp_path / "e.csv", header=EGOCLIP_HEADER.replace("\ttag_noun", "")))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty file"):
        load_egoclip(tmp_path / "empty.csv")


def test_max_rows_and_blocks(tmp_path):
    path = write_csv(tmp_path / "e.csv", *[egoclip_line(i) for i in range(50)])
    assert len(load_egoclip(path, max_rows=7)) == 7
    small_blocks = load_egoclip(path, block_bytes=300)
    assert small_blocks.clip_idx.tolist() == list(range(50)) and small_blocks.line.tolist() == list(range(2, 52))


def test_tag_outside_the_taxonomy(tmp_path):
    path = write_csv(tmp_path / "e.csv", egoclip_line(), egoclip_line(1, noun="[600]"))
    with pytest.raises(DataError, match=r"e\.csv:3: column 'tag_noun': id 600 is outside the taxonomy of 582"):
        EgoClipDataset(path, tmp_path, 4)


def test_scene_groups_draw_from_bucket_then_video():
    video = np.array([0, 0, 0, 0, 1, 1, 2])
    bucket = np.array([0, 0, 1, 0, 5, 6, 0])
    groups = SceneGroups(video, bucket)
    rng = np.random.default_rng(0)
    draws = {i: {groups.negative(i, rng) for _ in range(50)} for i in range(7)}
    assert draws[0] == {1, 3} and draws[1] == {0, 3}  # same video and bucket, never itself
    assert draws[2] == {0, 1, 3}  # alone in its bucket: any other clip of the video
    assert draws[4] == {5} and draws[5] == {4}
    assert draws[6] == {6}  # alone in its video: itself


def test_items_from_the_synthetic_world(small_world):
    ds = EgoClipDataset(
        small_world["egoclip"], small_world["videos"], 4, train_transform(32), chunk_seconds=10,
        num_verbs=small_world.num_verbs, num_nouns=small_world.num_nouns,
    )  # fmt: skip
    item = ds[3]
    row = ds.table.row(3)
    assert item["video"].shape == (4, 3, 32, 32) and item["video"].dtype == torch.float32
    assert item["text"] == row["clip_text"].replace("#C C", "C")
    assert (
        item["verb"].shape == (small_world.num_verbs,) and item["verb"].nonzero().flatten().tolist() == row["tag_verb"]
    )
    assert item["noun"].nonzero().flatten().tolist() == row["tag_noun"]
    assert (item["clip_idx"], item["video_uid"]) == (row["clip_idx"], row["video_uid"])
    pickle.loads(pickle.dumps(ds))  # no open handles: safe to send to workers


def test_scene_negatives_come_from_the_same_video_and_bucket(small_world):
    ds = EgoClipDataset(
        small_world["egoclip"], small_world["videos"], 2, None, chunk_seconds=10, scene_negatives=True,
        num_verbs=small_world.num_verbs, num_nouns=small_world.num_nouns,
    )  # fmt: skip
    t = ds.table
    for i in range(0, len(ds), 7):
        sample, negative = ds[i]
        j = int(np.flatnonzero(t.clip_idx == negative["clip_idx"])[0])
        assert negative["video_uid"] == sample["video_uid"] and j != i
        if ds.groups.bucket[2][i] > 1:
            assert t.narration_time[i] // 60 == t.narration_time[j] // 60


def _broken_world_csv(small_world, tmp_path):
    lines = small_world["egoclip"].read_text().splitlines(keepends=True)
    bad = lines[2].split("\t")
    bad[1] = "no-such-video"
    return write_csv(tmp_path / "e.csv", lines[1], "\t".join(bad), header=lines[0])


def test_bad_video_raises_with_file_and_range(small_world, tmp_path):
    path = _broken_world_csv(small_world, tmp_path)
    ds = EgoClipDataset(path, small_world["videos"], 2, chunk_seconds=10, num_verbs=4, num_nouns=5)
    with pytest.raises(
        VideoReadError, match=r"no-such-video/\d+\.mp4: no such video file .*clip no-such-video .*e\.csv:3"
    ):
        ds[1]


def test_skip_policy_counts_and_collate_drops(small_world, tmp_path):
    path = _broken_world_csv(small_world, tmp_path)
    ds = EgoClipDataset(path, small_world["videos"], 2, train_transform(16), chunk_seconds=10, bad_input="skip",
                        num_verbs=4, num_nouns=5)  # fmt: skip
    assert ds[1] is None and ds.num_skipped == 1
    tok = Tokenizer.from_dir(small_world["tokenizer"])
    batch = EgoClipCollate(tok)([ds[0], ds[1]])
    assert batch["num_skipped"] == 1 and batch["video"].shape[0] == 1
    assert EgoClipCollate(tok)([None, None]) == {"num_skipped": 2}


def _epoch(ds, tok, seed):
    torch.manual_seed(seed)
    sampler = DistributedSampler(ds, num_replicas=2, rank=0, shuffle=True, seed=seed)
    loader = DataLoader(ds, batch_size=4, sampler=sampler, num_workers=2, collate_fn=EgoClipCollate(tok))
    return [next(iter(loader))]


def test_dataloader_with_workers_is_reproducible(small_world):
    ds = EgoClipDataset(
        small_world["egoclip"], small_world["videos"], 4, train_transform(32), chunk_seconds=10,
        scene_negatives=True, num_verbs=4, num_nouns=5,
    )  # fmt: skip
    tok = Tokenizer.from_dir(small_world["tokenizer"])
    a, b = _epoch(ds, tok, 1)[0], _epoch(ds, tok, 1)[0]
    assert a["video"].shape == (8, 4, 3, 32, 32) and a["input_ids"].shape == (8, 15)
    assert a["verb"].shape == (8, 4) and a["noun"].shape == (8, 5) and a["mlm_labels"].shape == (8, 15)
    assert a["video_uid"][:4] == a["video_uid"][4:]  # negatives follow their samples' order
    for key in ("video", "input_ids", "mlm_input_ids", "clip_idx"):
        assert torch.equal(a[key], b[key])
    c = _epoch(ds, tok, 2)[0]
    assert not torch.equal(a["video"], c["video"])


@pytest.mark.slow
def test_large_csv_loads_fast(tmp_path):
    """500 k rows (1/8 of EgoClip) in a few seconds; the benchmark times the full 3.85 M."""
    import time

    rng = np.random.default_rng(0)
    t = rng.uniform(0, 600, 500_000)
    with open(tmp_path / "big.csv", "w") as f:
        f.write(EGOCLIP_HEADER)
        f.writelines(egoclip_line(i, f"vid-{i // 400}", t[i], t[i] - 0.4, t[i] + 0.4) for i in range(len(t)))
    start = time.perf_counter()
    table = load_egoclip(tmp_path / "big.csv")
    seconds = time.perf_counter() - start
    assert len(table) == 500_000 and len(table.video_uids) == 1250
    assert table.row(499_999)["narration_time"] == pytest.approx(t[-1])
    assert seconds < 15, seconds


def test_suspect_times_are_counted_kept_and_logged_once(tmp_path, caplog):
    path = write_csv(
        tmp_path / "e.csv",
        egoclip_line(0),
        egoclip_line(1, t=5.0, start=6.0, end=4.5),  # end < start
        egoclip_line(2, t=0.1, start=-0.3, end=0.5),  # negative start (as in the released EgoClip)
        egoclip_line(3),
        egoclip_line(4, t=1.0, start=-2.0, end=-3.0),  # both
    )
    for policy in ("raise", "skip"):
        caplog.clear()
        with caplog.at_level("WARNING", logger="egovlp.data.egoclip_table"):
            table = load_egoclip(path, bad_rows=policy)
        assert len(table) == 5 and table.num_suspect_rows == 3 and table.num_bad_rows == 0
        assert table.clip_start.tolist() == [2.967651, 6.0, -0.3, 2.967651, -2.0]
        assert table.clip_end.tolist() == [3.721266, 6.0, 0.5, 3.721266, -2.0]  # end clamped to start
        warnings = [r.getMessage() for r in caplog.records if "clip_end < clip_start" in r.getMessage()]
        assert len(warnings) == 1, warnings
        assert "e.csv: 3 rows" in warnings[0]
        assert "e.csv:3: clip_end 4.5 < clip_start 6" in warnings[0] and "e.csv:4: clip_start -0.3 < 0" in warnings[0]
        assert "e.csv:6: clip_end -3 < clip_start -2" in warnings[0]
    clean = load_egoclip(write_csv(tmp_path / "ok.csv", egoclip_line(0), egoclip_line(1)))
    assert clean.num_suspect_rows == 0


def test_suspect_rows_across_blocks_name_the_first_few(tmp_path, caplog):
    rows = [egoclip_line(i, t=1.0, start=2.0, end=1.0) if i % 3 == 0 else egoclip_line(i) for i in range(30)]
    with caplog.at_level("WARNING", logger="egovlp.data.egoclip_table"):
        table = load_egoclip(write_csv(tmp_path / "e.csv", *rows), block_bytes=300)
    assert table.num_suspect_rows == 10 and np.all(table.clip_end >= table.clip_start)
    (message,) = [r.getMessage() for r in caplog.records if "rows with clip_end" in r.getMessage()]
    assert [int(m) for m in re.findall(r"e\.csv:(\d+):", message)] == [2, 5, 8, 11, 14]
    assert message.endswith("; ...")


def _extra(line: str) -> str:
    return line.rstrip("\n") + "\tEXTRA\n"


@pytest.mark.parametrize("block_bytes", [1, 300, 1 << 20])
@pytest.mark.parametrize("bad", [0, 3, 9])
def test_extra_column_blames_its_own_line(tmp_path, bad, block_bytes):
    rows = [egoclip_line(i) for i in range(10)]
    rows[bad] = _extra(rows[bad])
    path = write_csv(tmp_path / "e.csv", *rows)
    with pytest.raises(DataError, match=rf"e\.csv:{bad + 2}: expected 11 tab-separated columns, found 12"):
        load_egoclip(path, block_bytes=block_bytes)
    table = load_egoclip(path, bad_rows="skip", block_bytes=block_bytes)
    assert table.num_bad_rows == 1 and table.line.tolist() == [i + 2 for i in range(10) if i != bad]
    assert table.clip_idx.tolist() == [i for i in range(10) if i != bad]


def test_extra_and_missing_columns_do_not_shift_the_rows_between(tmp_path):
    """One row with a field too many and a later one with a field too few: the tab count of the block is right,
    but each bad row must be named by its own line and the rows between them must keep their own fields."""
    rows = [egoclip_line(i) for i in range(6)]
    rows[1] = rows[1].replace("\t#C C picks", "\t#C C\tpicks")  # an unquoted tab in the text: 12 fields
    rows[4] = rows[4].replace("\t[93]", "")  # tag_verb missing: 10 fields
    path = write_csv(tmp_path / "e.csv", *rows)
    with pytest.raises(DataError, match=r"e\.csv:3: expected 11 tab-separated columns, found 12"):
        load_egoclip(path)
    table = load_egoclip(path, bad_rows="skip")
    assert table.num_bad_rows == 2 and table.line.tolist() == [2, 4, 5, 7]
    assert table.clip_idx.tolist() == [0, 2, 3, 5]
    assert all(table.text(i) == "#C C picks a bag of clothes from the floor" for i in range(4))


def test_byte_order_mark_before_the_header(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + (EGOCLIP_HEADER + egoclip_line(0) + egoclip_line(1)).encode("utf-8"))
    table = load_egoclip(path)
    assert len(table) == 2 and table.clip_idx.tolist() == [0, 1] and table.line.tolist() == [2, 3]
    # Only a leading mark is dropped: one inside a text field stays part of the text.
    inner = write_csv(tmp_path / "inner.csv", egoclip_line(0, text="\ufeffC holds"))
    assert load_egoclip(inner).text(0) == "\ufeffC holds"
