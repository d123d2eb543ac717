from pathlib import Path

import pytest

from egovlp.utils.files import atomic_write


def test_atomic_write_renames_into_place(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.txt"
    assert atomic_write(target, lambda tmp: tmp.write_text("new")) == target
    assert target.read_text() == "new"
    assert atomic_write(target, lambda tmp: tmp.write_text("newer")).read_text() == "newer"
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.txt"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")

    def torn(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, torn)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]
