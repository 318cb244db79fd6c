"""Atomic file writing: a crash never leaves a half-written file under the final name."""

from __future__ import annotations

import contextlib
import os
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
            prefix=f".{final.name}.", suffix=".tmp" + (final.suffix if suffix is None else suffix),
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
