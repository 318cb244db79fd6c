"""Class colour palettes (RGB, uint8)."""

from __future__ import annotations

import colorsys

# CamVid's conventional colours for its 11 classes (sky, building, pole, road, sidewalk,
# tree, sign, fence, car, pedestrian, bicyclist).
CAMVID_PALETTE = [
    [128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [0, 0, 192],
    [128, 128, 0], [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192],
]


def default_palette(num_classes: int) -> list[list[int]]:
    """A fixed palette of well-separated colours: hues stepped by the golden ratio,
    alternating saturation/value so that neighbouring class ids differ clearly."""
    colours = []
    for i in range(num_classes):
        hue = (i * 0.618033988749895) % 1.0
        sat = 0.55 + 0.35 * ((i // 2) % 2)
        val = 0.95 - 0.3 * (i % 2)
        r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
        colours.append([round(r * 255), round(g * 255), round(b * 255)])
    return colours
