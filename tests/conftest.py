"""Shared fixtures: tiny model configs so the suite runs in minutes on 2 CPU cores."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch

from tfcseg import ModelConfig, TFCSegFormer

torch.set_num_threads(2)


def tiny_config(num_classes: int = 5, **kw) -> ModelConfig:
    """B0's structure with one block per stage and narrow widths."""
    base = dict(variant="custom", num_classes=num_classes, hidden_sizes=[8, 16, 24, 32],
                depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4], decoder_dim=32)
    base.update(kw)
    return ModelConfig(**base)


@pytest.fixture
def tiny_model() -> TFCSegFormer:
    torch.manual_seed(0)
    model = TFCSegFormer(tiny_config())
    _randomise_bn(model)
    return model.eval()


def _randomise_bn(model: torch.nn.Module) -> None:
    """Give BatchNorm non-trivial statistics so that folding it is really tested."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)


randomise_bn = _randomise_bn


NTSC = Fraction(30000, 1001)


def write_video(path: Path, frames, fps=NTSC, pix_fmt: str = "yuv420p", faststart: bool = False,
                quality: float | None = None) -> Path:
    """Write RGB frames as an H.264 file with imageio-ffmpeg (no size rounding)."""
    h, w = frames[0].shape[:2]
    gen = imageio_ffmpeg.write_frames(
        str(path), (w, h), fps=fps, macro_block_size=1, pix_fmt_out=pix_fmt, quality=quality,
        ffmpeg_log_level="error", output_params=["-movflags", "+faststart"] if faststart else None)
    gen.send(None)
    for f in frames:
        gen.send(np.ascontiguousarray(f))
    gen.close()
    return path
