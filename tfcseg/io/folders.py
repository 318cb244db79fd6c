"""Where a command may write a folder: never over its own input, nor the folder it runs in;
and how a finished folder lands without touching what else lies there."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import TfcsegError


def check_destination(out: str | Path, source: str | Path | None = None) -> None:
    """Refuse (one-line `TfcsegError`) an output folder that would mix with the input or
    with the user's other files: the current folder or one holding it; for a checkpoint
    folder `source`, that folder, one inside it or one around it; for a checkpoint file, the
    folder holding it or one around that."""
    dest = Path(out).expanduser().resolve()
    cwd = Path.cwd().resolve()
    if dest == cwd or dest in cwd.parents:
        raise TfcsegError(f"{out}: is the current folder or holds it; write into a new folder of its own")
    if source is None:
        return
    src = Path(source).expanduser().resolve()
    if src.is_dir():
        if dest == src:
            raise TfcsegError(f"{out}: is the checkpoint's own folder; write into a new folder of its own")
        if src in dest.parents:
            raise TfcsegError(f"{out}: is inside the checkpoint's folder {source}; write into a folder "
                              "outside it")
    elif dest == src.parent or dest == src:
        raise TfcsegError(f"{out}: holds the checkpoint {source}; write into a new folder of its own")
    if dest in src.parents:
        raise TfcsegError(f"{out}: holds the checkpoint {source}; write into a new folder of its own")


def check_export_folder(out: Path, overwrite: bool) -> None:
    """An export destination: not the current folder (nor one holding it), a folder and not a
    file, and empty unless `overwrite` (which replaces only the exported files there)."""
    check_destination(out)
    if out.exists() and not out.is_dir():
        raise TfcsegError(f"{out}: is a file, not a folder; export into a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise TfcsegError(f"{out}: exists already and is not empty (use overwrite=True to replace "
                          "the exported files in it)", options=("overwrite",))


def move_into(tmp: str | Path, out: str | Path) -> list[str]:
    """Land the finished temporary folder `tmp` (beside `out`) at `out`: renamed into place
    when `out` does not exist, else its files moved in one by one (each replace atomic), so
    that every other file in `out` stays. Returns the names of the files landed."""
    tmp, out = Path(tmp), Path(out)
    names = sorted(p.name for p in tmp.iterdir())
    if not out.exists():
        os.replace(tmp, out)
    else:
        for name in names:
            os.replace(tmp / name, out / name)
    return names
