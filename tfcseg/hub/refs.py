"""Names of models: the default model shipped in `weights/`, Hub repo ids, the `--model` help."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import TfcsegError
from ..models.config import WEIGHTS_NAME
from .registry import list_models

# One wording of a model source for every command that takes one; `--model` (optional)
# adds its default.
MODEL_SOURCE_HELP = (
    "Model: a registry name (see `tfcseg models`), a Hugging Face Hub repo id "
    "(user/repo, optionally @revision), or a local checkpoint folder or file "
    "(tfcseg, transformers SegFormer, NVlabs/mmseg .pth)."
)
MODEL_HELP = MODEL_SOURCE_HELP + " Default: the model shipped in weights/."


def find_shipped_weights(package: Path) -> Path:
    """The shipped model's folder for the `tfcseg` package at `package`: `weights/` inside the
    package (a wheel: setup.py copies the repository's weights/ in at build time), else the
    repository's top-level `weights/` beside the package (a clone, an editable install)."""
    inside, clone = package / "weights", package.parent / "weights"
    for folder in (inside, clone):
        if (folder / WEIGHTS_NAME).is_file():
            return folder
    return clone if clone.is_dir() else inside  # (the folder that the "not shipped" error names)


SHIPPED_WEIGHTS = find_shipped_weights(Path(__file__).resolve().parent.parent)


def default_model_path() -> Path:
    """The default model shipped in `weights/`, or a clear error if none is shipped."""
    if (SHIPPED_WEIGHTS / WEIGHTS_NAME).is_file():
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


def _suggest(name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name.lower(), [e.name for e in list_models()], n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""
