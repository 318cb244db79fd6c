"""User-facing errors.

A `TfcsegError` is a mistake the user can fix (a missing file, a bad checkpoint, a wrong
option). The CLI prints its message as one line and exits with status 2; it never shows a
traceback for these. Everything else is a bug and keeps its traceback. Also the checks of
option values shared by the library and the CLI (`check_margin`, `check_power`).
"""

from __future__ import annotations

import math
import numbers


class TfcsegError(Exception):
    """A problem with the user's input, named in one line (file and what is wrong).

    `options`: the library parameters the message names (`keyframe_interval`, or
    `overwrite=True` for a switch). Library users read them as written; the command line
    shows them as its flags (`--keyframe-interval`, `--overwrite`): see `as_flags`."""

    def __init__(self, message: str, *, options: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.options = tuple(options)


def as_flags(message: str, options: tuple[str, ...]) -> str:
    """`message` with each named parameter written as the CLI flag: `keyframe_interval` ->
    `--keyframe-interval`, `overwrite=True` -> `--overwrite`."""
    import re

    for name in options:
        flag = "--" + name.replace("_", "-")
        message = re.sub(rf"(?<![-\w]){re.escape(name)}(=True)?(?!\w)", flag, message)
    return message


class Terminated(BaseException):
    """SIGTERM arrived: raised in the main thread (by the CLI's handler) so that every
    `finally` and cleanup runs on the way out, as for Ctrl-C. Not an `Exception`: nothing
    catches it by accident."""


class WriteError(TfcsegError):
    """A file or folder could not be written: `reason` says why in words ("the disk is full
    (no space left on device)", "the file system is read-only"), `errno` is the OS's code."""

    def __init__(self, message: str, *, reason: str = "", errno: int | None = None,
                 options: tuple[str, ...] = ()) -> None:
        super().__init__(message, options=options)
        self.reason = reason
        self.errno = errno


class CheckpointError(TfcsegError):
    """A checkpoint that cannot be loaded: missing/unexpected keys, shapes, format."""


class OptionError(TfcsegError, ValueError):
    """An option value out of its range (`keyframe_interval=0`): a `TfcsegError` for the command
    line, and a `ValueError` like the other argument checks of the library's classes."""


def is_margin(value) -> bool:
    """Whether `value` is a usable logit margin: a real number (not a bool), finite, >= 0."""
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


def is_power(value) -> bool:
    """Whether `value` is a usable power of the soft interpolation weight
    (`TFCOptions.interpolation_power`): a real number (not a bool), finite, >= 1."""
    return is_margin(value) and value >= 1


def _checked(value, name: str, ok, expected: str) -> float | None:
    """None (use the default), or `value` as a float where `ok(value)`; else an `OptionError`
    naming the option `name` (the CLI shows it as its flag) and what was `expected`."""
    if value is None:
        return None
    if not ok(value):
        raise OptionError(f"{name} {value}: expected {expected}", options=(name,))
    return float(value)


def check_power(value, name: str = "interpolation_power") -> float | None:
    """None (use the default), or `value` as the soft interpolation weight's power
    (`is_power`); an `OptionError` otherwise."""
    return _checked(value, name, is_power, "a power >= 1 (1: the paper's weight)")


def check_margin(value, name: str) -> float | None:
    """None (use the default), or `value` as a logit margin; an `OptionError` naming the option
    `name` (`hysteresis`, `msda_gate`: the CLI shows the flag) for anything else."""
    return _checked(value, name, is_margin, "a logit margin >= 0 (0: off)")


def check_hysteresis_power(value) -> float | None:
    """None (use the default), or `value` as the power of motion-aware label hysteresis
    (`postprocess.LabelHysteresis`: a real number >= 0, 0 = the same margin everywhere); an
    `OptionError` naming `hysteresis_power` otherwise."""
    return _checked(value, "hysteresis_power", is_margin, "a power >= 0 (0: the same margin everywhere)")
