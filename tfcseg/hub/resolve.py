"""Where a model comes from: a local path, the default model shipped in `weights/`, a
registry name (`tfcseg models`) or a Hugging Face Hub repo id (`user/repo[@revision]`).

Resolution order for `--model X`: an existing local file or folder wins; then a registry
name; then a Hub repo id (downloaded and, for `transformers` repos, converted once: see
download.py and convert.py). `load_model` is resolution followed by a strict load.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import TfcsegError
from ..models.checkpoint import build_from_checkpoint
from ..models.segformer import TFCSegFormer
from .download import download_model
from .refs import _suggest, default_model_path, parse_hub_id
from .registry import ModelEntry, get_model_entry


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


def load_model(source: str | Path | None, device: str | torch.device = "cpu") -> TFCSegFormer:
    """Load a model from a tfcseg checkpoint (folder or file), a `transformers` folder, an
    NVlabs/mmseg `.pth`, a registry name or a Hub id (None: the shipped default). Returns it
    in eval mode."""
    return build_from_checkpoint(resolve_model_source(source), device)
