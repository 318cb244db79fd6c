"""`tfcseg convert`: foreign SegFormer checkpoints -> a tfcseg checkpoint folder."""

from __future__ import annotations

from pathlib import Path

import typer

from ..models.checkpoint import convert_checkpoint
from ..errors import TfcsegError
from . import app


@app.command()
def convert(
    src: str = typer.Argument(..., help="A transformers SegFormer folder (config.json + "
                              "model.safetensors or pytorch_model.bin), an NVlabs/mmseg .pth, "
                              "or a tfcseg checkpoint."),
    out: Path = typer.Option(..., "-o", "--out", help="Destination folder (config.json + model.safetensors)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing checkpoint at --out."),
) -> None:
    """Convert a SegFormer checkpoint into a tfcseg checkpoint folder (weights are never unpickled)."""
    if (out / "model.safetensors").exists() and not overwrite:
        raise TfcsegError(f"{out}: a checkpoint exists already (use --overwrite to replace it)")
    cfg = convert_checkpoint(src, out)
    typer.echo(f"wrote {out} (variant {cfg.variant}, {cfg.num_classes} classes)")
