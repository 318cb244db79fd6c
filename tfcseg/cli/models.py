"""`tfcseg models` (the registry of named checkpoints) and `tfcseg export` (publish one)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from ..errors import TfcsegError
from ..hub.download import model_status
from ..hub.export import export_checkpoint, push_to_hub
from ..hub.refs import MODEL_SOURCE_HELP
from ..hub.resolve import model_entry_path
from ..io.atomic import atomic_write_text
from ..hub.registry import (NVIDIA_LICENCE, NVIDIA_LICENCE_NOTE, NVIDIA_LICENCE_URL, get_model_entry,
                        list_models)
from . import app


@app.command()
def models(
    json_out: str = typer.Option(None, "--json", metavar="FILE",
                                 help="Also write the table as JSON to FILE ('-' = stdout only)."),
    download: list[str] = typer.Option(None, "--download", metavar="NAME",
                                       help="Download (and convert) these registry names now, "
                                       "so they work offline later. Repeatable."),
) -> None:
    """List the named checkpoints: classes, data, variant, source, licence, cached locally."""
    for name in download or []:
        entry = get_model_entry(name)
        if entry is None:
            raise TfcsegError(f"{name}: not a registry name (see `tfcseg models`)")
        path = model_entry_path(entry)
        Console(stderr=True).print(f"{entry.name}: ready at {path}", highlight=False)
    rows = [model_status(e) for e in list_models()]
    if json_out == "-":
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="tfcseg models", caption=f"{NVIDIA_LICENCE}: {NVIDIA_LICENCE_NOTE} "
                  f"({NVIDIA_LICENCE_URL}). Official SegFormer checkpoints have no trained TFC "
                  "modules: they run with similarity + interpolation, MSDA off.")
    table.add_column("name", no_wrap=True)
    for col in ("classes", "dataset", "variant", "source", "licence", "cached"):
        table.add_column(col, overflow="fold")
    for r in rows:
        source = r["source"] + (f"@{r['revision']}" if r["revision"] else "")
        if r["shipped"]:
            cached = "yes (shipped)" if r["cached"] else "not shipped yet"
        else:
            cached = "yes" if r["cached"] else "no"
            if r["cached"] and r["converted"] is not None:
                cached += " (converted)" if r["converted"] else " (not converted yet)"
        table.add_row(r["name"], str(r["num_classes"]), r["dataset"], r["variant"], source,
                      r["licence"], cached)
    Console().print(table)
    if json_out:
        atomic_write_text(Path(json_out), json.dumps(rows, indent=2) + "\n")
        Console(stderr=True).print(f"wrote {json_out}", highlight=False)


@app.command()
def export(
    checkpoint: str = typer.Argument(..., help="The checkpoint to publish. " + MODEL_SOURCE_HELP),
    out: Path = typer.Option(..., "-o", "--out", help="The folder to write (config.json, "
                             "model.safetensors, README.md, metrics.json; with --format onnx "
                             "keyframe.onnx, non_keyframe.onnx, config.json, model.safetensors); not "
                             "the checkpoint's folder, nor one inside or around it."),
    format: str = typer.Option("tfcseg", "--format", help="tfcseg (a checkpoint with a model card) | "
                               "onnx (the keyframe and non-keyframe graphs for --backend onnxruntime; "
                               "needs pip install \"tfcseg[onnx]\")."),
    metrics: Path = typer.Option(None, "--metrics", help="An evaluation JSON (`tfcseg eval --json`) "
                                 "for the card; default: metrics.json, eval.json or best.json in "
                                 "the checkpoint folder."),
    train_command: str = typer.Option(None, "--train-command", help="The training command for the "
                                      "card; default: train_command.txt, or `command` in train_args.json / "
                                      "train_config.json, in the folder or its parent."),
    dataset: str = typer.Option(None, "--dataset", help="Training data named on the card "
                                "(default: the config's dataset)."),
    licence: str = typer.Option("apache-2.0", "--license", help="Licence id for the card's metadata."),
    push_to_hub_repo: str = typer.Option(None, "--push-to-hub", metavar="REPO",
                                         help="Upload the folder to this Hub model repo (user/repo)."),
    private: bool = typer.Option(False, "--private", help="Create the Hub repo as private."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the exported files in an "
                                   "existing --out folder (its other files stay)."),
) -> None:
    """Write a clean, publishable checkpoint folder with a model card (optionally upload it),
    or the model's ONNX graphs (--format onnx)."""
    if format not in ("tfcseg", "onnx"):
        raise TfcsegError(f"--format {format}: choose tfcseg or onnx")
    if format == "onnx":
        card = [flag for flag, value in (("--metrics", metrics), ("--train-command", train_command),
                                         ("--dataset", dataset), ("--push-to-hub", push_to_hub_repo),
                                         ("--private", private)) if value]
        if card:
            raise TfcsegError(f"{', '.join(card)}: for --format tfcseg (a published checkpoint); "
                              "--format onnx writes the graphs only")
        from ..backends.onnx_export import export_onnx_checkpoint

        with Console(stderr=True).status("exporting to ONNX"):
            folder = export_onnx_checkpoint(checkpoint, out, overwrite=overwrite)
        data = json.loads((folder / "config.json").read_text())["onnx"]
        table = Table(title=f"exported {checkpoint} to ONNX")
        table.add_column("item")
        table.add_column("value", overflow="fold")
        table.add_row("folder", str(folder))
        table.add_row("files", ", ".join(sorted(p.name for p in folder.iterdir())))
        table.add_row("keyframe state", ", ".join(data["state"]))
        table.add_row("sparse MSDA", "in the non-keyframe graph" if data["msda"] else "off (not exported)")
        table.add_row("run it", f"tfcseg segment VIDEO --backend onnxruntime --model {folder}")
        Console().print(table)
        return
    if private and not push_to_hub_repo:
        raise TfcsegError("--private needs --push-to-hub REPO")
    result = export_checkpoint(checkpoint, out, repo_id=push_to_hub_repo, metrics=metrics,
                               train_command=train_command, dataset=dataset, licence=licence,
                               overwrite=overwrite)
    table = Table(title=f"exported {checkpoint}")
    table.add_column("item")
    table.add_column("value", overflow="fold")
    table.add_row("folder", str(result.folder))
    table.add_row("files", ", ".join(result.files))
    table.add_row("metrics", str(result.metrics_from) if result.metrics_from else "none")
    table.add_row("training command", result.train_command or (
        "not recorded (the run's train_config.json is on the card)" if result.train_config
        else "not recorded"))
    if push_to_hub_repo:
        url = push_to_hub(result.folder, push_to_hub_repo, private=private)
        table.add_row("uploaded", url)
    Console().print(table)
