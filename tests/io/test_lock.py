"""One writer per folder: the lock names its holder, dies with it, and is not inherited."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from tfcseg.io.lock import LOCK_NAME, FolderLock, FolderLockedError

pytestmark = pytest.mark.skipif(os.name == "nt", reason="POSIX record locks")

HOLDER = textwrap.dedent("""
    import os, sys, time
    from tfcseg.io.lock import FolderLock
    lock = FolderLock(sys.argv[1], "training run")
    lock.acquire()
    child = os.fork()  # like a DataLoader worker: must not inherit the lock
    if child == 0:
        time.sleep(60)
        os._exit(0)
    print(child, flush=True)
    time.sleep(60)
""")


def test_a_held_folder_is_refused_and_a_killed_holders_lock_taken_over(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "run")], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    child = None
    try:
        child = int(holder.stdout.readline())
        with pytest.raises(FolderLockedError, match=rf"run: another training run \(PID {holder.pid}\) is "
                                                    "writing to this folder") as info:
            FolderLock(tmp_path / "run", "training run").acquire()
        assert info.value.pid == holder.pid
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        os.kill(child, 0)  # the forked child still runs, and holds nothing
        lock = FolderLock(tmp_path / "run")
        assert lock.acquire() == holder.pid  # the dead holder's file, taken over
        assert (tmp_path / "run" / LOCK_NAME).read_text().split()[0] == str(os.getpid())
        with pytest.raises(FolderLockedError, match=f"PID {os.getpid()}"):  # twice in one process
            FolderLock(tmp_path / "run").acquire()
        lock.release()
        assert not (tmp_path / "run" / LOCK_NAME).exists()
        with FolderLock(tmp_path / "run") as again:  # free again, and no stale holder to report
            assert again.held
        assert os.listdir(tmp_path / "run") == []
    finally:
        holder.kill()
        holder.wait()
        if child is not None:
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_forgotten_lock_is_released_when_collected(tmp_path):
    lock = FolderLock(tmp_path)
    lock.acquire()
    del lock
    with FolderLock(tmp_path) as lock:
        assert lock.held
