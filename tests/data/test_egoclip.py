"""EgoClip: CSV parsing of every column, malformed rows, scene-aware negatives, skip policy, DataLoader workers."""

from __future__ import annotations

import pickle

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
