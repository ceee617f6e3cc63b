"""Atomic writes: the destination is the old file or the complete new one, with the usual permissions."""
from __future__ import annotations

import os
import stat

import pytest

from litvit.fileio import atomic_path, write_text_atomic


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_a_written_file_gets_the_permissions_open_would_give(tmp_path, umask_022):
    path = write_text_atomic(tmp_path / "sub" / "a.json", "{}\n")
    assert path.read_text() == "{}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]  # no temporary left


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "report.csv"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            assert tmp.parent == path.parent and tmp.name.startswith(".report.csv.")
            raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.csv"]


def test_a_directory_is_renamed_into_place_complete(tmp_path, umask_022):
    root = tmp_path / "dataset"
    with atomic_path(root, directory=True) as tmp:
        (tmp / "a.txt").write_text("a")
        assert not root.exists()
    assert (root / "a.txt").read_text() == "a"
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    assert [p.name for p in tmp_path.iterdir()] == ["dataset"]
