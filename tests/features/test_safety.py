"""Extraction never writes outside ``--out`` nor reads outside the video root, and removes only its own temporaries."""

import copy
import json
import os
import time

import pytest

from egovlp.cli.main import main
from egovlp.errors import DataError
from egovlp.features import extract_features, read_manifest
from egovlp.features.ids import check_id

from .conftest import NLQ
from .helpers import make_config

SMALL = ["window.num_frames=4", "window.size=8", "window.stride=8", "progress=false", "num_workers=0"]


def _nlq_with(tmp_path, clip_uid=None, video_uid=None):
    data = copy.deepcopy(NLQ)
    if clip_uid is not None:
        data["videos"][0]["clips"][1]["clip_uid"] = clip_uid
    if video_uid is not None:
        data["videos"][0]["video_uid"] = video_uid
    path = tmp_path / "evil_nlq.json"
    path.write_text(json.dumps(data))
    return path


def _written(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.suffix in (".safetensors", ".npy"))


@pytest.mark.parametrize(
    ("bad", "problem"),
    [
        ("", "is empty"),
        ("..", r"'\.\.'"),
        ("../../x", r"'\.\.'"),
        ("a/../../b", r"'\.\.'"),
        ("./a", r"'\.'"),
        ("/abs/x", "absolute"),
        ("a//b", "empty path component"),
        ("a/", "empty path component"),
        ("a\\..\\b", "backslash"),
        ("a\x00b", "control character"),
        ("line\nbreak", "control character"),
        ("x" * 240, "too long"),
    ],
)
def test_unsafe_ids_are_refused(bad, problem):
    with pytest.raises(DataError, match=rf"^where: .*{problem}"):
        check_id(bad, "where")


@pytest.mark.parametrize("good", ["clip-1", "sub/b", "a.b", "0f3c-11ee_x", ".hidden/v", "ü-video"])
def test_safe_ids_pass(good):
    assert check_id(good, "where") == good


@pytest.mark.parametrize("clip_uid", ["../../escaped", "sub/../../../escaped"])
def test_clip_uid_leaving_the_output_folder_is_refused_before_any_work(fx, tiny, tmp_path, clip_uid):
    nlq = _nlq_with(tmp_path, clip_uid=clip_uid)
    out = tmp_path / "a" / "b" / "out"
    cfg = make_config(fx, out, f"source.annotations={nlq}", f"source.video_root={fx.videos}")
    with pytest.raises(DataError, match=r"evil_nlq\.json: videos\[0\]\.clips\[1\]: clip_uid .*'\.\.'"):
        extract_features(cfg, tiny)
    assert _written(tmp_path) == [] and not out.exists()  # nothing extracted, not even the manifest


def test_absolute_clip_uid_is_refused_before_any_work(fx, tiny, tmp_path):
    target = tmp_path / "elsewhere" / "abs"
    target.parent.mkdir()
    nlq = _nlq_with(tmp_path, clip_uid=str(target))
    out = tmp_path / "out"
    cfg = make_config(fx, out, f"source.annotations={nlq}", f"source.video_root={fx.videos}")
    with pytest.raises(DataError, match="absolute"):
        extract_features(cfg, tiny)
    assert _written(tmp_path) == [] and not out.exists()


def test_uid_list_entry_leaving_the_output_folder_names_its_line(fx, tiny, tmp_path):
    uids = tmp_path / "uids.txt"
    uids.write_text("vid1\n../../vid1\n")
    out = tmp_path / "deep" / "out"
    cfg = make_config(fx, out, f"source.chunked_root={fx.chunked}", f"source.uids={uids}", "source.chunk_seconds=4")
    with pytest.raises(DataError, match=r"uids\.txt:2: video uid '\.\./\.\./vid1'"):
        extract_features(cfg, tiny)
    assert _written(tmp_path) == [] and not out.exists()


def test_video_uid_cannot_point_outside_the_video_root(fx, tiny, tmp_path):
    """``../a`` under the root ``videos/sub`` would read ``videos/a.mp4``."""
    nlq = _nlq_with(tmp_path, video_uid="../a")
    cfg = make_config(fx, tmp_path / "out", f"source.annotations={nlq}", f"source.video_root={fx.videos / 'sub'}")
    with pytest.raises(DataError, match=r"videos\[0\]: video_uid '\.\./a'"):
        extract_features(cfg, tiny)
    assert _written(tmp_path) == []


def test_cli_refuses_an_escaping_clip_uid_in_one_line(fx, tmp_path, capsys):
    """Before any work: the ids are checked before the weights are even opened (here they do not exist)."""
    nlq = _nlq_with(tmp_path, clip_uid="../../x")
    out = tmp_path / "a" / "b" / "out"
    argv = [
        "extract", "--checkpoint", str(tmp_path / "missing.safetensors"), "--annotations", str(nlq),
        "--video-root", str(fx.videos),
        "--out", str(out), *SMALL,
    ]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "egovlp extract: error:" in err and "clip_uid '../../x'" in err and "Traceback" not in err
    assert _written(tmp_path) == [] and not out.exists()


def test_only_own_temporaries_are_removed(fx, tiny, tmp_path):
    """The end of a run removes stale temporaries of its own files, not every ``.*.tmp`` under ``--out``."""
    out = tmp_path / "out"
    cfg = make_config(fx, out)
    extract_features(cfg, tiny)
    (out / "a.safetensors").unlink()
    old = time.time() - 3600
    stale = [out / ".a.safetensors.k1ll3d00.tmp", out / "sub" / ".b.safetensors.k1ll3d00.tmp"]
    stale.append(out / ".manifest.json.k1ll3d00.tmp")
    unrelated = [
        out / ".notes.txt.abcdefgh.tmp",  # not a file of this run
        out / ".scratch.tmp",  # not this tool's pattern
        out / "other" / ".a.safetensors.abcdefgh.tmp",  # a folder no item of this run writes to
        out / "other" / "deeper" / ".cache.tmp",
    ]
    for path in stale + unrelated:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x00" * 10)
        os.utime(path, (old, old))
    concurrent = out / ".a.safetensors.n0wn0w00.tmp"  # made after the run started (another writer): kept
    concurrent.write_bytes(b"\x00")
    future = time.time() + 3600
    os.utime(concurrent, (future, future))
    result = extract_features(cfg, tiny)
    assert result.extracted == ["a"] and read_manifest(out)["complete"] is True
    assert [p.name for p in stale if p.exists()] == []
    assert [p for p in unrelated if not p.exists()] == []
    assert concurrent.exists()
