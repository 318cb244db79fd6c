"""Where a model comes from: a local path, the default model shipped in `weights/`, a
registry name (`tfcseg models`) or a Hugging Face Hub repo id (`user/repo[@revision]`).

Resolution order for `--model X`: an existing local file or folder wins; then a registry
name; then a Hub repo id. Hub downloads go through `huggingface_hub`'s own cache, so
`HF_HOME`, `HF_HUB_CACHE`, `HF_HUB_OFFLINE`, `HF_ENDPOINT` and `HF_TOKEN` work as usual.

A Hub repo holding a `transformers` SegFormer is converted once (`convert_checkpoint`) into
tfcseg's cache, `$TFCSEG_CACHE` (default `~/.cache/tfcseg`), at
`converted/models--<user>--<repo>/<commit>/`, keyed by the resolved commit hash, and reused
while its tensors still match what this tfcseg builds. A repo already in tfcseg format is
loaded straight from the Hugging Face cache.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import TfcsegError
from .registry import NVIDIA_LICENCE, NVIDIA_LICENCE_NOTE, NVIDIA_LICENCE_URL, ModelEntry, get_model_entry, list_models

# One wording of `--model` for every command that takes it.
MODEL_HELP = (
    "Model: a registry name (see `tfcseg models`), a Hugging Face Hub repo id "
    "(user/repo, optionally @revision), or a local checkpoint folder or file "
    "(tfcseg, transformers SegFormer, NVlabs/mmseg .pth). Default: the model shipped in weights/."
)

# The repository's weights/ folder (an editable install keeps the package beside it).
SHIPPED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"

CONFIG_FILE = "config.json"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # in order of preference
SOURCE_FILE = "tfcseg_source.json"  # provenance written beside a converted checkpoint


def default_model_path() -> Path:
    """The default model shipped in `weights/`, or a clear error if none is shipped."""
    if (SHIPPED_WEIGHTS / "model.safetensors").is_file():
        return SHIPPED_WEIGHTS
    raise TfcsegError(
        f"{SHIPPED_WEIGHTS}: no default model is shipped yet; pass --model with a checkpoint "
        "folder, a .safetensors/.pth file or a transformers SegFormer folder"
    )


# ---- names and ids ------------------------------------------------------------------------

_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".json")


@dataclass(frozen=True)
class HubRef:
    """A Hub model repo and an optional revision (branch, tag or commit hash)."""

    repo_id: str
    revision: str | None = None

    def __str__(self) -> str:
        return self.repo_id + (f"@{self.revision}" if self.revision else "")


def parse_hub_id(text: str) -> HubRef | None:
    """`user/repo` or `user/repo@revision` as a HubRef; None when `text` is not shaped so."""
    repo, sep, revision = str(text).partition("@")
    if sep and not revision:
        return None
    if not _REPO_ID.match(repo) or ".." in repo or "--" in repo or repo.endswith(_FILE_SUFFIXES):
        return None
    return HubRef(repo, revision or None)


def resolve_model_source(source: str | Path | None) -> Path:
    """A local checkpoint path for `source`, downloading (and converting) Hub models.

    None, "" or "default" = the shipped default model. A local file or folder that exists
    wins over a registry name or Hub id of the same spelling.
    """
    if source is None or str(source) in ("", "default"):
        return default_model_path()
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        return path
    if isinstance(source, Path):  # a Path object is never a name or a repo id
        raise TfcsegError(f"{text}: no such checkpoint file or folder")
    name, _, revision = text.partition("@")
    entry = get_model_entry(name)
    if entry is not None:
        return model_entry_path(entry, revision or None)
    ref = parse_hub_id(text)
    if ref is not None:
        try:
            return download_model(ref.repo_id, ref.revision, label=text)
        except TfcsegError as exc:  # maybe a mistyped local path: say it is not one either
            raise TfcsegError(f"{exc} (no local file or folder {text} exists either)") from None
    raise TfcsegError(
        f"{text}: no such checkpoint file or folder, and not a registry name or Hub repo id "
        f"(user/repo[@revision]){_suggest(name)}; `tfcseg models` lists the names"
    )


def model_entry_path(entry: ModelEntry, revision: str | None = None) -> Path:
    """The local checkpoint for a registry entry (downloaded and converted as needed)."""
    if entry.shipped:
        if revision:
            raise TfcsegError(f"{entry.name}@{revision}: the shipped model has no revisions")
        return default_model_path()
    label = entry.name + (f"@{revision}" if revision else "")
    return download_model(entry.source, revision or entry.revision, label=label)


def _suggest(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name.lower(), [e.name for e in list_models()], n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


# ---- downloads ----------------------------------------------------------------------------


def _hub_errors() -> dict[str, type[BaseException]]:
    """huggingface_hub's exception classes (their home moved between releases)."""
    try:
        from huggingface_hub import errors as mod
    except ImportError:  # huggingface_hub < 0.24
        from huggingface_hub import utils as mod
    names = ("GatedRepoError", "RepositoryNotFoundError", "RevisionNotFoundError",
             "IncompleteSnapshotError", "LocalEntryNotFoundError", "HfHubHTTPError",
             "HFValidationError", "LocalTokenNotFoundError")
    return {n: getattr(mod, n) for n in names if hasattr(mod, n)}


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level errors of whichever HTTP client this huggingface_hub uses."""
    found: list[type[BaseException]] = [OSError]
    for module in ("httpx2", "httpx"):
        try:
            found.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(found)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_cache_dir() -> Path:
    """The Hugging Face Hub cache in use (`HF_HUB_CACHE`, or `$HF_HOME/hub`)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def _snapshot(repo_id: str, revision: str | None, patterns: list[str], label: str,
              local_only: bool = False) -> Path:
    """`snapshot_download` of `patterns`, with its errors translated into one-line TfcsegErrors."""
    from huggingface_hub import snapshot_download

    from . import __version__

    where = str(HubRef(repo_id, revision))
    err = _hub_errors()

    def caught(name: str, exc: BaseException) -> bool:
        return name in err and isinstance(exc, err[name])

    bars = rich_tqdm_class()
    try:
        return Path(snapshot_download(
            repo_id, revision=revision, allow_patterns=patterns, local_files_only=local_only,
            tqdm_class=bars, library_name="tfcseg", library_version=__version__,
        ))
    except Exception as exc:  # noqa: BLE001 - each known kind is translated below
        fix = "or pass a local checkpoint folder or file with --model"
        if caught("RevisionNotFoundError", exc):
            msg = f"revision {revision!r} does not exist in the Hub repo {repo_id}"
        elif caught("GatedRepoError", exc):
            msg = (f"the Hub repo {repo_id} is gated: accept its terms on the Hub and log in "
                   "(`hf auth login` or HF_TOKEN)")
        elif caught("RepositoryNotFoundError", exc):
            msg = (f"no Hub model repo {repo_id} (or it is private: log in with `hf auth login` "
                   f"or set HF_TOKEN){_suggest(label.partition('@')[0])}")
        elif caught("IncompleteSnapshotError", exc):
            msg = (f"the cached copy of {where} in {hub_cache_dir()} is incomplete and the Hub "
                   f"could not be reached; download it once with network access, {fix}")
        elif caught("LocalEntryNotFoundError", exc):
            if _offline() or local_only:
                msg = (f"{where} is not in the Hugging Face cache ({hub_cache_dir()}) and "
                       "HF_HUB_OFFLINE=1 forbids downloading it; unset HF_HUB_OFFLINE and run once "
                       f"with network access (then it works offline), {fix}")
            else:
                msg = (f"could not reach the Hugging Face Hub to download {where}, and it is not in "
                       f"the cache ({hub_cache_dir()}); check the network or HF_ENDPOINT, or copy "
                       f"the cache from a machine that has it and set HF_HUB_OFFLINE=1, {fix}")
        elif caught("HFValidationError", exc):
            msg = f"not a valid Hub repo id or revision ({_first_line(exc)})"
        elif caught("LocalTokenNotFoundError", exc):
            msg = f"no Hugging Face token found for {where}: log in with `hf auth login` or set HF_TOKEN"
        elif caught("HfHubHTTPError", exc):
            response = getattr(exc, "response", None)
            status = getattr(response, "status_code", "?")
            if status in (401, 403):
                msg = f"the Hub refused access to {where} (HTTP {status}): log in with `hf auth login` or set HF_TOKEN"
            else:
                msg = f"the Hub answered HTTP {status} for {where} ({_first_line(exc)}); try again later, {fix}"
        elif isinstance(exc, _transport_errors()):
            msg = (f"downloading {where} failed ({type(exc).__name__}: {_first_line(exc)}); "
                   f"check the network and run again (finished files are kept), {fix}")
        else:
            raise
        raise TfcsegError(f"{label}: {msg}") from None
    finally:
        bars.finish()  # huggingface_hub leaves some of its bars open


