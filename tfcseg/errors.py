"""User-facing errors.

A `TfcsegError` is a mistake the user can fix (a missing file, a bad checkpoint, a wrong
option). The CLI prints its message as one line and exits with status 2; it never shows a
traceback for these. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class TfcsegError(Exception):
    """A problem with the user's input, named in one line (file and what is wrong)."""


class CheckpointError(TfcsegError):
    """A checkpoint that cannot be loaded: missing/unexpected keys, shapes, format."""
