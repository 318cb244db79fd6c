"""VSPW-layout data: whole videos for evaluation, augmented clips for training, a synthetic
generator, and the 124 VSPW classes."""

from __future__ import annotations

from .classes import VSPW_CLASSES, VSPW_PALETTE
from .synthetic import make_synthetic_vspw
from .transforms import ClipAugmentation, apply_clip_augmentation, sample_clip_augmentation
from .vspw import (
    IGNORE_INDEX,
    ClipDataset,
    DataWarning,
    FrameRecord,
    UnreadableFileError,
    VSPWDataset,
    encode_png_indices,
    load_class_names,
    mask_palette,
    read_image,
    read_label,
    read_mask,
    read_split,
    remap_label,
    write_mask,
)

__all__ = [
    "VSPW_CLASSES", "VSPW_PALETTE", "IGNORE_INDEX", "VSPWDataset", "ClipDataset", "FrameRecord",
    "DataWarning", "UnreadableFileError", "make_synthetic_vspw", "read_image", "read_mask",
    "read_label", "remap_label", "read_split", "load_class_names", "write_mask",
    "encode_png_indices", "mask_palette", "ClipAugmentation", "sample_clip_augmentation",
    "apply_clip_augmentation",
]
