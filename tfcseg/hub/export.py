"""Publishing: a clean checkpoint folder with a model card (`export_checkpoint`), and its
upload to the Hugging Face Hub (`push_to_hub`)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import TfcsegError
from ..models.config import CONFIG_NAME, WEIGHTS_NAME
from .download import _first_line, _hub_errors, _transport_errors
from .refs import parse_hub_id
from .resolve import resolve_model_source


# Files that `export` picks up when no option names them: in the checkpoint folder (metrics:
# `tfcseg eval --json`, or `best.json` that `tfcseg train` keeps beside `best/`'s weights), and
# in the folder or its parent (a training run's `train_config.json` sits above `last/`, `best/`).
METRICS_FILES = ("metrics.json", "eval.json", "best.json")
TRAIN_COMMAND_FILES = ("train_command.txt", "command.txt")
TRAIN_RECORD_FILES = ("train_args.json", "args.json", "train_config.json")


def _found_train_record(folder: Path) -> tuple[str | None, dict[str, Any] | None]:
    """(training command, training configuration) recorded with a checkpoint, if any."""
    import shlex

    config: dict[str, Any] | None = None
    for where in (folder, folder.parent):
        for name in TRAIN_COMMAND_FILES:
            if (where / name).is_file():
                text = (where / name).read_text(errors="replace").strip()
                if text:
                    return text, config
        for name in TRAIN_RECORD_FILES:
            try:
                data = json.loads((where / name).read_text())
            except (OSError, json.JSONDecodeError, UnicodeDecodeError):
                continue
            if not isinstance(data, dict):
                continue
            command = data.get("command") or data.get("argv")
            if isinstance(command, list) and command and all(isinstance(a, str) for a in command):
                return shlex.join(command), data
            if isinstance(command, str) and command.strip():
                return command.strip(), data
            config = config or data
    return None, config


@dataclass
class ExportResult:
    """What `export_checkpoint` wrote."""

    folder: Path
    files: list[str]
    metrics_from: Path | None
    train_command: str | None
    train_config: bool  # a training configuration (no command) went on the card


# What `export` writes into its folder; with overwrite=True it replaces these and nothing else.
EXPORT_FILES = (CONFIG_NAME, WEIGHTS_NAME, "README.md", "metrics.json")
CARD_START = "---\nlibrary_name: tfcseg\n"  # how a model card of ours begins


def _is_our_export(folder: Path) -> bool:
    try:
        with open(folder / "README.md", encoding="utf-8", errors="replace") as f:
            return f.read(len(CARD_START)) == CARD_START
    except OSError:
        return False


def export_checkpoint(source: str | Path, out: str | Path, *, repo_id: str | None = None,
                      metrics: str | Path | None = None, train_command: str | None = None,
                      dataset: str | None = None, licence: str = "apache-2.0",
                      overwrite: bool = False) -> ExportResult:
    """Write a clean publishable folder: `config.json`, `model.safetensors`, `README.md`
    (model card) and, when metrics are known, `metrics.json`.

    `source` is any model source (`resolve_model_source`); it is loaded strictly, so a broken
    checkpoint is never published. Metrics come from `metrics`, else from `metrics.json` /
    `eval.json` in the checkpoint folder; the training command from `train_command`, else
    from `train_command.txt` or a `train_args.json` with a `command` entry there.
    A new folder appears complete or not at all (written beside `out`, then renamed).
    `overwrite=True` replaces the files above in an existing folder, each atomically, and
    leaves every other file there alone. `out` may not be the checkpoint's folder, inside it
    or around it, nor the current folder.
    """
    from ..io.atomic import atomic_write_text, make_temp, sweep_stale, write_error
    from ..io.folders import check_destination, check_export_folder, move_into
    from ..models.checkpoint import build_from_checkpoint, save_checkpoint
    from .modelcard import read_metrics, render_model_card

    out = Path(out).expanduser()
    check_export_folder(out, overwrite)
    if repo_id is not None and parse_hub_id(repo_id) is None:
        raise TfcsegError(f"{repo_id}: not a Hub repo id (expected user/repo)")
    src = resolve_model_source(source)
    folder = src if src.is_dir() else src.parent
    check_destination(out, src)
    model = build_from_checkpoint(src)
    metrics_path = Path(metrics) if metrics is not None else next(
        (folder / n for n in METRICS_FILES if (folder / n).is_file()), None)
    metrics_data = read_metrics(metrics_path) if metrics_path is not None else None
    found_command, train_config = _found_train_record(folder)
    train_command = train_command or found_command

    card = render_model_card(
        model.config, num_parameters=sum(p.numel() for p in model.parameters()),
        load_as=repo_id or str(out), dataset=dataset, train_command=train_command,
        train_config=None if train_command else train_config, metrics=metrics_data, licence=licence,
    )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(out.parent, out.name)  # what a killed earlier export left
        tmp = make_temp(out, suffix="", folder=True)
    except OSError as exc:
        raise write_error(out, exc, "cannot write here") from None
    try:
        save_checkpoint(model, tmp)
        atomic_write_text(tmp / "README.md", card)
        if metrics_data is not None:
            atomic_write_text(tmp / "metrics.json", json.dumps(metrics_data, indent=2) + "\n")
        # a metrics.json that an earlier export of ours wrote goes when this one has none
        # (it would contradict the new card)
        stale_metrics = out.exists() and not (tmp / "metrics.json").exists() and _is_our_export(out)
        written = move_into(tmp, out)
        if stale_metrics:
            (out / "metrics.json").unlink(missing_ok=True)
    except OSError as exc:
        raise write_error(out, exc, "could not export") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(folder=out, files=written, metrics_from=metrics_path, train_command=train_command,
                        train_config=train_command is None and train_config is not None)


def push_to_hub(folder: str | Path, repo_id: str, *, private: bool = False,
                commit_message: str | None = None, api: Any = None) -> str:
    """Upload an exported folder's files (`EXPORT_FILES`, nothing else that lies there) to a
    Hub model repo (created if missing); the commit URL.

    Uses `HfApi.create_repo` + `HfApi.upload_folder` with the usual login (`hf auth login`
    or `HF_TOKEN`). `api` replaces the `HfApi()` instance (tests).
    """
    folder = Path(folder)
    if parse_hub_id(repo_id) is None or "@" in repo_id:
        raise TfcsegError(f"{repo_id}: not a Hub repo id (expected user/repo)")
    for name in (CONFIG_NAME, WEIGHTS_NAME, "README.md"):
        if not (folder / name).is_file():
            raise TfcsegError(f"{folder}: no {name}; publish a folder written by `tfcseg export`")
    if api is None:
        from huggingface_hub import HfApi

        api = HfApi(library_name="tfcseg")
    err = _hub_errors()
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id, folder_path=str(folder), repo_type="model",
            commit_message=commit_message or "Upload tfcseg checkpoint",
            allow_patterns=list(EXPORT_FILES),  # never the other files of the folder
        )
    except Exception as exc:  # noqa: BLE001 - each known kind is translated below
        auth = tuple(err[n] for n in ("LocalTokenNotFoundError",) if n in err)
        status = getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(exc, auth) or status in (401, 403):
            raise TfcsegError(f"{repo_id}: not allowed to create or write this repo; log in with "
                              "`hf auth login` (a write token) or set HF_TOKEN") from None
        if "HfHubHTTPError" in err and isinstance(exc, err["HfHubHTTPError"]):
            raise TfcsegError(f"{repo_id}: the Hub refused the upload (HTTP {status}: "
                              f"{_first_line(exc)})") from None
        if isinstance(exc, _transport_errors()):
            raise TfcsegError(f"{repo_id}: upload failed ({type(exc).__name__}: {_first_line(exc)}); "
                              "check the network and run again") from None
        raise
    return str(getattr(info, "commit_url", None) or info)
