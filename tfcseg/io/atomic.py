"""Atomic file writing: a crash never leaves a half-written file under the final name.

Temporaries live beside their final name and are named after it and after the process that
writes them: `.<name>.<host>-<pid>-<random>.tmp<suffix>`. A process killed outright
(SIGKILL, a power cut) cannot remove its temporaries; `sweep_stale` removes those of dead
processes of this machine later, and never anything else (not a live run's, not another
machine's on a shared disk, not a file of the user's).
"""

from __future__ import annotations

import contextlib
import errno as errno_codes
import hashlib
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import WriteError

# The process's umask, read once at import (os.umask can only be read by setting it, which
# is not thread-safe later on).
UMASK = os.umask(0)
os.umask(UMASK)

# This machine, in temporaries' names (a shared disk may hold another machine's live ones).
HOST_TAG = hashlib.blake2s(socket.gethostname().encode(), digest_size=3).hexdigest()
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[a-z0-9_]+\.tmp(\.[^./]*)?$")

# Folders this process made temporaries in (absolute paths; see remove_own_temporaries).
_TEMP_FOLDERS: set[Path] = set()

# What ran out or what is in the way, in words, for the OS errors a write meets.
OS_ERROR_REASONS = {
    errno_codes.ENOSPC: "the disk is full (no space left on device)",
    errno_codes.EDQUOT: "the disk quota is used up",
    errno_codes.EROFS: "the file system is read-only",
    errno_codes.EACCES: "permission denied",
    errno_codes.EPERM: "permission denied",
    errno_codes.EFBIG: "the file is too large for the file system",
    errno_codes.EIO: "input/output error (a failing disk or a lost network share?)",
    errno_codes.EMFILE: "too many open files",
    errno_codes.ENOTDIR: "a file is in the way of a folder",
    errno_codes.EEXIST: "a file is in the way",
    errno_codes.EISDIR: "a folder is in the way",
}


def describe_os_error(exc: OSError) -> str:
    """What went wrong with a write, in words: "the disk is full (no space left on device)"."""
    return OS_ERROR_REASONS.get(exc.errno, exc.strerror or str(exc))


def write_error(path: str | Path, exc: OSError, what: str = "could not write") -> WriteError:
    """A one-line `WriteError` for `path` from an OSError."""
    reason = describe_os_error(exc)
    return WriteError(f"{path}: {what} ({reason})", reason=reason, errno=exc.errno)


def temp_prefix(name: str) -> str:
    """The start of this process's temporaries for final name `name` (see the module doc)."""
    return f".{name}.{HOST_TAG}-{os.getpid()}-"


def make_temp(final: str | Path, suffix: str | None = None, folder: bool = False) -> Path:
    """An empty temporary file (or folder) beside `final`, named as `sweep_stale` knows.

    Files get the usual mode (0666 less the umask), folders 0777 less the umask: mkstemp and
    mkdtemp make them owner-only. `suffix` defaults to the final name's suffix."""
    final = Path(final)
    end = ".tmp" + (final.suffix if suffix is None else suffix)
    _TEMP_FOLDERS.add(final.parent.absolute())  # before creating: see remove_own_temporaries
    if folder:
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(final.name), suffix=end, dir=final.parent))
        os.chmod(tmp, 0o777 & ~UMASK)
        return tmp
    fd, name = tempfile.mkstemp(prefix=temp_prefix(final.name), suffix=end, dir=final.parent)
    os.close(fd)
    os.chmod(name, 0o666 & ~UMASK)
    return Path(name)


def remove_own_temporaries() -> list[Path]:
    """Remove every temporary this process made and still holds (the paths removed). For the
    exit after Ctrl-C or SIGTERM: a signal that lands between a temporary's creation and the
    `try` that would remove it (inside `tempfile.mkstemp`, say) leaves it behind otherwise.
    Only names of this machine and process, in folders where `make_temp` ran; never raises."""
    own = str(os.getpid())
    return [path for folder in list(_TEMP_FOLDERS)
            for path in _remove_temporaries(folder, lambda m: m["host"] == HOST_TAG and m["pid"] == own)]


def is_temporary(name: str) -> bool:
    """Whether `name` is a temporary's name (any writer's, see the module doc)."""
    return _TEMP_RE.match(name) is not None


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this machine still runs (a zombie counts as gone). Where this
    cannot be told (Windows), True: nothing of a possibly live process is ever removed."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # it exists but is another user's
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def sweep_stale(folder: str | Path, name: str | None = None) -> list[Path]:
    """Remove the temporaries that dead processes of this machine left in `folder` (only
    those of final name `name`, when given); the paths removed. Never raises."""
    return _remove_temporaries(folder, lambda m: m["host"] == HOST_TAG and (name is None or m["name"] == name)
                               and not pid_alive(int(m["pid"])))


def _remove_temporaries(folder: str | Path, chosen) -> list[Path]:
    """Remove the temporaries in `folder` whose name `chosen(match)` accepts (files, or
    folders with what is in them); the paths removed. Never raises."""
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for path in entries:
        m = _TEMP_RE.match(path.name)
        if m is None or not chosen(m):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(final: str | Path, suffix: str | None = None, durable: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success rename it onto `final`.

    On an exception the temporary file is removed and `final` is left untouched; an OSError
    (no space, no permission, a folder in the way) becomes a one-line `WriteError` that
    says what ran out or what is in the way. `suffix` defaults to the final name's suffix
    (some writers pick a format from it). `durable`: flush the file to the disk before the
    rename (checkpoints: a power cut then leaves the old file or the new one).
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp_path = make_temp(final, suffix)
    except OSError as exc:
        raise write_error(final, exc, "cannot write here") from None
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~UMASK)  # writers may have replaced the file
        if durable:
            _fsync_file(tmp_path)
        os.replace(tmp_path, final)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise write_error(final, exc) from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(final: str | Path, data: bytes, durable: bool = False) -> None:
    with atomic_path(final, durable=durable) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(final: str | Path, text: str, durable: bool = False) -> None:
    atomic_write_bytes(final, text.encode("utf-8"), durable=durable)


class AtomicFolder:
    """A folder written under a temporary name beside `final` and swapped in whole by
    `commit()`: readers see the old folder or the complete new one, never a mix of the two
    (a rerun that writes fewer files leaves none of the old ones). `abort()` removes the
    temporary; the old folder is untouched until `commit()`. A killed run's temporary folder
    is swept by the next one.

    The swap is two renames (old -> a temporary name, new -> final); a crash between them
    leaves the old folder under that temporary name, swept as stale by the next run."""

    def __init__(self, final: str | Path) -> None:
        self.final = Path(final)
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            sweep_stale(self.final.parent, self.final.name)
            self.tmp = make_temp(self.final, suffix="", folder=True)
        except OSError as exc:
            raise write_error(self.final.parent, exc, "cannot write there") from None

    def commit(self) -> Path:
        old = self.final.with_name(f"{temp_prefix(self.final.name)}old.tmp")
        try:
            if self.final.exists():
                os.replace(self.final, old)
            os.replace(self.tmp, self.final)
        except OSError as exc:
            raise write_error(self.final, exc, "could not replace it") from None
        fsync_folder(self.final.parent)
        shutil.rmtree(old, ignore_errors=True)
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
