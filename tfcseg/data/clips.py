"""Training clips of a VSPW-layout dataset: a keyframe and the frames after it, augmented alike."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import TfcsegError
from ..models.segformer import IMAGENET_MEAN, IMAGENET_STD
from .masks import IGNORE_INDEX, DataWarning, remap_label
from .motion import video_rate_clip
from .transforms import VSPW_FRAME_SIZE, apply_clip_augmentation, sample_clip_augmentation
from .vspw import VSPWDataset


class ClipDataset(torch.utils.data.Dataset):
    """Training clips: a keyframe and the next `clip_len - 1` frames of one video.

    Item i is the clip starting at the i-th possible start (every frame that has
    `clip_len - 1` frames after it, videos in split order). Every frame of a clip gets the
    same augmentation (`transforms.sample_clip_augmentation`: random rescale of `base_size`
    (H, W) by a ratio in `ratio_range`, a `crop` x `crop` crop chosen on the keyframe's
    labels with `cat_max_ratio`, horizontal flip, photometric distortion), drawn from a
    generator seeded by (seed, epoch, index): call `set_epoch` so a resumed run repeats
    itself exactly. Videos shorter than `clip_len` are skipped with a `DataWarning`.

    With `video_rate_share` > 0, that share of the items (drawn per (seed, epoch, index)) is a
    video-rate clip instead: the keyframe and `clip_len - 1` frames made from it by
    `motion.video_rate_clip` (15-30 fps street motion), then augmented the same way. With
    `video_rate_share` 1 every clip is made that way, so every labelled frame is an item (a
    keyframe) and no video is too short.

    Returns dict: `frames` float32 [T, 3, crop, crop] ImageNet-normalised, `labels` int64
    [T, crop, crop] (255 = ignore), `video` (name), `start` (index of the keyframe).
    """

    def __init__(self, root: str | Path, split: str = "train", clip_len: int = 4, crop: int = 480,
                 base_size: tuple[int, int] = VSPW_FRAME_SIZE, ratio_range: tuple[float, float] = (0.5, 2.0),
                 cat_max_ratio: float = 0.75, flip: bool = True, photometric: bool = True,
                 seed: int = 0, video_rate_share: float = 0.0) -> None:
        if clip_len < 1:
            raise TfcsegError(f"clip_len must be at least 1, not {clip_len}")
        if not 0.0 <= video_rate_share <= 1.0:
            raise TfcsegError(f"video_rate_share must be in [0, 1], not {video_rate_share}")
        self.video_rate_share = float(video_rate_share)
        self.dataset = VSPWDataset(root, split)
        self.clip_len = clip_len
        self.crop = crop
        self.base_size = tuple(base_size)
        self.ratio_range = tuple(ratio_range)
        self.cat_max_ratio = cat_max_ratio
        self.flip = flip
        self.photometric = photometric
        self.seed = seed
        self.epoch = 0
        # (video, start) per item; the frame lists are cached by the VSPWDataset.
        self.clips: list[tuple[str, int]] = []
        frames_read = 1 if self.video_rate_share >= 1.0 else clip_len  # real frames a clip reads
        for video in self.dataset.videos:
            n = len(self.dataset.frames(video))
            if n == 0 and video in self.dataset.empty_videos:
                continue  # said already
            if n < frames_read:
                warnings.warn(
                    f"{self.dataset.video_dir(video)}: {n} usable frame(s), fewer than the clip "
                    f"length {clip_len}; video skipped", DataWarning, stacklevel=2)
                continue
            self.clips.extend((video, s) for s in range(n - frames_read + 1))
        if not self.clips:
            raise TfcsegError(
                f"{self.dataset.root / (split + '.txt')}: no video has {frames_read} usable frame(s); "
                "nothing to train on")

    @property
    def class_names(self) -> list[str]:
        return self.dataset.class_names

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    def set_epoch(self, epoch: int) -> None:
        """Augmentations of epoch e are a function of (seed, e, index) only."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.clips)

    def _read_clip(self, video: str, start: int, length: int) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
        records = self.dataset.frames(video)[start:start + length]
        images, labels = [], []
        for record in records:
            pair = self.dataset.read_frame(record)
            if pair is None:
                return None
            if images and pair[0].shape != images[0].shape:
                raise TfcsegError(f"{record.image}: {pair[0].shape[1]}x{pair[0].shape[0]} differs from "
                                  f"the size of {records[0].image.name} in the same video")
            images.append(pair[0])
            labels.append(remap_label(pair[1], self.num_classes, record.mask))
        return images, labels

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        # A clip with an unreadable frame is replaced by the next clip (deterministically);
        # the bad file was reported by read_frame.
        # (its own generator: the real clips' augmentation does not depend on the share)
        motion_rng = np.random.default_rng([self.seed, self.epoch, index, 1])
        synthetic = self.clip_len > 1 and motion_rng.random() < self.video_rate_share  # always at share 1
        for attempt in range(min(16, len(self))):
            video, start = self.clips[(index + attempt) % len(self)]
            clip = self._read_clip(video, start, 1 if synthetic else self.clip_len)
            if clip is not None:
                break
        else:
            raise TfcsegError(f"{self.dataset.root}: 16 clips in a row have unreadable frames")
        images, labels = clip
        if synthetic:
            images, labels = video_rate_clip(motion_rng, images[0], labels[0], self.clip_len)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        aug = sample_clip_augmentation(
            rng, labels[0], crop=self.crop, base_size=self.base_size, ratio_range=self.ratio_range,
            cat_max_ratio=self.cat_max_ratio, flip=self.flip, photometric=self.photometric)
        mean = np.asarray(IMAGENET_MEAN, np.float32) * 255
        std = np.asarray(IMAGENET_STD, np.float32) * 255
        # A crop larger than the rescaled frame is padded at the bottom/right after
        # normalisation, as mmseg does: 0 in normalised pixels, 255 (ignore) in labels.
        frames = np.zeros((len(images), 3, self.crop, self.crop), np.float32)
        targets = np.full((len(images), self.crop, self.crop), IGNORE_INDEX, np.int64)
        for t, (img, lab) in enumerate(zip(images, labels)):
            img, lab = apply_clip_augmentation(aug, img, lab)
            h, w = lab.shape
            frames[t, :, :h, :w] = ((img.astype(np.float32) - mean) / std).transpose(2, 0, 1)
            targets[t, :h, :w] = lab
        return {"frames": torch.from_numpy(frames), "labels": torch.from_numpy(targets),
                "video": video, "start": start, "video_rate": synthetic}
