"""Drawing label maps over frames: palette blend, class boundaries, a legend, side by side.

All images are H x W x 3 uint8 RGB; label maps are H x W integer class ids in [0, K).
The blend is, per pixel and channel, `(1 - a) * frame + a * colour` rounded half up, where
`colour = palette[label]` and `a` is the opacity taken to 1/256 (`round(opacity * 256) / 256`;
0.5 is exact). It is computed exactly: every term is a multiple of 1/512, so OpenCV's float32
arithmetic makes no rounding error (checked against exact rationals in the tests).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

BOUNDARY_COLOUR = (255, 255, 255)
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def palette_array(palette: Sequence[Sequence[int]]) -> np.ndarray:
    """[K, 3] uint8 from a list of RGB triples."""
    arr = np.asarray(palette, dtype=np.int64)
    if arr.ndim != 2 or arr.shape[1] != 3 or arr.min() < 0 or arr.max() > 255:
        raise ValueError("a palette is a list of [R, G, B] triples in 0..255")
    return arr.astype(np.uint8)


def colorize(labels: np.ndarray, palette: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """The colour image [H, W, 3] of a label map [H, W]."""
    pal = palette if isinstance(palette, np.ndarray) else palette_array(palette)
    if labels.dtype == np.uint8 and len(pal) <= 256:
        # A 256-entry table lookup (OpenCV) is several times faster than fancy indexing.
        lut = np.zeros((256, 1, 3), np.uint8)
        lut[: len(pal), 0] = pal
        return cv2.LUT(cv2.merge([labels, labels, labels]), lut)
    return pal[labels]


def blend(frame: np.ndarray, labels: np.ndarray, palette: Sequence[Sequence[int]] | np.ndarray,
          opacity: float = 0.5) -> np.ndarray:
    """Class colours over `frame` at `opacity` (0 = the frame, 1 = the colours only)."""
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity must be in [0, 1], not {opacity}")
    a = int(round(opacity * 256))
    # f * (256 - a) / 256 + c * a / 256 is a multiple of 1/256 below 256, exact in float32;
    # + 1/512 turns OpenCV's round-half-to-even into round half up without moving anything else.
    return cv2.addWeighted(np.ascontiguousarray(frame), (256 - a) / 256,
                           colorize(labels, palette), a / 256, 1 / 512)


def boundary_mask(labels: np.ndarray, thickness: int = 1) -> np.ndarray:
    """[H, W] bool: pixels whose right or lower neighbour has another label (a 1-pixel line
    along every class boundary), widened to `thickness` pixels."""
    edge = np.zeros(labels.shape, dtype=bool)
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:-1, :] |= labels[:-1, :] != labels[1:, :]
    if thickness > 1:
        kernel = np.ones((thickness, thickness), np.uint8)
        edge = cv2.dilate(edge.astype(np.uint8), kernel).astype(bool)
    return edge


def present_classes(labels: np.ndarray, num_classes: int, min_share: float = 0.001) -> list[int]:
    """Class ids covering at least `min_share` of the pixels, in class-id order (stable from
    frame to frame, so the legend does not reshuffle)."""
    counts = np.bincount(labels.ravel(), minlength=num_classes)
    need = max(1, int(np.ceil(min_share * labels.size)))
    return [int(c) for c in np.flatnonzero(counts >= need)]


def _legend_scale(height: int, width: int) -> tuple[float, int]:
    """Font scale and stroke thickness for a frame: about 18 px rows at 480 p."""
    scale = float(np.clip(min(height, width) / 960.0, 0.3, 1.5))
    return scale, 1 if scale < 0.9 else 2


def draw_legend(image: np.ndarray, classes: Sequence[int], names: Sequence[str],
                palette: np.ndarray) -> np.ndarray:
    """Draw a legend (swatch + name per class) in the top-left corner of `image`, in place.

    Rows that do not fit the frame's height are summarised as "+N more".
    """
    if not classes:
        return image
    h, w = image.shape[:2]
    scale, stroke = _legend_scale(h, w)
    (_, text_h), base = cv2.getTextSize("Ag", _FONT, scale, stroke)
    row = text_h + base + max(2, int(round(6 * scale)))
    pad = max(2, int(round(8 * scale)))
    swatch = text_h + base
    max_rows = max(1, (h - 2 * pad) // row)
    labels = [names[c] for c in classes]
    shown = list(classes)
    if len(shown) > max_rows:
        shown = shown[: max_rows - 1]
        labels = labels[: max_rows - 1] + [f"+{len(classes) - len(shown)} more"]
    text_w = max(cv2.getTextSize(t, _FONT, scale, stroke)[0][0] for t in labels)
    box_w = min(w, pad * 3 + swatch + text_w)
    box_h = min(h, pad * 2 + row * len(labels))
    # Darken the box area so that white text reads on any frame.
    region = image[:box_h, :box_w]
    region[:] = (region.astype(np.float32) * 0.4).astype(np.uint8)
    for i, text in enumerate(labels):
        y0 = pad + i * row
        if i < len(shown):
            colour = tuple(int(v) for v in palette[shown[i]])
            cv2.rectangle(image, (pad, y0), (pad + swatch - 1, y0 + swatch - 1), colour, -1)
        cv2.putText(image, text, (pad * 2 + swatch, y0 + text_h), _FONT, scale,
                    (255, 255, 255), stroke, cv2.LINE_AA)
    return image


class OverlayRenderer:
    """Turns (frame, labels) into the picture `tfcseg segment` writes.

    `opacity`: weight of the class colours; `boundaries`: draw class boundaries (white,
    about 1 px per 480 px of the short side); `legend`: the classes present in the frame;
    `side_by_side`: the original frame on the left, the overlay on the right. `classes`:
    class ids to draw (colour, boundaries, legend); the other classes' pixels keep the frame
    as it is. None draws all.
    """

    def __init__(self, palette: Sequence[Sequence[int]], class_names: Sequence[str],
                 opacity: float = 0.5, boundaries: bool = True, legend: bool = True,
                 side_by_side: bool = False, legend_min_share: float = 0.001,
                 classes: Sequence[int] | None = None) -> None:
        if not 0.0 <= opacity <= 1.0:
            raise ValueError(f"opacity must be in [0, 1], not {opacity}")
        self.palette = palette_array(palette)
        self.class_names = list(class_names)
        if len(self.class_names) != len(self.palette):
            raise ValueError(f"{len(self.class_names)} class names for {len(self.palette)} colours")
        self.opacity = opacity
        self.boundaries = boundaries
        self.legend = legend
        self.side_by_side = side_by_side
        self.legend_min_share = legend_min_share
        self.shown: np.ndarray | None = None  # [K] bool: the classes drawn (None: all)
        if classes is not None:
            ids = [int(c) for c in classes]
            if any(not 0 <= c < len(self.palette) for c in ids):
                raise ValueError(f"class ids must be in [0, {len(self.palette)}), not {ids}")
            self.shown = np.zeros(len(self.palette), bool)
            self.shown[ids] = True

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        return (2 * width if self.side_by_side else width), height

    def __call__(self, frame: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if labels.shape != frame.shape[:2]:
            raise ValueError(f"labels {labels.shape} do not match the frame {frame.shape[:2]}")
        out = blend(frame, labels, self.palette, self.opacity)
        drawn = labels
        if self.shown is not None:
            hidden = ~self.shown[labels]
            out[hidden] = frame[hidden]
            # The hidden classes as one region: no boundaries between them.
            drawn = np.where(hidden, len(self.palette), labels)
        if self.boundaries:
            thickness = max(1, int(round(min(labels.shape) / 480)))
            out[boundary_mask(drawn, thickness)] = BOUNDARY_COLOUR
        if self.legend:
            classes = present_classes(labels, len(self.palette), self.legend_min_share)
            if self.shown is not None:
                classes = [c for c in classes if self.shown[c]]
            draw_legend(out, classes, self.class_names, self.palette)
        if self.side_by_side:
            out = np.concatenate([frame, out], axis=1)
        return out
