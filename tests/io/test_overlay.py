"""Overlay drawing: the blend equals the palette blend of the class, boundaries, legend."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from tfcseg.io.overlay import (BOUNDARY_COLOUR, OverlayRenderer, blend, boundary_mask,
                            colorize, present_classes)
from tfcseg.io.palette import default_palette

PALETTE = [[255, 0, 0], [0, 255, 0], [0, 0, 255], [250, 200, 10], [13, 77, 140]]
NAMES = ["red", "green", "blue", "yellow", "navy"]


def _reference_blend(f: np.ndarray, colour, a: float) -> np.ndarray:
    """(1 - a) * f + a * c in exact rational arithmetic, rounded half up, with the opacity
    taken to 1/256 as documented."""
    q = Fraction(round(a * 256), 256)
    return np.array([math.floor((1 - q) * int(fv) + q * int(cv) + Fraction(1, 2))
                     for fv, cv in zip(f, colour)], dtype=np.uint8)


@pytest.mark.parametrize("opacity", [0.0, 0.5, 0.3, 0.75, 1.0])
@pytest.mark.parametrize("dtype", [np.uint8, np.int64])
def test_blend_is_palette_blend_at_every_pixel(opacity, dtype):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (23, 31, 3), dtype=np.uint8)
    labels = rng.integers(0, len(PALETTE), (23, 31)).astype(dtype)
    out = blend(frame, labels, PALETTE, opacity)
    for y, x in [(0, 0), (5, 7), (22, 30), (11, 19), (17, 3)]:
        expected = _reference_blend(frame[y, x], PALETTE[labels[y, x]], opacity)
        np.testing.assert_array_equal(out[y, x], expected)
    ref = np.stack([_reference_blend(frame[y, x], PALETTE[labels[y, x]], opacity)
                    for y in range(23) for x in range(31)]).reshape(23, 31, 3)
    np.testing.assert_array_equal(out, ref)


def test_colorize_uses_palette():
    for labels in (np.array([[0, 1], [4, 2]]), np.array([[0, 1], [4, 2]], np.uint8)):
        np.testing.assert_array_equal(colorize(labels, PALETTE)[1, 0], PALETTE[4])
        np.testing.assert_array_equal(colorize(labels, PALETTE)[1, 1], PALETTE[2])
        np.testing.assert_array_equal(colorize(labels, PALETTE)[0, 1], PALETTE[1])


def test_blend_rounds_ties_half_up():
    # 0.5 * 10 + 0.5 * 11 = 10.5 -> 11; 0.5 * 0 + 0.5 * 1 = 0.5 -> 1 (half to even would give 10, 0).
    frame = np.array([[[10, 0, 255]]], np.uint8)
    out = blend(frame, np.zeros((1, 1), np.uint8), [[11, 1, 254]], 0.5)
    np.testing.assert_array_equal(out[0, 0], [11, 1, 255])


def test_boundary_mask_marks_one_side_of_each_edge():
    labels = np.zeros((6, 10), dtype=np.int64)
    labels[:, 5:] = 1
    m = boundary_mask(labels)
    assert m[:, 4].all() and m.sum() == 6  # column 4: its right neighbour is class 1
    labels[4:, :] = 2
    m = boundary_mask(labels)
    assert m[3, :].all()  # row 3: the row below is class 2
    assert not m[5, :].any()
    assert boundary_mask(labels, thickness=3).sum() > m.sum()


def test_present_classes_in_id_order_with_min_share():
    labels = np.zeros((100, 100), dtype=np.int64)
    labels[:10, :10] = 3  # 1 %
    labels[0, 0] = 4  # 0.01 %
    assert present_classes(labels, 5, min_share=0.001) == [0, 3]
    assert present_classes(labels, 5, min_share=0.0) == [0, 3, 4]


def _two_regions(h=240, w=320):
    labels = np.zeros((h, w), dtype=np.int64)
    labels[:, w // 2:] = 2
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return frame, labels


def test_renderer_pixel_away_from_boundaries_and_legend_is_the_blend():
    frame, labels = _two_regions()
    render = OverlayRenderer(PALETTE, NAMES, opacity=0.4)
    out = render(frame, labels)
    assert out.shape == frame.shape and out.dtype == np.uint8
    for y, x in [(200, 40), (230, 300), (120, 250), (150, 100)]:
        np.testing.assert_array_equal(out[y, x], _reference_blend(frame[y, x], PALETTE[labels[y, x]], 0.4))
    # The class boundary (column 159: its right neighbour is class 2) is drawn.
    assert (out[100:, 159] == BOUNDARY_COLOUR).all()
    # The legend sits top-left: both present classes' swatches are drawn in full colour.
    corner = out[:60, :120].reshape(-1, 3)
    for c in (0, 2):
        assert (corner == PALETTE[c]).all(axis=1).any(), f"no swatch of class {c}"
    assert not (corner == PALETTE[1]).all(axis=1).any()  # class 1 is absent: no swatch


def test_renderer_options_off_is_plain_blend_and_side_by_side():
    frame, labels = _two_regions(60, 90)
    plain = OverlayRenderer(PALETTE, NAMES, opacity=0.5, boundaries=False, legend=False)
    np.testing.assert_array_equal(plain(frame, labels), blend(frame, labels, PALETTE, 0.5))
    sbs = OverlayRenderer(PALETTE, NAMES, opacity=0.5, boundaries=False, legend=False,
                          side_by_side=True)
    out = sbs(frame, labels)
    assert out.shape == (60, 180, 3) and sbs.output_size(90, 60) == (180, 60)
    np.testing.assert_array_equal(out[:, :90], frame)
    np.testing.assert_array_equal(out[:, 90:], blend(frame, labels, PALETTE, 0.5))


def test_legend_with_many_classes_on_a_tiny_frame_stays_inside():
    k = 40
    rng = np.random.default_rng(2)
    labels = rng.integers(0, k, (30, 44))
    frame = rng.integers(0, 256, (30, 44, 3), dtype=np.uint8)
    render = OverlayRenderer(default_palette(k), [f"class number {i}" for i in range(k)])
    out = render(frame, labels)
    assert out.shape == (30, 44, 3)


def test_renderer_rejects_bad_arguments():
    with pytest.raises(ValueError):
        OverlayRenderer(PALETTE, NAMES, opacity=1.5)
    with pytest.raises(ValueError):
        OverlayRenderer(PALETTE, NAMES[:2])
    render = OverlayRenderer(PALETTE, NAMES)
    with pytest.raises(ValueError):
        render(np.zeros((4, 5, 3), np.uint8), np.zeros((5, 4), np.int64))


def test_only_the_chosen_classes_are_drawn():
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)
    labels = np.zeros((24, 30), np.int64)
    labels[:, 10:20] = 1
    labels[:, 20:] = 2
    labels[12:, 25:] = 3  # 2 and 3 meet: a boundary between two hidden classes
    full = OverlayRenderer(PALETTE, NAMES, opacity=0.5, legend=False)(frame, labels)
    only = OverlayRenderer(PALETTE, NAMES, opacity=0.5, legend=False, classes=[1])(frame, labels)
    edge = boundary_mask(np.where(labels == 1, 1, 9))  # class 1's outline only
    hidden = (labels != 1) & ~edge
    np.testing.assert_array_equal(only[hidden], frame[hidden])  # untouched, no 2|3 boundary
    np.testing.assert_array_equal(only[labels == 1], full[labels == 1])
    assert (only[edge] == BOUNDARY_COLOUR).all()
    # The legend lists the chosen classes only.
    with_legend = OverlayRenderer(PALETTE, NAMES, opacity=0.5, classes=[4])(frame, labels)
    np.testing.assert_array_equal(with_legend, frame)  # class 4 is absent: nothing drawn
    with pytest.raises(ValueError, match="class ids"):
        OverlayRenderer(PALETTE, NAMES, classes=[5])
