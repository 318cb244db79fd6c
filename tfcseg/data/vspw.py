"""VSPW-layout datasets: the file layout, mask reading and remapping, whole videos and clips.

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
import struct
import warnings
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from ..errors import TfcsegError
from ..io_utils import atomic_write_bytes
from ..palette import default_palette
from .classes import VSPW_CLASSES, VSPW_PALETTE

IGNORE_INDEX = 255
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
# Mask values 1..K hold the classes and 255 is void, so at most 254 classes fit in 8 bits.
MAX_CLASSES = 254


class DataWarning(UserWarning):
    """A data defect that was worked around (frame skipped, stray labels ignored)."""


class UnreadableFileError(TfcsegError):
    """A missing, empty or undecodable image/mask file (a frame that can be skipped)."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass(frozen=True)
class FrameRecord:
    """One labelled frame of a video: its name (file stem) and its two files."""

    name: str
    image: Path
    mask: Path


# ---- reading and writing single files ----------------------------------------------------


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UnreadableFileError(path, f"{what} not found") from None
    except OSError as exc:
        raise UnreadableFileError(path, f"cannot read {what} ({exc.strerror or exc})") from None
    if not data:
        raise UnreadableFileError(path, f"{what} is an empty (zero-byte) file")
    return data


def read_image(path: str | Path) -> np.ndarray:
    """An RGB uint8 image [H, W, 3]; grey images are expanded to three channels.

    Raises `UnreadableFileError` (naming the file) for a missing, empty or corrupt file.
    """
    path = Path(path)
    data = _read_bytes(path, "image")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UnreadableFileError(path, "not a readable image (corrupt or unsupported format)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]] | None:
    """The (type, payload) chunks of a PNG, or None if `data` is not a well-formed PNG."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    chunks, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        chunks.append((kind, data[pos + 8:pos + 8 + length]))
        pos += 12 + length
        if kind == b"IEND":
            break
    return chunks


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF))


def _decode_palette_indices(chunks: list[tuple[bytes, bytes]]) -> np.ndarray | None:
    """Palette indices of a palette PNG (colour type 3).

    OpenCV always expands a palette PNG to colours, which loses the indices (and VSPW's
    masks are palette PNGs). The PNG is rebuilt with the grey palette i -> (i, i, i) and no
    transparency, so that decoding it gives the indices themselves as grey values.
    """
    bit_depth = chunks[0][1][8]
    grey = bytes(np.repeat(np.arange(2 ** bit_depth, dtype=np.uint8), 3))
    rebuilt = [b"\x89PNG\r\n\x1a\n"]
    for kind, payload in chunks:
        if kind == b"PLTE":
            payload = grey
        elif kind == b"tRNS":
            continue
        rebuilt.append(_png_chunk(kind, payload))
    bgr = cv2.imdecode(np.frombuffer(b"".join(rebuilt), np.uint8), cv2.IMREAD_COLOR)
    return None if bgr is None else np.ascontiguousarray(bgr[:, :, 0])


def read_mask(path: str | Path) -> np.ndarray:
    """The raw values of an index mask [H, W] (uint8, or uint16 for 16-bit PNGs), as stored.

    Grey and palette PNGs both hold indices (palette PNGs are read as their indices, not
    their colours). A three-channel image whose channels are equal is read as grey.
    Raises `UnreadableFileError` for a missing, empty or corrupt file and `TfcsegError` for a
    colour mask (an RGB rendering of the labels instead of an index mask).
    """
    path = Path(path)
    data = _read_bytes(path, "mask")
    chunks = _png_chunks(data)
    mask = None
    if chunks and chunks[0][0] == b"IHDR" and len(chunks[0][1]) >= 13 and chunks[0][1][9] == 3:
        mask = _decode_palette_indices(chunks)
    else:
        mask = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if mask is None:
        raise UnreadableFileError(path, "not a readable mask image (corrupt or unsupported format)")
    if mask.ndim == 3:
        colour = mask[:, :, :3]
        if not (np.array_equal(colour[:, :, 0], colour[:, :, 1])
                and np.array_equal(colour[:, :, 0], colour[:, :, 2])):
            raise TfcsegError(
                f"{path}: a colour mask; expected an index mask (one channel, values 0 = others, "
                "k+1 = class k, 255 = void)"
            )
        mask = np.ascontiguousarray(colour[:, :, 0])
    if mask.dtype not in (np.uint8, np.uint16):
        raise TfcsegError(f"{path}: unsupported mask type {mask.dtype} (expected 8-bit indices)")
    return mask


def remap_label(raw: np.ndarray, num_classes: int, source: str | Path | None = None) -> np.ndarray:
    """VSPW mask values -> training/evaluation labels (uint8 [H, W]).

    0 ("others") -> 255, v -> v - 1 for v in 1..K, 255 (void) stays 255. Any other value
    (a stray label, e.g. 252 in some VSPW masks) becomes 255 too, with a `DataWarning`
    naming `source` and the values.
    """
    raw = np.asarray(raw)
    label = np.full(raw.shape, IGNORE_INDEX, np.uint8)
    valid = (raw >= 1) & (raw <= num_classes)
    label[valid] = (raw[valid] - 1).astype(np.uint8)
    stray = ~valid & (raw != 0) & (raw != IGNORE_INDEX)
    if stray.any():
        values = np.unique(raw[stray])
        shown = ", ".join(str(int(v)) for v in values[:8]) + (", ..." if len(values) > 8 else "")
        warnings.warn(
            f"{source or 'mask'}: {int(stray.sum())} pixel(s) with label value(s) {shown} outside "
            f"the {num_classes} classes; treated as ignore (255)",
            DataWarning, stacklevel=2,
        )
    return label


def read_label(path: str | Path, num_classes: int = len(VSPW_CLASSES)) -> np.ndarray:
    """A mask file remapped to labels 0..K-1 / 255 (see `read_mask` and `remap_label`)."""
    return remap_label(read_mask(path), num_classes, path)


def encode_png_indices(mask: np.ndarray, palette: Sequence[Sequence[int]] | None = None) -> bytes:
    """An 8-bit index PNG of `mask` [H, W]: a palette PNG when `palette` is given (viewable
    in colour, read back as indices by `read_mask` and by PIL), else a grey PNG."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    if palette is None:
        ok, buf = cv2.imencode(".png", mask)
        if not ok:
            raise RuntimeError("PNG encoding failed")
        return buf.tobytes()
    table = np.zeros((256, 3), np.uint8)
    pal = np.asarray(palette, np.uint8).reshape(-1, 3)[:256]
    table[: len(pal)] = pal
    h, w = mask.shape
    rows = np.concatenate([np.zeros((h, 1), np.uint8), mask], axis=1)  # filter type 0 per row
    return b"".join([
        b"\x89PNG\r\n\x1a\n",
        _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)),
        _png_chunk(b"PLTE", table.tobytes()),
        _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)),
        _png_chunk(b"IEND", b""),
    ])


