"""Where a model comes from: a local path, the default model shipped in `weights/`,
(later) a registry name or a Hugging Face Hub id."""

from __future__ import annotations

from pathlib import Path

from .errors import TfcsegError

# The repository's weights/ folder (an editable install keeps the package beside it).
SHIPPED_WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


def default_model_path() -> Path:
    """The default model shipped in `weights/`, or a clear error if none is shipped."""
    if (SHIPPED_WEIGHTS / "model.safetensors").is_file():
        return SHIPPED_WEIGHTS
    raise TfcsegError(
        f"{SHIPPED_WEIGHTS}: no default model is shipped yet; pass --model with a checkpoint "
        "folder, a .safetensors/.pth file or a transformers SegFormer folder"
    )


def resolve_model_source(source: str | Path | None) -> Path:
    """A local checkpoint path for `source` (None = the shipped default model)."""
    if source is None or str(source) in ("", "default"):
        return default_model_path()
    path = Path(source).expanduser()
    if path.exists():
        return path
    raise TfcsegError(f"{source}: no such checkpoint file or folder")
