"""Training augmentations for clips, as mmseg's SegFormer pipeline for VSPW applies them
(Resize with ratio_range, RandomCrop with cat_max_ratio, RandomFlip, PhotoMetricDistortion),
except that one set of parameters is drawn per clip and applied to every frame of it.

The parameters are drawn by `sample_clip_augmentation` from a numpy `Generator` (so a clip's
augmentation is a pure function of the generator's seed) and applied by
`apply_clip_augmentation`, which is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .masks import IGNORE_INDEX

VSPW_FRAME_SIZE = (480, 853)  # (H, W) of VSPW's 480p frames: the paper's training and inference size


@dataclass(frozen=True)
class ClipAugmentation:
    """One clip's augmentation parameters (None = that distortion is not applied)."""

    size: tuple[int, int]               # (H, W) of every frame after the random rescale
    crop_box: tuple[int, int, int, int]  # (y0, x0, y1, x1) in the rescaled frame
    flip: bool                           # horizontal flip after the crop
    brightness: float | None = None      # added to every channel, in [-32, 32]
    contrast: float | None = None        # multiplies the pixels, in [0.5, 1.5]
    contrast_first: bool = True          # contrast before (mmseg mode 1) or after saturation/hue
    saturation: float | None = None      # multiplies HSV saturation, in [0.5, 1.5]
    hue: int | None = None               # added to OpenCV's hue (0..179, wraps), in [-18, 18]


def rescale_size(hw: tuple[int, int], base_size: tuple[int, int], ratio: float) -> tuple[int, int]:
    """mmcv's keep-ratio rescale: the largest size of aspect `hw` that fits a long edge of
    max(base)*ratio and a short edge of min(base)*ratio. Returns (H, W)."""
    h, w = hw
    long_edge = int(max(base_size) * ratio)
    short_edge = int(min(base_size) * ratio)
    factor = min(long_edge / max(h, w), short_edge / min(h, w))
    return max(1, int(h * factor + 0.5)), max(1, int(w * factor + 0.5))


def _random_crop_box(rng: np.random.Generator, hw: tuple[int, int], crop: int) -> tuple[int, int, int, int]:
    h, w = hw
    y0 = int(rng.integers(0, max(h - crop, 0) + 1))
    x0 = int(rng.integers(0, max(w - crop, 0) + 1))
    return y0, x0, min(y0 + crop, h), min(x0 + crop, w)


def sample_clip_augmentation(
    rng: np.random.Generator,
    key_label: np.ndarray,
    crop: int,
    base_size: tuple[int, int] = VSPW_FRAME_SIZE,
    ratio_range: tuple[float, float] = (0.5, 2.0),
    cat_max_ratio: float = 0.75,
    flip: bool = True,
    photometric: bool = True,
) -> ClipAugmentation:
    """Draw one clip's parameters. `key_label` [H, W] (0..K-1, 255 ignore) is the keyframe's
    label at the original size; the crop is chosen on it as mmseg's RandomCrop does: up to
    10 redraws until the crop holds more than one class and no class covers
    `cat_max_ratio` or more of its labelled pixels (the last draw is kept otherwise)."""
    ratio = float(rng.random()) * (ratio_range[1] - ratio_range[0]) + ratio_range[0]
    size = rescale_size(key_label.shape[:2], base_size, ratio)
    box = _random_crop_box(rng, size, crop)
    if cat_max_ratio < 1.0:
        label = cv2.resize(key_label, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
        for _ in range(10):
            y0, x0, y1, x1 = box
            values, counts = np.unique(label[y0:y1, x0:x1], return_counts=True)
            counts = counts[values != IGNORE_INDEX]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            box = _random_crop_box(rng, size, crop)
    do_flip = bool(flip and rng.random() < 0.5)
    params: dict = {}
    if photometric:
        # mmseg's PhotoMetricDistortion: each distortion with probability 1/2.
        if rng.integers(2):
            params["brightness"] = float(rng.uniform(-32, 32))
        params["contrast_first"] = bool(rng.integers(2))
        if rng.integers(2):
            params["contrast"] = float(rng.uniform(0.5, 1.5))
        if rng.integers(2):
            params["saturation"] = float(rng.uniform(0.5, 1.5))
        if rng.integers(2):
            params["hue"] = int(rng.integers(-18, 19))
    return ClipAugmentation(size=size, crop_box=box, flip=do_flip, **params)


def _convert(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return np.clip(img.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)


def photometric_distortion(img: np.ndarray, aug: ClipAugmentation) -> np.ndarray:
    """Brightness, contrast (before or after), saturation and hue on an RGB uint8 image."""
    if aug.brightness is not None:
        img = _convert(img, beta=aug.brightness)
    if aug.contrast is not None and aug.contrast_first:
        img = _convert(img, alpha=aug.contrast)
    if aug.saturation is not None or aug.hue is not None:
        hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
        if aug.saturation is not None:
            hsv[:, :, 1] = _convert(hsv[:, :, 1], alpha=aug.saturation)
        if aug.hue is not None:
            hsv[:, :, 0] = ((hsv[:, :, 0].astype(np.int32) + aug.hue) % 180).astype(np.uint8)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if aug.contrast is not None and not aug.contrast_first:
        img = _convert(img, alpha=aug.contrast)
    return img


def apply_clip_augmentation(aug: ClipAugmentation, image: np.ndarray,
                            label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rescale (bilinear / nearest), crop, flip and distort one frame.

    image: RGB uint8 [H, W, 3]; label: uint8 [H, W]. Returns the crop (at most crop x crop;
    smaller when the rescaled frame is, the caller pads) as uint8 image and label.
    """
    h, w = aug.size
    image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
    y0, x0, y1, x1 = aug.crop_box
    image, label = image[y0:y1, x0:x1], label[y0:y1, x0:x1]
    if aug.flip:
        image, label = image[:, ::-1], label[:, ::-1]
    image = photometric_distortion(np.ascontiguousarray(image), aug)
    return image, np.ascontiguousarray(label)
