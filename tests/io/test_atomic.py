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
