"""Hub downloads through `huggingface_hub`'s own cache, so `HF_HOME`, `HF_HUB_CACHE`,
`HF_HUB_OFFLINE`, `HF_ENDPOINT` and `HF_TOKEN` work as usual; its errors become one-line
TfcsegErrors, its progress bars rows of one rich display.
"""

from __future__ import annotations

import functools
import json
import threading
from pathlib import Path
from typing import Any

from ..errors import TfcsegError
from ..models.config import CONFIG_NAME, WEIGHTS_NAME
from .registry import NVIDIA_LICENCE, NVIDIA_LICENCE_NOTE, NVIDIA_LICENCE_URL, ModelEntry, get_model_entry
from .convert import converted, converted_dir
from . import refs
from .refs import HubRef, _suggest

WEIGHT_FILES = (WEIGHTS_NAME, "pytorch_model.bin")  # in order of preference


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

    from .. import __version__

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
        folder = _snapshot(repo_id, revision, [CONFIG_NAME, weights], label, local_only)
        if (folder / weights).is_file():
            break
    else:
        where = "its cached snapshot" if (_offline() or local_only) else "the Hub repo"
        raise TfcsegError(f"{label}: {where} {repo_id} has no {' or '.join(WEIGHT_FILES)}")
    if not (folder / CONFIG_NAME).is_file():
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
    kind = _checkpoint_kind(snapshot / CONFIG_NAME, label)
    if kind == "tfcseg":
        return snapshot
    _notice_licence(label, repo_id)
    return converted(repo_id, snapshot, label)


def _checkpoint_kind(config_path: Path, label: str) -> str:
    from ..models.checkpoint import _is_hf_config

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


# ---- one-time licence notice -----------------------------------------------------------------
# (That official SegFormer checkpoints have no trained TFC modules, and so run with MSDA off,
# is said by TemporalFusion when a non-keyframe first needs it.)

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


# ---- availability ------------------------------------------------------------------------------


def model_status(entry: ModelEntry) -> dict[str, Any]:
    """A registry entry as a dict, with whether (and where) it is available locally.

    Never touches the network. `cached`: the shipped files exist, or the Hub snapshot is in
    the Hugging Face cache; `converted`: its tfcseg conversion is cached too.
    """
    from .registry import entry_to_dict

    row: dict[str, Any] = {**entry_to_dict(entry), "shipped": entry.shipped, "cached": False,
                           "path": None, "converted": None}
    if entry.shipped:
        row["source"] = str(refs.SHIPPED_WEIGHTS)
        if (refs.SHIPPED_WEIGHTS / WEIGHTS_NAME).is_file():
            row.update(cached=True, path=str(refs.SHIPPED_WEIGHTS))
            try:  # the shipped config is the truth about the shipped model
                from ..models.config import ModelConfig

                cfg = ModelConfig.load(refs.SHIPPED_WEIGHTS / CONFIG_NAME)
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
            row["converted"] = (converted / WEIGHTS_NAME).is_file()
            if row["converted"]:
                row["path"] = str(converted)
    return row


