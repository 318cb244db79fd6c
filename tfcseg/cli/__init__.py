"""The `tfcseg` command line: a thin Typer layer over the core package.

Each subcommand lives in its own module here and registers itself on `app`; all logic is
in the core package. A `TfcsegError` (a user mistake) prints one line and exits 2.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer
from rich.console import Console
from rich.markup import escape

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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tfcseg` console script."""
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
        err_console.print("[yellow]interrupted[/]")
        return 130
    return 0


def run() -> None:
    sys.exit(main())
