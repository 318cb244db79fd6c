"""Tensor layouts shared by the model's parts, and small helpers on them.

Three layouts of one feature map (B = batch, C = channels, (h, w) = the map):
    image     [B, C, h, w]   what convolutions and resizing take; usually channels-last memory
    sequence  [B, h*w, C]    what the encoder's transformer blocks take
    rows      [B*h*w, C]     one row per point, batch-major: what the folded head's matmuls take
A channels-last image, its sequence and its rows share one memory: the conversions are views.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize, align_corners=False (SegFormer's choice); identity at the same size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def seq_to_image(seq: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Sequence [B, h*w, C] -> image [B, C, h, w], a channels-last view of the same memory when
    the sequence is contiguous (otherwise PyTorch copies as needed)."""
    b, _, c = seq.shape
    return seq.reshape(b, h, w, c).permute(0, 3, 1, 2)


def image_to_seq(image: torch.Tensor) -> torch.Tensor:
    """Image [B, C, h, w] -> sequence [B, h*w, C]; free for a channels-last image."""
    b, c = image.shape[:2]
    return image.permute(0, 2, 3, 1).reshape(b, -1, c)


def image_to_rows(x: torch.Tensor) -> torch.Tensor:
    """Image [B, C, h, w] -> rows [B*h*w, C] (batch-major, row-major points); free for a
    channels-last image, a copy otherwise."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def rows_to_image(rows: torch.Tensor, batch: int, h: int, w: int) -> torch.Tensor:
    """Rows [B*h*w, C] -> a channels-last image [B, C, h, w] view of the same memory."""
    return rows.view(batch, h, w, rows.shape[1]).permute(0, 3, 1, 2)


def upsample_to_rows(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """resize(x) to `size` as rows [B*h*w, C] (x: [B, C, h', w']; channels-last is fastest)."""
    return image_to_rows(resize(x.contiguous(memory_format=torch.channels_last), size))


def tensor_key(t: torch.Tensor) -> tuple:
    """Changes when t's values may have: in-place updates bump `_version`; `.to()` / `.cuda()`
    / `.double()` keep the Parameter object but give it new storage, dtype or device. The key
    of caches derived from weights (the folded head, the similarity bases)."""
    return (id(t), t._version, t.data_ptr(), t.dtype, t.device)


def head_dtype(x: torch.Tensor) -> torch.dtype:
    """The folded head's dtype: autocast's where it is on for x's device, else x's own."""
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype


def no_autocast(x: torch.Tensor):
    """A context with autocast off on x's device."""
    return torch.autocast(x.device.type, enabled=False)