def write_mask(path: str | Path, mask: np.ndarray, palette: Sequence[Sequence[int]] | None = None) -> None:
    """Write an index mask PNG atomically (see `encode_png_indices`)."""
    atomic_write_bytes(path, encode_png_indices(mask, palette))


def mask_palette(class_palette: Sequence[Sequence[int]]) -> list[list[int]]:
    """A 256-entry PNG palette for masks in VSPW encoding: value k + 1 gets class k's colour,
    0 ("others") black, 255 (void) white."""
    table = [[0, 0, 0] for _ in range(256)]
    for k, rgb in enumerate(class_palette[:MAX_CLASSES]):
        table[k + 1] = [int(c) for c in rgb]
    table[IGNORE_INDEX] = [255, 255, 255]
    return table


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
    frame left out so far: missing files at listing, unreadable files while reading).
    """

    def __init__(self, root: str | Path, split: str = "val") -> None:
        self.root = Path(root)
        self.split = split
        self.videos = read_split(self.root, split)
        self.class_names, self.palette = load_class_names(self.root)
        self.num_classes = len(self.class_names)
        self.skipped: list[tuple[str, str]] = []
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

    def __repr__(self) -> str:
        return f"VSPWDataset({str(self.root)!r}, split={self.split!r}, videos={len(self.videos)}, classes={self.num_classes})"


class ClipDataset(torch.utils.data.Dataset):
    """Training clips: a keyframe and the next `clip_len - 1` frames of one video.

    Item i is the clip starting at the i-th possible start (every frame that has
    `clip_len - 1` frames after it, videos in split order). Every frame of a clip gets the
    same augmentation (`transforms.sample_clip_augmentation`: random rescale of `base_size`
    (H, W) by a ratio in `ratio_range`, a `crop` x `crop` crop chosen on the keyframe's
    labels with `cat_max_ratio`, horizontal flip, photometric distortion), drawn from a
    generator seeded by (seed, epoch, index): call `set_epoch` so a resumed run repeats
    itself exactly. Videos shorter than `clip_len` are skipped with a `DataWarning`.

    Returns dict: `frames` float32 [T, 3, crop, crop] ImageNet-normalised, `labels` int64
    [T, crop, crop] (255 = ignore), `video` (name), `start` (index of the keyframe).
    """

    def __init__(self, root: str | Path, split: str = "train", clip_len: int = 4, crop: int = 480,
                 base_size: tuple[int, int] = (480, 853), ratio_range: tuple[float, float] = (0.5, 2.0),
                 cat_max_ratio: float = 0.75, flip: bool = True, photometric: bool = True,
                 seed: int = 0) -> None:
        if clip_len < 1:
            raise TfcsegError(f"clip_len must be at least 1, not {clip_len}")
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
        for video in self.dataset.videos:
            n = len(self.dataset.frames(video))
            if n < clip_len:
                warnings.warn(
                    f"{self.dataset.video_dir(video)}: {n} usable frame(s), fewer than the clip "
                    f"length {clip_len}; video skipped", DataWarning, stacklevel=2)
                continue
            self.clips.extend((video, s) for s in range(n - clip_len + 1))
        if not self.clips:
            raise TfcsegError(
                f"{self.dataset.root / (split + '.txt')}: no video has {clip_len} usable frames; "
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

    def _read_clip(self, video: str, start: int) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
        records = self.dataset.frames(video)[start:start + self.clip_len]
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
        from ..model import IMAGENET_MEAN, IMAGENET_STD
        from .transforms import apply_clip_augmentation, sample_clip_augmentation

        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        # A clip with an unreadable frame is replaced by the next clip (deterministically);
        # the bad file was reported by read_frame.
        for attempt in range(min(16, len(self))):
            video, start = self.clips[(index + attempt) % len(self)]
            clip = self._read_clip(video, start)
            if clip is not None:
                break
        else:
            raise TfcsegError(f"{self.dataset.root}: 16 clips in a row have unreadable frames")
        images, labels = clip
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
                "video": video, "start": start}
