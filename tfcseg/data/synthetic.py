"""A synthetic dataset in the VSPW layout, for tests and smoke runs.

Each video: a textured background (class 0) panning slowly, and textured shapes (ellipses
and rectangles of classes 1..K-1) that move, bounce off the borders and occlude one another
in a fixed depth order. A small static "others" patch (mask value 0, ignored) sits in one
corner. Textures are a function of the class (colour, stripe direction and period) so a
model can learn them. Dense labels are exact; frames are JPEGs like VSPW's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np

from ..io.atomic import atomic_write_bytes, atomic_write_text
from ..io.palette import default_palette
from .masks import encode_png_indices, mask_palette

MAX_SHAPES = 5


def _class_texture(cls: int, num_classes: int, yy: np.ndarray, xx: np.ndarray,
                   palette: list[list[int]]) -> np.ndarray:
    """RGB float [H, W, 3]: class colour modulated by stripes of a class-specific direction
    and period, evaluated at texture coordinates (yy, xx)."""
    angle = np.pi * cls / max(num_classes, 1)
    period = 5.0 + 3.0 * (cls % 3)
    wave = np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    return np.asarray(palette[cls], np.float32) * (0.75 + 0.25 * wave[..., None])


def _shape_mask(kind: str, hw: tuple[int, int], cy: float, cx: float, ry: float, rx: float,
                angle: float) -> np.ndarray:
    canvas = np.zeros(hw, np.uint8)
    if kind == "ellipse":
        cv2.ellipse(canvas, (int(round(cx)), int(round(cy))), (max(1, int(rx)), max(1, int(ry))),
                    angle, 0, 360, 1, thickness=-1)
    else:
        box = cv2.boxPoints(((cx, cy), (2 * rx, 2 * ry), angle))
        cv2.fillConvexPoly(canvas, np.round(box).astype(np.int32), 1)
    return canvas.astype(bool)


def _render_video(rng: np.random.Generator, video_index: int, frames: int, num_classes: int,
                  size: tuple[int, int], palette: list[list[int]]):
    """Yield (RGB uint8 [H, W, 3], VSPW mask uint8 [H, W]) per frame."""
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    scale = min(h, w) / 64.0
    # Which classes this video shows (cycling through all classes across videos).
    n_shapes = min(num_classes - 1, MAX_SHAPES)
    shapes = []
    for j in range(n_shapes):
        cls = (video_index * MAX_SHAPES + j) % (num_classes - 1) + 1
        ry, rx = rng.uniform(0.12, 0.28, size=2) * min(h, w)
        shapes.append({
            "cls": cls, "kind": "ellipse" if rng.random() < 0.5 else "rect",
            "cy": rng.uniform(ry, h - ry), "cx": rng.uniform(rx, w - rx), "ry": ry, "rx": rx,
            "vy": rng.uniform(-2.5, 2.5) * scale, "vx": rng.uniform(-2.5, 2.5) * scale,
            "angle": rng.uniform(0, 180), "spin": rng.uniform(-4, 4),
        })
    pan = rng.uniform(-1.0, 1.0, size=2) * scale           # background drift, px per frame
    others = (slice(0, max(2, h // 8)), slice(w - max(2, w // 8), w))  # static ignored patch
    for t in range(frames):
        image = _class_texture(0, num_classes, yy + pan[0] * t, xx + pan[1] * t, palette)
        label = np.zeros((h, w), np.int32)                  # class per pixel (0 = background)
        for s in shapes:                                    # list order = depth order (back to front)
            m = _shape_mask(s["kind"], (h, w), s["cy"], s["cx"], s["ry"], s["rx"], s["angle"])
            tex = _class_texture(s["cls"], num_classes, yy - s["cy"], xx - s["cx"], palette)
            image[m] = tex[m]
            label[m] = s["cls"]
            # Move, bouncing off the borders so the shape stays mostly in view.
            for pos, vel, rad, lim in (("cy", "vy", "ry", h), ("cx", "vx", "rx", w)):
                s[pos] += s[vel]
                lo, hi = s[rad] * 0.5, lim - s[rad] * 0.5
                if not lo <= s[pos] <= hi:
                    s[vel] = -s[vel]
                    s[pos] = float(np.clip(s[pos], lo, hi))
            s["angle"] += s["spin"]
        mask = (label + 1).astype(np.uint8)
        image[others] = 128 + rng.normal(0, 20, size=image[others].shape)
        mask[others] = 0
        image += rng.normal(0, 3.0, size=image.shape)
        yield np.clip(image, 0, 255).astype(np.uint8), mask


def make_synthetic_vspw(
    root: str | Path,
    videos: int = 2,
    frames: int = 8,
    num_classes: int = 4,
    size: tuple[int, int] = (64, 96),
    seed: int = 0,
    splits: Mapping[str, Sequence[int] | Sequence[str]] | None = None,
    palette_masks: bool = False,
) -> Path:
    """Write a synthetic VSPW-layout dataset under `root` and return `root`.

    videos/frames: how many videos and frames per video (names `video_000`, `00000.jpg`).
    num_classes: K >= 2 (class 0 is the background; up to 5 shapes per video).
    size: (H, W) of the frames. splits: split name -> video indices or names; default
    every video in both `train` and `val`. palette_masks: write palette PNG masks (as VSPW's
    own) instead of grey ones; both hold the same indices.
    Masks use the VSPW encoding: 0 = others (ignored), k + 1 = class k.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2, not {num_classes}")
    if videos < 1 or frames < 1:
        raise ValueError("videos and frames must be at least 1")
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = [f"video_{i:03d}" for i in range(videos)]
    class_names = ["background"] + [f"shape_{k}" for k in range(1, num_classes)]
    palette = default_palette(num_classes)
    png_palette = mask_palette(palette) if palette_masks else None
    for v, name in enumerate(names):
        folder = root / "data" / name
        for t, (rgb, mask) in enumerate(_render_video(rng, v, frames, num_classes, tuple(size), palette)):
            ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            assert ok
            atomic_write_bytes(folder / "origin" / f"{t:05d}.jpg", jpg.tobytes())
            atomic_write_bytes(folder / "mask" / f"{t:05d}.png", encode_png_indices(mask, png_palette))
    atomic_write_text(root / "classes.json", json.dumps({
        "classes": class_names, "palette": palette,
        "mask_encoding": "0 = others (ignored), k+1 = class k, 255 = void",
    }, indent=1) + "\n")
    if splits is None:
        splits = {"train": names, "val": names}
    for split, members in splits.items():
        listed = [names[m] if isinstance(m, (int, np.integer)) else str(m) for m in members]
        atomic_write_text(root / f"{split}.txt", "".join(f"{n}\n" for n in listed))
    return root
