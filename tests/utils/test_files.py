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


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_atomic_write_honours_the_umask(tmp_path: Path, umask: int) -> None:
    import os

    old = os.umask(umask)
    try:
        target = atomic_write(tmp_path / "out.txt", lambda tmp: tmp.write_text("x"))
    finally:
        os.umask(old)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # 0644 / 0640, not mkstemp's 0600
