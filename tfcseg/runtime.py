"""Run-time choices shared by every pipeline: inference modes, precisions, the device, and
where tfcseg keeps its caches."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from .errors import OptionError, TfcsegError

# How a video is run: TFC (the method), per-frame SegFormer (every frame a keyframe), or
# feature reuse (non-keyframes reuse the keyframe's high-level features, nothing else).
MODES = ("tfc", "segformer", "reuse")
# Inference precision name -> autocast dtype (None: fp32, no autocast).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


# `keyframe_interval` of this value: keyframes chosen from TFC's own similarity (segmenter.KeyframePolicy).
AUTO_KEYFRAMES = "auto"


def parse_keyframe_interval(value: int | str) -> int | str:
    """A keyframe interval as given on the command line or to the library: a whole number of
    frames (1 or more; `4` or "4") or "auto"."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO_KEYFRAMES:
            return AUTO_KEYFRAMES
        if not text.lstrip("-").isdigit():
            raise OptionError(f"keyframe_interval {value}: a whole number of frames (1 or more) or "
                              f"{AUTO_KEYFRAMES}", options=("keyframe_interval",))
        value = int(text)
    try:
        whole = not isinstance(value, bool) and int(value) == value
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole:
        raise OptionError(f"keyframe_interval {value}: a whole number of frames (1 or more) or "
                          f"{AUTO_KEYFRAMES}", options=("keyframe_interval",))
    if int(value) < 1:
        raise OptionError(f"keyframe_interval must be 1 or more, not {value}", options=("keyframe_interval",))
    return int(value)


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
