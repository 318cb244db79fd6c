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


def test_temporaries_name_their_writer_and_only_dead_writers_are_swept(tmp_path):
    import errno
    import subprocess
    import sys

    from tfcseg.io.atomic import HOST_TAG, describe_os_error, make_temp, sweep_stale

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".a.png.{HOST_TAG}-{dead_pid}-abc123_x.tmp.png"
    stale_dir = tmp_path / f".pub.{HOST_TAG}-{dead_pid}-k9k9k9k9.tmp"
    stale_dir.mkdir()
    (stale_dir / "model.safetensors").write_bytes(b"half")
    live = make_temp(tmp_path / "a.png")  # this process's own: alive
    other_host = tmp_path / f".a.png.{'0' * 6 if HOST_TAG != '0' * 6 else '1' * 6}-{dead_pid}-zz.tmp.png"
    user_files = [tmp_path / ".a.png.tmp", tmp_path / "a.png", tmp_path / ".hidden", tmp_path / "x.tmp.png"]
    for p in [stale, other_host, *user_files]:
        p.write_bytes(b"x")
    assert live.name.startswith(f".a.png.{HOST_TAG}-{os.getpid()}-") and live.name.endswith(".tmp.png")
    assert live.stat().st_mode & 0o777 == 0o666 & ~UMASK
    assert sorted(sweep_stale(tmp_path, "b.png")) == []  # another final name: left alone
    assert sorted(sweep_stale(tmp_path)) == sorted([stale, stale_dir])
    assert sorted(os.listdir(tmp_path)) == sorted(p.name for p in [live, other_host, *user_files])
    assert describe_os_error(OSError(errno.ENOSPC, "No space left on device")) == \
        "the disk is full (no space left on device)"


def test_write_errors_say_what_is_wrong(tmp_path):
    from tfcseg.errors import WriteError

    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError, match="cannot write here") as info:
        atomic_write_text(tmp_path / "file" / "out.json", "{}")
    assert "(a file is in the way" in str(info.value)
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(WriteError, match=r"dir.json: could not write \(a folder is in the way\)"):
        atomic_write_text(tmp_path / "dir.json", "{}")
    assert os.listdir(tmp_path / "dir.json") == [] and sorted(os.listdir(tmp_path)) == ["dir.json", "file"]


def test_atomic_folder_swaps_in_whole_and_cleans_up(tmp_path):
    import subprocess
    import sys

    from tfcseg.io.atomic import HOST_TAG, AtomicFolder

    final = tmp_path / "masks"
    final.mkdir()
    for name in ("0.png", "1.png", "2.png"):
        (final / name).write_text("old")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stale = tmp_path / f".masks.{HOST_TAG}-{int(dead.stdout)}-abcd.tmp"  # a killed run's
    stale.mkdir()
    folder = AtomicFolder(final)
    assert not stale.exists()
    (folder.tmp / "0.png").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["0.png", "1.png", "2.png"]  # untouched so far
    folder.commit()
    assert [p.name for p in final.iterdir()] == ["0.png"] and (final / "0.png").read_text() == "new"
    assert os.listdir(tmp_path) == ["masks"]
    failed = AtomicFolder(final)
    (failed.tmp / "9.png").write_text("half")
    failed.abort()
    assert os.listdir(tmp_path) == ["masks"] and [p.name for p in final.iterdir()] == ["0.png"]


def test_own_temporaries_are_removed_on_exit_and_nothing_else(tmp_path):
    from tfcseg.io.atomic import make_temp, remove_own_temporaries, temp_prefix

    (tmp_path / "a.png").write_text("the user's")
    # a temporary whose creation was interrupted before any `try` knew its name
    mine = make_temp(tmp_path / "b.png")
    folder = make_temp(tmp_path / "run", folder=True)
    (folder / "inside").write_text("x")
    other = tmp_path / (temp_prefix("c.png").replace(f"-{os.getpid()}-", "-1-") + "abc.tmp.png")
    other.write_text("another process's")
    removed = remove_own_temporaries()
    assert set(removed) >= {mine, folder}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.png", other.name])
