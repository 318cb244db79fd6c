"""What runs a model: PyTorch itself, or its exported ONNX graphs in ONNX Runtime.

    onnx_export   `export_onnx`: a model's keyframe and non-keyframe graphs (+ config.json)
    ort           `OnnxRuntimeModel`: those graphs in ONNX Runtime, with TFCSegFormer's
                  inference face (keyframe / non_keyframe), for `VideoSegmenter`

Both need the optional extra (`pip install "tfcseg[onnx]"`); without it they stop with one
line saying so. Nothing here imports onnx or onnxruntime until it is used.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import TfcsegError
from ..runtime import BACKENDS


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise TfcsegError(f"backend {backend}: choose one of {', '.join(BACKENDS)}", options=("backend",))
    return backend


def resolve_backend_device(device: str | torch.device | None, backend: str) -> torch.device:
    """The device for `backend`: PyTorch's (`runtime.resolve_device`), or for onnxruntime
    `auto` = CUDA where this ONNX Runtime has the CUDA provider, else the CPU."""
    from ..runtime import resolve_device

    if check_backend(backend) == "pytorch":
        return resolve_device(device)
    if device is None or str(device) == "auto":
        from .ort import CUDA, require_onnxruntime

        return torch.device("cuda" if CUDA in require_onnxruntime().get_available_providers() else "cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise TfcsegError(f"device {device}: not a device (use auto, cpu, cuda or cuda:N)",
                          options=("device",)) from None


def load_backend_model(source: str | Path | None, backend: str = "pytorch",
                       device: str | torch.device = "cpu"):
    """The model for `source` (`tfcseg.load_model`'s sources) on `backend`: a `TFCSegFormer`
    for pytorch, an `OnnxRuntimeModel` for onnxruntime (an ONNX export as it is, any other
    model exported once into tfcseg's cache)."""
    if check_backend(backend) == "onnxruntime":
        from .ort import load_onnx_model

        return load_onnx_model(source, device)
    from ..hub.resolve import load_model

    return load_model(source, device=device)


__all__ = ["check_backend", "load_backend_model", "resolve_backend_device"]
