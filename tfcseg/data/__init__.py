"""VSPW-layout data: whole videos for evaluation, augmented clips for training, a synthetic
generator, the 124 VSPW classes, and the one reader/writer of mask files.

masks.py      frames and index masks (read, remap, encode, write)
vspw.py       the dataset layout and whole videos
clips.py      training clips (keyframe + following frames, augmented alike)
transforms.py the clip augmentation
synthetic.py  a synthetic VSPW-layout dataset (tests, demos)
classes.py    VSPW's 124 class names and palette
"""

from __future__ import annotations

from .classes import VSPW_CLASSES, VSPW_PALETTE
from .clips import ClipDataset
from .masks import (
    IGNORE_INDEX,
    DataWarning,
    UnreadableFileError,
    encode_labels,
    encode_png_indices,
    mask_palette,
    read_image,
    read_label,
    read_mask,
    remap_label,
    write_labels,
    write_mask,
)
from .synthetic import make_synthetic_vspw
from .transforms import ClipAugmentation, apply_clip_augmentation, sample_clip_augmentation
from .vspw import FrameRecord, VSPWDataset, load_class_names, read_split

__all__ = [
    "VSPW_CLASSES", "VSPW_PALETTE", "IGNORE_INDEX", "VSPWDataset", "ClipDataset", "FrameRecord",
    "DataWarning", "UnreadableFileError", "make_synthetic_vspw", "read_image", "read_mask",
    "read_label", "remap_label", "read_split", "load_class_names", "write_mask",
    "encode_labels", "encode_png_indices", "mask_palette", "write_labels", "ClipAugmentation",
    "sample_clip_augmentation", "apply_clip_augmentation",
]
