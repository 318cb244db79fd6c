"""VSPW-layout datasets: the file layout and whole videos (training clips: clips.py; files: masks.py).

Layout (VSPW's own, also used by `../shared/data/camvid`)::

    <root>/{train,val,test}.txt             one video name a line
    <root>/data/<video>/origin/<frame>.jpg  RGB frames
    <root>/data/<video>/mask/<frame>.png    8-bit index masks
    <root>/classes.json                     optional: {"classes": [...], "palette": [[r,g,b], ...]}

Mask encoding: 0 = "others" (ignored), k + 1 = class k, 255 = void. The standard remap
(`remap_label`, as mmseg's reduce_zero_label) gives labels 0..K-1 with 255 ignored. Without a
`classes.json` the 124 VSPW classes are assumed.

Bad data is reported with the file's path: problems that can be skipped safely (a missing
frame or mask, an unreadable or empty image, stray label values) raise a `DataWarning` and
the frame is skipped (or the stray pixels ignored); problems that make the data unusable
(a colour mask, a missing video folder or split file) raise a `TfcsegError`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import TfcsegError
from ..io.palette import default_palette
from ..io.video import IMAGE_SUFFIXES
from .classes import VSPW_CLASSES, VSPW_PALETTE
from .masks import IGNORE_INDEX, MAX_CLASSES, DataWarning, UnreadableFileError, read_image, read_mask, remap_label


@dataclass(frozen=True)
class FrameRecord:
    """One labelled frame of a video: its name (file stem) and its two files."""

    name: str
    image: Path
    mask: Path


# ---- the dataset layout -------------------------------------------------------------------


def load_class_names(root: str | Path) -> tuple[list[str], list[list[int]]]:
    """Class names and RGB palette of a dataset: `<root>/classes.json` else VSPW's 124."""
    path = Path(root) / "classes.json"
    if not path.exists():
        return list(VSPW_CLASSES), [list(c) for c in VSPW_PALETTE]
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TfcsegError(f"{path}: not valid JSON ({exc})") from None
    names = data.get("classes") if isinstance(data, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise TfcsegError(f'{path}: expected {{"classes": ["name", ...]}} with at least one name')
    if len(names) > MAX_CLASSES:
        raise TfcsegError(f"{path}: {len(names)} classes; the 8-bit VSPW mask encoding holds at most {MAX_CLASSES}")
    palette = data.get("palette")
    if palette is None:
        palette = default_palette(len(names))
    elif (not isinstance(palette, list) or len(palette) != len(names)
          or not all(isinstance(c, list) and len(c) == 3 for c in palette)):
        raise TfcsegError(f"{path}: 'palette' must hold one [r, g, b] per class ({len(names)})")
    return list(names), [[int(v) for v in c] for c in palette]


def read_split(root: str | Path, split: str) -> list[str]:
    """Video names of `<root>/<split>.txt` (blank lines and names starting with '.' skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise TfcsegError(f"{root}: no such dataset folder")
    path = root / f"{split}.txt"
    if not path.is_file():
        found = sorted(p.stem for p in root.glob("*.txt"))
        hint = f" (splits here: {', '.join(found)})" if found else ""
        raise TfcsegError(f"{path}: split file not found{hint}")
    names = [line.strip() for line in path.read_text().splitlines()]
    names = [n for n in names if n and not n.startswith(".")]
    if not names:
        raise TfcsegError(f"{path}: lists no videos")
    return list(dict.fromkeys(names))  # drop repeats, keep order


class VSPWDataset:
    """Whole videos of one split of a VSPW-layout dataset, frames in name order.

    Attributes: `root`, `split`, `videos` (names, split-file order), `class_names`,
    `num_classes`, `palette` (RGB per class), `skipped` (list of (path, reason) for every
    frame left out so far: missing files at listing, unreadable files while reading),
    `empty_videos` (videos of the split without any frame: skipped with a `DataWarning`).
    """

    def __init__(self, root: str | Path, split: str = "val") -> None:
        self.root = Path(root)
        self.split = split
        self.videos = read_split(self.root, split)
        self.class_names, self.palette = load_class_names(self.root)
        self.num_classes = len(self.class_names)
        self.skipped: list[tuple[str, str]] = []
        self.empty_videos: list[str] = []  # listed in the split, with no frame at all
        self._frames: dict[str, list[FrameRecord]] = {}
        for video in self.videos:
            folder = self.video_dir(video)
            if not folder.is_dir():
                raise TfcsegError(f"{folder}: video folder listed in {split}.txt not found")
            for sub in ("origin", "mask"):
                if not (folder / sub).is_dir():
                    raise TfcsegError(f"{folder / sub}: folder not found (every video needs origin/ and mask/)")

    def video_dir(self, video: str) -> Path:
        return self.root / "data" / video

    def frames(self, video: str) -> list[FrameRecord]:
        """The frames of `video` that have both an image and a mask, sorted by name.

        A frame with only one of its two files is left out with a `DataWarning` naming the
        missing file (once per dataset object) and recorded in `skipped`.
        """
        if video in self._frames:
            return self._frames[video]
        folder = self.video_dir(video)
        images = {p.stem: p for p in sorted((folder / "origin").iterdir())
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")}
        masks = {p.stem: p for p in sorted((folder / "mask").iterdir())
                 if p.suffix.lower() == ".png" and not p.name.startswith(".")}
        records = []
        if not images and not masks:
            self.empty_videos.append(video)
            warnings.warn(f"{folder}: listed in {self.split}.txt but holds no frames (video skipped)",
                          DataWarning, stacklevel=2)
        for name in sorted(images.keys() | masks.keys()):
            if name not in masks:
                self._skip(folder / "mask" / f"{name}.png", "mask missing (frame skipped)")
            elif name not in images:
                self._skip(folder / "origin" / f"{name}.jpg", "frame missing (its mask is skipped)")
            else:
                records.append(FrameRecord(name, images[name], masks[name]))
        self._frames[video] = records
        return records

    def _skip(self, path: Path, reason: str) -> None:
        self.skipped.append((str(path), reason))
        warnings.warn(f"{path}: {reason}", DataWarning, stacklevel=3)

    def read_frame(self, record: FrameRecord) -> tuple[np.ndarray, np.ndarray] | None:
        """(RGB uint8 [H, W, 3], raw mask [H, W]) of one frame, or None when a file is
        unreadable (skipped with a `DataWarning`, recorded in `skipped`). A colour mask or a
        frame/mask size mismatch raises `TfcsegError`."""
        try:
            rgb = read_image(record.image)
            raw = read_mask(record.mask)
        except UnreadableFileError as exc:
            self._skip(exc.path, f"{exc.reason} (frame skipped)")
            return None
        if rgb.shape[:2] != raw.shape:
            raise TfcsegError(
                f"{record.mask}: mask is {raw.shape[1]}x{raw.shape[0]} but its frame "
                f"{record.image.name} is {rgb.shape[1]}x{rgb.shape[0]}"
            )
        return rgb, raw

    def iter_video(self, video: str) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """(frame name, RGB uint8 [H, W, 3], label uint8 [H, W] in 0..K-1 / 255) per readable
        frame of `video`, in name order (see `read_frame` for what is skipped)."""
        for record in self.frames(video):
            pair = self.read_frame(record)
            if pair is not None:
                yield record.name, pair[0], remap_label(pair[1], self.num_classes, record.mask)

    def __len__(self) -> int:
        return len(self.videos)

    def label_counts(self) -> np.ndarray:
        """Pixels per class [K] (int64) over every labelled frame of the split (unreadable
        frames skipped, as everywhere)."""
        counts = np.zeros(self.num_classes, np.int64)
        for video in self.videos:
            for record in self.frames(video):
                try:
                    raw = read_mask(record.mask)
                except UnreadableFileError as exc:
                    self._skip(record.mask, exc.reason)
                    continue
                labels = remap_label(raw, self.num_classes, record.mask)
                counts += np.bincount(labels[labels != IGNORE_INDEX].ravel(), minlength=self.num_classes)[:self.num_classes]
        return counts

    def __repr__(self) -> str:
        return f"VSPWDataset({str(self.root)!r}, split={self.split!r}, videos={len(self.videos)}, classes={self.num_classes})"


