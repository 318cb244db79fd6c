"""Atomic writes: complete files only, the usual permissions, one-line errors."""

from __future__ import annotations

import os

import pytest

from tfcseg.errors import TfcsegError
from tfcseg.io.atomic import UMASK, atomic_path, atomic_write_text


def test_atomic_write_has_the_usual_mode(tmp_path):
    atomic_write_text(tmp_path / "a.json", "{}")
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~UMASK
    assert os.listdir(tmp_path) == ["a.json"]


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    atomic_write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert (tmp_path / "a.txt").read_text() == "old"
    assert os.listdir(tmp_path) == ["a.txt"]


def test_unwritable_place_is_a_clear_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(TfcsegError, match="cannot write here"):
        atomic_write_text(tmp_path / "file" / "out.json", "{}")  # a file where a folder should be


def test_atomic_folder_swaps_in_whole_and_cleans_up(tmp_path):
    from tfcseg.io.atomic import AtomicFolder

    final = tmp_path / "masks"
    final.mkdir()
    for name in ("0.png", "1.png", "2.png"):
        (final / name).write_text("old")
    (tmp_path / ".masks.4194999-abcd.tmp").mkdir()  # a killed run's (no such pid)
    folder = AtomicFolder(final)
    assert not (tmp_path / ".masks.4194999-abcd.tmp").exists()
    (folder.tmp / "0.png").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["0.png", "1.png", "2.png"]  # untouched so far
    folder.commit()
    assert [p.name for p in final.iterdir()] == ["0.png"] and (final / "0.png").read_text() == "new"
    assert os.listdir(tmp_path) == ["masks"]
    failed = AtomicFolder(final)
    (failed.tmp / "9.png").write_text("half")
    failed.abort()
    assert os.listdir(tmp_path) == ["masks"] and [p.name for p in final.iterdir()] == ["0.png"]