def download_snapshot(repo_id: str, revision: str | None = None, *, label: str | None = None,
                      local_only: bool = False) -> Path:
    """The cached snapshot folder of a Hub repo with `config.json` and one weights file.

    Fetches `model.safetensors` when the repo has it, else `pytorch_model.bin`. The returned
    folder is `.../snapshots/<commit>` inside the Hugging Face cache.
    """
    label = label or str(HubRef(repo_id, revision))
    folder: Path | None = None
    for weights in WEIGHT_FILES:
        folder = _snapshot(repo_id, revision, [CONFIG_FILE, weights], label, local_only)
        if (folder / weights).is_file():
            break
    else:
        where = "its cached snapshot" if (_offline() or local_only) else "the Hub repo"
        raise TfcsegError(f"{label}: {where} {repo_id} has no {' or '.join(WEIGHT_FILES)}")
    if not (folder / CONFIG_FILE).is_file():
        raise TfcsegError(f"{label}: the Hub repo {repo_id} has no config.json (not a checkpoint repo)")
    return folder


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The complete cached snapshot of a Hub repo, or None; never touches the network."""
    try:
        return download_snapshot(repo_id, revision, local_only=True)
    except TfcsegError:
        return None


def download_model(repo_id: str, revision: str | None = None, *, label: str | None = None) -> Path:
    """A local tfcseg-loadable checkpoint folder for a Hub repo (downloaded, converted, cached)."""
    label = label or str(HubRef(repo_id, revision))
    snapshot = download_snapshot(repo_id, revision, label=label)
    kind = _checkpoint_kind(snapshot / CONFIG_FILE, label)
    if kind == "tfcseg":
        return snapshot
    _notice_licence(label, repo_id)
    return _converted(repo_id, snapshot, label)


def _checkpoint_kind(config_path: Path, label: str) -> str:
    from .checkpoint import _is_hf_config

    try:
        data = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TfcsegError(f"{label}: {config_path} is not readable JSON ({_first_line(exc)})") from None
    if not isinstance(data, dict):
        raise TfcsegError(f"{label}: {config_path} is not a JSON object")
    if data.get("format") == "tfcseg":
        return "tfcseg"
    if _is_hf_config(data):
        return "transformers"
    raise TfcsegError(
        f"{label}: not a SegFormer checkpoint ({config_path} has model_type "
        f"{data.get('model_type')!r}, expected 'segformer' or a tfcseg config)"
    )


def model_status(entry: ModelEntry) -> dict[str, Any]:
    """A registry entry as a dict, with whether (and where) it is available locally.

    Never touches the network. `cached`: the shipped files exist, or the Hub snapshot is in
    the Hugging Face cache; `converted`: its tfcseg conversion is cached too.
    """
    from .registry import entry_to_dict

    row: dict[str, Any] = {**entry_to_dict(entry), "shipped": entry.shipped, "cached": False,
                           "path": None, "converted": None}
    if entry.shipped:
        row["source"] = str(SHIPPED_WEIGHTS)
        if (SHIPPED_WEIGHTS / "model.safetensors").is_file():
            row.update(cached=True, path=str(SHIPPED_WEIGHTS))
            try:  # the shipped config is the truth about the shipped model
                from .config import ModelConfig

                cfg = ModelConfig.load(SHIPPED_WEIGHTS / CONFIG_FILE)
                row.update(num_classes=cfg.num_classes, variant=cfg.variant,
                           dataset=cfg.dataset or entry.dataset)
            except TfcsegError:
                pass
        return row
    snapshot = cached_snapshot(entry.source, entry.revision)
    if snapshot is not None:
        row.update(cached=True, path=str(snapshot))
        if entry.format == "transformers":
            converted = converted_dir(entry.source, snapshot.name)
            row["converted"] = (converted / WEIGHT_FILES[0]).is_file()
            if row["converted"]:
                row["path"] = str(converted)
    return row


# ---- converted cache ------------------------------------------------------------------------


def tfcseg_cache_dir() -> Path:
    """tfcseg's own cache: `$TFCSEG_CACHE`, else `$XDG_CACHE_HOME/tfcseg` (~/.cache/tfcseg)."""
    if os.environ.get("TFCSEG_CACHE"):
        return Path(os.environ["TFCSEG_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "tfcseg"


def converted_dir(repo_id: str, commit: str) -> Path:
    """Where the tfcseg conversion of `repo_id` at `commit` is cached."""
    return tfcseg_cache_dir() / "converted" / ("models--" + repo_id.replace("/", "--")) / commit


def _converted_is_current(folder: Path) -> bool:
    """Whether a cached conversion holds exactly the tensors (names, shapes) this tfcseg builds.

    Built on the meta device: no memory, no initialisation cost. A cache written by an older
    tfcseg whose model had other parameters is converted again rather than failing to load.
    """
    import torch
    from safetensors import safe_open

    from .config import ModelConfig
    from .model import TFCSegFormer

    cfg_path, weights = folder / CONFIG_FILE, folder / WEIGHT_FILES[0]
    if not (cfg_path.is_file() and weights.is_file()):
        return False
    try:
        config = ModelConfig.load(cfg_path)
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in TFCSegFormer(config).state_dict().items()}
        with safe_open(str(weights), framework="pt") as f:
            have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception:  # noqa: BLE001 - a damaged or foreign cache entry means "convert again"
        return False
    return have == expected


def _converted(repo_id: str, snapshot: Path, label: str) -> Path:
    """The cached tfcseg conversion of a `transformers` snapshot, converting it if needed."""
    from rich.console import Console

    from . import __version__
    from .checkpoint import convert_checkpoint
    from .io_utils import atomic_write_text

    commit = snapshot.name  # snapshot_download returns .../snapshots/<commit hash>
    dest = converted_dir(repo_id, commit)
    if _converted_is_current(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{commit}.", suffix=".tmp", dir=dest.parent))
    try:
        what = label if label.partition("@")[0] == repo_id else f"{label} ({repo_id})"
        with Console(stderr=True).status(f"converting {what} to tfcseg format"):
            convert_checkpoint(snapshot, tmp)
        atomic_write_text(tmp / SOURCE_FILE, json.dumps({
            "repo_id": repo_id, "commit": commit, "format": "transformers",
            "converted_by": f"tfcseg {__version__}",
        }, indent=2) + "\n")
        if dest.exists():  # a stale conversion (older tfcseg) or a damaged one
            shutil.rmtree(dest)
        try:
            os.replace(tmp, dest)
        except OSError:  # another process finished the same conversion first
            if not _converted_is_current(dest):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    Console(stderr=True).print(f"converted {label} to tfcseg format (once): {dest}", highlight=False,
                               soft_wrap=True)
    return dest


# ---- one-time licence notice -----------------------------------------------------------------
# (That official SegFormer checkpoints have no trained TFC modules, and so run with MSDA off,
# is said by the runtime in tfc.py when a non-keyframe first needs it.)

_noticed: set[str] = set()


def _notice_licence(label: str, repo_id: str) -> None:
    """Say once per process that NVIDIA's SegFormer weights carry NVIDIA's own licence."""
    entry = get_model_entry(label.partition("@")[0])
    nvidia = (entry.licence == NVIDIA_LICENCE) if entry is not None else repo_id.startswith("nvidia/")
    if not nvidia or repo_id in _noticed:
        return
    _noticed.add(repo_id)
    from rich.console import Console

    Console(stderr=True).print(
        f"[yellow]note:[/] {label}: NVIDIA's SegFormer weights, under the {NVIDIA_LICENCE_NOTE} "
        f"({NVIDIA_LICENCE_URL})", highlight=False, soft_wrap=True,
    )


# ---- progress ---------------------------------------------------------------------------------


@functools.cache
def rich_tqdm_class() -> type:
    """A tqdm class for huggingface_hub whose bars are rows of one shared rich Progress.

    Like tqdm, bars are off when stderr is not a terminal (unless `disable=False` is passed).
    """
    from huggingface_hub.utils import tqdm as hf_tqdm
    from rich.console import Console
    from rich.filesize import decimal
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
    from rich.text import Text

    class _Amount(ProgressColumn):
        def render(self, task: Any) -> Text:
            done, total = int(task.completed), task.total
            if task.fields.get("unit") == "B":
                return Text(decimal(done) + (f"/{decimal(int(total))}" if total else ""))
            return Text(f"{done}/{int(total)}" if total else str(done))

    class RichTqdm(hf_tqdm):  # type: ignore[misc,valid-type]
        """Rows of a shared rich Progress on stderr; tqdm itself draws nothing (gui mode)."""

        _live: Progress | None = None
        _rows = 0  # open rows of _live
        _generation = 0  # counts displays; a row belongs to the one it was opened in
        _guard = threading.Lock()

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["gui"] = True
            kwargs.setdefault("disable", None)  # None: off unless stderr is a terminal
            super().__init__(*args, **kwargs)
            if self.disable:
                return
            cls = type(self)
            with cls._guard:
                if cls._live is None:
                    cls._live = Progress(
                        TextColumn("{task.description}"), BarColumn(), _Amount(),
                        TimeRemainingColumn(), console=Console(stderr=True),
                    )
                    cls._live.start()
                cls._rows += 1
                self._generation = cls._generation
                self._task = cls._live.add_task(self.desc or "", total=self.total or None,
                                                completed=self.n, unit=self.unit)

        def display(self, *args: Any, **kwargs: Any) -> None:
            cls, task = type(self), getattr(self, "_task", None)
            live = cls._live if getattr(self, "_generation", None) == cls._generation else None
            if live is not None and task is not None:
                live.update(task, completed=self.n, total=self.total or None,
                            description=self.desc or "")

        def clear(self, *args: Any, **kwargs: Any) -> None:
            pass

        def close(self) -> None:
            if getattr(self, "_task", None) is None:
                super().close()
                return
            self.display()
            super().close()
            self._task = None
            cls = type(self)
            with cls._guard:
                if self._generation != cls._generation:
                    return  # its display was already finished by finish()
                cls._rows -= 1
                if cls._rows == 0:
                    cls._stop()

        @classmethod
        def finish(cls) -> None:
            """End the display; bars huggingface_hub leaves open stop drawing."""
            with cls._guard:
                cls._stop()

        @classmethod
        def _stop(cls) -> None:
            if cls._live is not None:
                cls._live.stop()
            cls._live, cls._rows, cls._generation = None, 0, cls._generation + 1

    return RichTqdm


# ---- publishing ---------------------------------------------------------------------------

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
    The folder appears complete or not at all (written beside `out`, then renamed).
    """
    from .checkpoint import build_from_checkpoint, save_checkpoint
    from .io_utils import atomic_write_text
    from .modelcard import read_metrics, render_model_card

    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not overwrite:
        raise TfcsegError(f"{out}: exists already and is not empty (use --overwrite to replace it)")
    if repo_id is not None and parse_hub_id(repo_id) is None:
        raise TfcsegError(f"{repo_id}: not a Hub repo id (expected user/repo)")
    src = resolve_model_source(source)
    model = build_from_checkpoint(src)
    folder = src if src.is_dir() else src.parent
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
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        save_checkpoint(model, tmp)
        atomic_write_text(tmp / "README.md", card)
        if metrics_data is not None:
            atomic_write_text(tmp / "metrics.json", json.dumps(metrics_data, indent=2) + "\n")
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(folder=out, files=sorted(p.name for p in out.iterdir()),
                        metrics_from=metrics_path, train_command=train_command,
                        train_config=train_command is None and train_config is not None)


def push_to_hub(folder: str | Path, repo_id: str, *, private: bool = False,
                commit_message: str | None = None, api: Any = None) -> str:
    """Upload an exported folder to a Hub model repo (created if missing); the commit URL.

    Uses `HfApi.create_repo` + `HfApi.upload_folder` with the usual login (`hf auth login`
    or `HF_TOKEN`). `api` replaces the `HfApi()` instance (tests).
    """
    folder = Path(folder)
    if parse_hub_id(repo_id) is None or "@" in repo_id:
        raise TfcsegError(f"{repo_id}: not a Hub repo id (expected user/repo)")
    for name in (CONFIG_FILE, WEIGHT_FILES[0], "README.md"):
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
