"""Single files of a VSPW-layout dataset: frames, index masks, and the VSPW mask encoding.

Mask encoding: 0 = "others" (ignored), k + 1 = class k, 255 = void. `remap_label` (mmseg's
reduce_zero_label) gives labels 0..K-1 with 255 ignored; `encode_labels` goes back. Every
reader and writer of mask PNGs in tfcseg is here.
"""

from __future__ import annotations

import struct
import warnings
import zlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from ..errors import TfcsegError
from ..io.atomic import atomic_write_bytes
from .classes import VSPW_CLASSES

IGNORE_INDEX = 255
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


def write_labels(path: str | Path, labels: np.ndarray, num_classes: int,
                 class_palette: Sequence[Sequence[int]] | None = None) -> None:
    """Write a predicted label map atomically as a mask PNG in the VSPW encoding (see
    `encode_labels`)."""
    atomic_write_bytes(path, encode_labels(labels, num_classes, class_palette))


def mask_palette(class_palette: Sequence[Sequence[int]]) -> list[list[int]]:
    """A 256-entry PNG palette for masks in VSPW encoding: value k + 1 gets class k's colour,
    0 ("others") black, 255 (void) white."""
    table = [[0, 0, 0] for _ in range(256)]
    for k, rgb in enumerate(class_palette[:MAX_CLASSES]):
        table[k + 1] = [int(c) for c in rgb]
    table[IGNORE_INDEX] = [255, 255, 255]
    return table


def encode_labels(labels: np.ndarray, num_classes: int,
                  class_palette: Sequence[Sequence[int]] | None = None) -> bytes:
    """A predicted label map [H, W] (class ids 0..K-1) as a mask PNG in the VSPW encoding
    (class k stored as k + 1): 8-bit while the classes fit (<= 254), a palette PNG coloured
    with `class_palette` when given (see `mask_palette`); 16-bit grey beyond 254 classes."""
    if num_classes > MAX_CLASSES:
        ok, buf = cv2.imencode(".png", labels.astype(np.uint16) + np.uint16(1))
        if not ok:
            raise RuntimeError("PNG encoding failed")
        return buf.tobytes()
    mask = labels.astype(np.uint8) + np.uint8(1)
    return encode_png_indices(mask, mask_palette(class_palette) if class_palette is not None else None)
