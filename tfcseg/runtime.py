"""Run-time choices shared by every pipeline: inference modes, precisions, the device, and
where tfcseg keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import TfcsegError

# How a video is run: TFC (the method), per-frame SegFormer (every frame a keyframe), or
# feature reuse (non-keyframes reuse the keyframe's high-level features, nothing else).
MODES = ("tfc", "segformer", "reuse")
# Inference precision name -> autocast dtype (None: fp32, no autocast).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# What runs the model: PyTorch itself, or its two exported ONNX graphs in ONNX Runtime
# (`pip install "tfcseg[onnx]"`; see tfcseg.backends).
BACKENDS = ("pytorch", "onnxruntime")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`auto` -> CUDA when available, else CPU; a named device that is absent is an error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise TfcsegError(f"device {device}: not a device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TfcsegError(f"device {device}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise TfcsegError(f"device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    return dev


def cache_root() -> Path:
    """tfcseg's own cache: `$TFCSEG_CACHE`, else `$XDG_CACHE_HOME/tfcseg` (~/.cache/tfcseg).
    Compiled kernels go to `ext/`, converted Hub checkpoints to `converted/`."""
    if os.environ.get("TFCSEG_CACHE"):
        return Path(os.environ["TFCSEG_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "tfcseg"
