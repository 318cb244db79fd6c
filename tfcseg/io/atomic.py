"""Atomic file and folder writing: a crash never leaves a half-written file (or a folder mixing
old and new files) under the final name."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import TfcsegError

# The process's umask, read once at import (os.umask can only be read by setting it, which
# is not thread-safe later on).
UMASK = os.umask(0)
os.umask(UMASK)


@contextlib.contextmanager
def atomic_path(final: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success rename it onto `final`.

    On an exception the temporary file is removed and `final` is left untouched; an OSError
    (no space, no permission, a folder in the way) becomes a one-line `TfcsegError`.
    `suffix` defaults to the final name's suffix (some writers pick a format from it).
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(
            prefix=temp_prefix(final), suffix=".tmp" + (final.suffix if suffix is None else suffix),
            dir=final.parent,
        )
        os.close(fd)
    except OSError as exc:
        raise TfcsegError(f"{final}: cannot write here ({exc.strerror or exc})") from None
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~UMASK)  # mkstemp makes it owner-only; keep the usual mode
        os.replace(tmp_path, final)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise TfcsegError(f"{final}: could not write ({exc.strerror or exc})") from None
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write_bytes(final: str | Path, data: bytes) -> None:
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(final: str | Path, text: str) -> None:
    atomic_write_bytes(final, text.encode("utf-8"))


# ---- temporaries beside a final name, and folders swapped in whole --------------------------------
#
# A temporary is named `.<final name>.<pid>-<random>.tmp<suffix>` beside its final name, so that a
# later run can tell a leftover of a dead process (removed) from the work of a live one (kept).


def temp_prefix(final: Path) -> str:
    return f".{final.name}.{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) is not a probe on Windows: assume the writer lives
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def remove_stale_temps(final: str | Path, suffix: str = "") -> list[Path]:
    """Remove the temporaries of `final` that a killed run left beside it (SIGKILL, power
    loss): `.<name>.<pid>-<random>.tmp<suffix>` whose process is gone, and the pid-less
    `.<name>.<random>.tmp<suffix>` of older versions. Returns what was removed."""
    final = Path(final)
    pattern = re.compile(rf"\.{re.escape(final.name)}\.(?:(\d+)-)?[A-Za-z0-9_]+\.(?:tmp|old){re.escape(suffix)}")
    removed = []
    try:
        entries = list(final.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is None or (m[1] is not None and _pid_alive(int(m[1]))):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


class AtomicFolder:
    """A folder written under a temporary name beside `final` and swapped in whole by
    `commit()`: readers see the old folder or the complete new one, never a mix of the two
    (a rerun that writes fewer files leaves none of the old ones). `abort()` removes the
    temporary; the old folder is untouched until `commit()`.

    The swap is two renames (old -> `.<name>.<pid>-old.old`, new -> final); a crash between
    them leaves the old folder under that name, removed as stale by the next run."""

    def __init__(self, final: str | Path) -> None:
        self.final = Path(final)
        try:
            self.final.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.final)
            self.tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(self.final), suffix=".tmp",
                                              dir=self.final.parent))
            os.chmod(self.tmp, 0o777 & ~UMASK)  # mkdtemp makes it owner-only
        except OSError as exc:
            raise TfcsegError(f"{self.final.parent}: cannot write there ({exc.strerror or exc})") from None

    def commit(self) -> Path:
        old = self.final.with_name(f"{temp_prefix(self.final)}old.old")
        try:
            if self.final.exists():
                os.replace(self.final, old)
            os.replace(self.tmp, self.final)
        except OSError as exc:
            raise TfcsegError(f"{self.final}: could not replace it ({exc.strerror or exc})") from None
        shutil.rmtree(old, ignore_errors=True)
        return self.final

    def abort(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
