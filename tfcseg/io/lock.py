"""One writer per folder: an exclusive lock file that names its holder.

`FolderLock(folder).acquire()` takes `<folder>/.tfcseg.lock` or raises a `FolderLockedError`
naming the process that holds it. The lock is a POSIX record lock (`fcntl.lockf`) on that
file: the kernel drops it when its process ends in any way (`kill -9` included), and child
processes (DataLoader workers) do not inherit it, so a run that was killed never blocks the
next one. The file itself says who holds it ("PID host"); one left behind by a killed run
is taken over, and `acquire` returns that run's PID so the caller can say so.

Where `fcntl` is missing (Windows) the file is created exclusively instead, and one left
behind must be deleted by hand (the message says so).
"""

from __future__ import annotations

import os
import socket
import threading
import weakref
from pathlib import Path

from ..errors import TfcsegError
from .atomic import write_error

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".tfcseg.lock"

# Locks this process holds, by path: POSIX locks never conflict within one process (and
# closing any descriptor of the file drops them), so a second holder here is refused here.
_HELD: "weakref.WeakValueDictionary[str, FolderLock]" = weakref.WeakValueDictionary()
_HELD_GUARD = threading.RLock()  # re-entrant: __del__ may run inside


class FolderLockedError(TfcsegError):
    """Another live process holds the folder's lock; `pid` is its process id (None if unknown)."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


def _holder(text: str) -> tuple[int | None, str]:
    parts = text.split()
    try:
        return int(parts[0]), (parts[1] if len(parts) > 1 else "")
    except (IndexError, ValueError):
        return None, ""


class FolderLock:
    """The lock of one folder (created if missing). `what` names the holder in messages
    ("training run"); `hint` ends the refusal ("choose another --out")."""

    def __init__(self, folder: str | Path, what: str = "run", hint: str = "") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what, self.hint = what, hint
        self._fd: int | None = None
        self._pid = os.getpid()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _refuse(self, pid: int | None, host: str) -> FolderLockedError:
        who = f"PID {pid}" if pid is not None else "a process that is starting"
        if host and host != socket.gethostname():
            who += f" on {host}"
        hint = f"; {self.hint}" if self.hint else ""
        return FolderLockedError(f"{self.folder}: another {self.what} ({who}) is writing to this folder{hint}", pid)

    def acquire(self) -> int | None:
        """Take the lock; the PID of a dead holder whose lock file was taken over, else None.
        Raises `FolderLockedError` when a live process holds it, `WriteError` when the
        folder cannot be written."""
        key = str(self.path.resolve())
        with _HELD_GUARD:
            other = _HELD.get(key)
            if other is not None and other is not self and other.held:
                raise self._refuse(os.getpid(), socket.gethostname())
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                previous = self._lock() if fcntl is not None else self._create()
            except OSError as exc:
                raise write_error(self.path, exc, "cannot lock the folder") from None
            _HELD[key] = self
        self._key = key
        pid, _ = _holder(previous)
        return pid if pid is not None and pid != os.getpid() else None

    def _lock(self) -> str:
        import time

        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                # Held: read who holds it (the holder writes its PID right after locking).
                text = ""
                for _ in range(20):
                    text = os.pread(fd, 200, 0).decode("utf-8", "replace")
                    if text.strip():
                        break
                    time.sleep(0.01)
                os.close(fd)
                raise self._refuse(*_holder(text)) from None
            # A holder that was releasing may have removed the file we locked: lock the one
            # that is there now.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            previous = os.pread(fd, 200, 0).decode("utf-8", "replace")
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            self._fd = fd
            return previous

    def _create(self) -> str:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            pid, host = _holder(self.path.read_text(errors="replace"))
            err = self._refuse(pid, host)
            raise FolderLockedError(f"{err} (if that process is gone, delete {self.path})", pid) from None
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd
        return ""

    def release(self) -> None:
        """Drop the lock and remove the lock file (only in the process that took it)."""
        if self._fd is None or os.getpid() != self._pid:
            return
        with _HELD_GUARD:
            try:
                self.path.unlink(missing_ok=True)
            except OSError:
                pass
            try:
                os.close(self._fd)
            except OSError:
                pass
            self._fd = None
            if _HELD.get(self._key) is self:
                del _HELD[self._key]

    def __enter__(self) -> "FolderLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
