"""The `tfcseg` command line: a thin Typer layer over the core package.

Each subcommand lives in its own module here and registers itself on `app`; all logic is
in the core package. A `TfcsegError` (a user mistake) prints one line and exits 2.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup
from rich.markup import escape

from .. import __version__
from ..errors import Terminated, TfcsegError, as_flags
from ..io.atomic import remove_own_temporaries

class _FlagsTakeNoValue:
    """Help without a `<bool>` value hint on flags (`--overwrite`, `--progress/--no-progress`,
    `--help`): they take no value, and saying one makes Typer refuse it."""

    def get_params(self, ctx):
        params = super().get_params(ctx)
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class _Command(_FlagsTakeNoValue, TyperCommand):
    pass


class _Group(_FlagsTakeNoValue, TyperGroup):
    pass


app = typer.Typer(
    name="tfcseg",
    cls=_Group,
    help="Efficient and stable video semantic segmentation (TFC on SegFormer).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err_console = Console(stderr=True)


def results_console(json_dest: str | Path | None) -> Console:
    """Where a command prints its tables: stdout, or stderr when `--json -` puts the JSON
    there (so that stdout is the JSON alone)."""
    return err_console if json_dest is not None and str(json_dest) == "-" else Console()


def write_json(dest: str | Path, data: Any) -> None:
    """`--json FILE`: the data as indented JSON, written atomically; `-` prints it to stdout."""
    from ..io.atomic import atomic_write_text

    text = json.dumps(data, indent=2) + "\n"
    if str(dest) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write_text(Path(dest).expanduser(), text)

# Subcommand modules, in the order `--help` lists them.
COMMANDS = ["segment", "eval", "train", "benchmark", "models", "convert"]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tfcseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Efficient and stable video semantic segmentation (TFC on SegFormer)."""
    _show_library_notices()


def _show_library_notices() -> None:
    """The package's INFO log lines (e.g. "building the CPU kernels, once, about 15 s") go to
    stderr, so that a one-off pause is explained; library users keep Python's defaults."""
    log = logging.getLogger("tfcseg")
    if not any(getattr(h, "_tfcseg_cli", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._tfcseg_cli = True  # type: ignore[attr-defined]
        log.addHandler(handler)
        log.setLevel(logging.INFO)


WARNINGS_SHOWN = 20  # library warnings printed in full; the rest are counted


class WarningPrinter:
    """Prints library warnings (bad data files, ...) as one clean `warning:` line each while
    the run goes on (the first `WARNINGS_SHOWN` different ones), and counts the rest."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.hidden = 0

    def __call__(self, message, category, filename, lineno, file=None, line=None) -> None:
        text = str(message)
        if text in self.seen:
            return
        self.seen.add(text)
        if len(self.seen) > WARNINGS_SHOWN:
            self.hidden += 1
            return
        err_console.print(f"[bold yellow]warning:[/] {text}", highlight=False, soft_wrap=True)


@contextlib.contextmanager
def warnings_as_lines(more: str = "") -> Iterator[WarningPrinter]:
    """Within: Python warnings print as `warning: <message>` lines (no source line); after:
    one line counting those not shown (`more` says where they are listed)."""
    printer = WarningPrinter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = printer
            yield printer
    finally:
        if printer.hidden:
            err_console.print(f"[bold yellow]warning:[/] {printer.hidden} more warning(s) not shown"
                              + (f" ({more})" if more else ""), highlight=False)


MSDA_HELP = ("Sparse MSDA: model (the model's config.json), off, on, or a similarity threshold "
             "(on for the points below it, e.g. 0.7; fewer points and less cost when lower).")


MSDA_GATE_HELP = ("A label change made by sparse MSDA stands only where the new class leads the "
                  "runner-up by this logit margin (0: every change; default: the model's config.json).")


POWER_HELP = ("p of TFC's interpolation weight clamp(similarity, 0, 1)^p, >= 1 (1: the paper's; "
              "default: the model's config.json).")


HYSTERESIS_HELP = ("Label hysteresis: a pixel keeps its previous label unless another class leads "
                   "it by this logit margin, times s^Q with --hysteresis-power Q (0: off, every frame on "
                   "its own; default: the model's config.json). Less flicker; too large lags moving objects.")


HYSTERESIS_POWER_HELP = ("Motion-aware hysteresis: the margin at a pixel is --hysteresis x s^Q, s the similarity "
                         "of the frame's features to the previous frame's there, so labels are held where the "
                         "picture stayed and follow the model where it changed (0: the same margin everywhere; "
                         "default: the model's config.json).")


def describe_hysteresis(margin: float | None, power: float | None = None) -> str:
    if not margin:
        return "off"
    text = f"a new label needs a lead of {margin:g} (logits)"
    return text + (f" x similarity to the previous frame ^ {power:g}" if power else "")


def describe_msda(threshold: float | None, gate: float | None, share: float | None) -> str:
    """The summary line of sparse MSDA: where it ran, its gate and the share it updated."""
    if threshold is None:
        return "off"
    text = f"points below similarity {threshold:g}"
    if gate:
        text += f", label changes kept at a margin >= {gate:g}"
    return text + ("" if share is None else f"; {share:.1%} of points (non-keyframes)")


def parse_msda(text: str) -> bool | float | None:
    """--msda: "model" (None: the config's setting), "off", "on" or a threshold in (0, 1]."""
    key = text.strip().lower()
    if key in ("model", "on", "off"):
        return None if key == "model" else key == "on"
    try:
        value = float(key)
    except ValueError:
        value = -1.0
    if not 0.0 < value <= 1.0:
        raise TfcsegError(f"--msda {text}: expected model, on, off or a similarity threshold in (0, 1]")
    return value


def parse_threads(text: str) -> int | str | None:
    """--threads: "auto", "fixed" (PyTorch's count throughout: None) or a count >= 1."""
    if text == "auto":
        return text
    if text == "fixed":
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise TfcsegError(f"--threads {text}: expected auto or a number of threads (1 or more)")
    return value


for _name in COMMANDS:
    importlib.import_module(f"{__name__}.{_name}")
for _info in app.registered_commands:
    if _info.cls in (None, TyperCommand):
        _info.cls = _Command


def _terminate(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tfcseg` console script. Exit status: 0 done, 2 a user mistake
    (one line), 130 Ctrl-C, 143 SIGTERM (after cleaning up: no temporaries left)."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except TfcsegError as exc:
        # (escaped: a message may hold brackets, e.g. pip install "tfcseg[onnx]")
        err_console.print(f"[bold red]error:[/] {escape(as_flags(str(exc), exc.options))}", highlight=False,
                          soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        remove_own_temporaries()
        err_console.print("[yellow]interrupted[/]")
        return 130
    except Terminated:
        remove_own_temporaries()
        err_console.print("[yellow]terminated[/] (SIGTERM)")
        return 128 + signal.SIGTERM
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def run() -> None:
    sys.exit(main())
