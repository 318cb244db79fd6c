"""The `tfcseg` command line: a thin Typer layer over the core package.

Each subcommand lives in its own module here and registers itself on `app`; all logic is
in the core package. A `TfcsegError` (a user mistake) prints one line and exits 2.
"""

from __future__ import annotations

import importlib
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from .. import __version__
from ..errors import TfcsegError, as_flags

app = typer.Typer(
    name="tfcseg",
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


for _name in COMMANDS:
    importlib.import_module(f"{__name__}.{_name}")


class Terminated(BaseException):
    """SIGTERM, raised where SIGINT raises KeyboardInterrupt, so that the same cleanup runs
    (no temporary file is left; a live source's output is finished). Not an Exception, so
    nothing on the way takes it for an error to report and carry on."""


def _on_sigterm(signum, frame) -> None:
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tfcseg` console script."""
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        app(args=argv, standalone_mode=True)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except TfcsegError as exc:
        err_console.print(f"[bold red]error:[/] {as_flags(str(exc), exc.options)}", highlight=False,
                          soft_wrap=True)
        return 2
    except Terminated:
        err_console.print("[yellow]terminated[/]")
        return 143
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]")
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def run() -> None:
    sys.exit(main())
