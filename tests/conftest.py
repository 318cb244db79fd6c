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


def pan_scene(n: int, seed: int, invert: bool = False, h: int = 48, w: int = 80) -> list[np.ndarray]:
    """A smooth random scene panning 1 pixel a frame (RGB uint8 frames); `invert`: its negative
    (with another seed: a scene nothing like the first)."""
    import cv2

    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (4, 12, 3), dtype=np.uint8), (w + n, h),
                      interpolation=cv2.INTER_LINEAR)
    if invert:
        base = 255 - base
    return [np.ascontiguousarray(base[:, i:i + w]) for i in range(n)]


def spliced_video(cut: int, n: int) -> list[np.ndarray]:
    """n frames: scene A up to frame `cut`, then a different scene B (a cut at frame `cut`)."""
    return pan_scene(cut, seed=0) + pan_scene(n - cut, seed=1, invert=True)


# Adaptive keyframe settings for the tiny model (`tiny_model`, `randomise_bn`, seed 0) on
# `spliced_video`: within a scene fewer than half the points fall below 0.5 for 8 frames
# after a keyframe; across the cut about three quarters do (the tests check both).
CUT_POLICY = dict(keyframe_interval="auto", keyframe_similarity=0.5, keyframe_changed_share=0.5,
                  max_keyframe_interval=8)
