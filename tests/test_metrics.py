"""Metrics against hand-computed cases and a literal rendering of VSPW's definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tfcseg.metrics import ConfusionMatrix, VideoConsistency


def test_confusion_matrix_hand_computed():
    cm = ConfusionMatrix(3)
    gt = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 0, 2]])
    cm.update(pred, gt)
    # class 0: GT 2, TP 1, predicted 2 (one on a GT-2 pixel) -> 1/3
    # class 1: GT 2, TP 2, predicted 3 -> 2/3; class 2: GT 1, TP 0, predicted 0 on labelled pixels -> 0
    np.testing.assert_allclose(cm.per_class_iou(), [1 / 3, 2 / 3, 0.0])
    assert cm.miou() == pytest.approx(1 / 3)
    assert cm.wiou() == pytest.approx(2 / 5 * 1 / 3 + 2 / 5 * 2 / 3)
    assert cm.pixel_accuracy() == pytest.approx(3 / 5)


def test_miou_averages_only_classes_present_in_ground_truth():
    cm = ConfusionMatrix(4)
    cm.update(torch.tensor([0, 3, 1, 1]), torch.tensor([0, 0, 1, 1]))
    iou = cm.per_class_iou()
    assert iou[0] == pytest.approx(0.5) and iou[1] == 1.0
    assert math.isnan(iou[2]) and math.isnan(iou[3])  # 3 is predicted but absent from GT
    assert cm.miou() == pytest.approx(0.75)
    assert cm.wiou() == pytest.approx(0.5 * 0.5 + 0.5 * 1.0)


def test_prediction_outside_the_classes_is_wrong_not_corrupting():
    cm = ConfusionMatrix(2)
    cm.update(np.array([0, 255, 1, -1]), np.array([0, 0, 1, 1]))
    np.testing.assert_allclose(cm.per_class_iou(), [0.5, 0.5])
    assert cm.matrix[:, :2].sum() == 2 and cm.matrix[:, 2].sum() == 2


def test_ignored_ground_truth_and_streaming():
    rng = np.random.default_rng(0)
    k = 5
    gts = [rng.integers(0, k, (7, 9)) for _ in range(4)]
    preds = [rng.integers(0, k, (7, 9)) for _ in range(4)]
    for g in gts:
        g[rng.random(g.shape) < 0.2] = 255
    streamed = ConfusionMatrix(k)
    for p, g in zip(preds, gts):
        streamed.update(p, g)
    # Reference: the definitions written out directly over all pixels at once.
    g, p = np.concatenate([x.ravel() for x in gts]), np.concatenate([x.ravel() for x in preds])
    keep = g < k
    g, p = g[keep], p[keep]
    ious = [np.sum((g == c) & (p == c)) / np.sum((g == c) | (p == c)) for c in range(k) if np.any(g == c)]
    weights = [np.mean(g == c) for c in range(k) if np.any(g == c)]
    assert streamed.miou() == pytest.approx(np.mean(ious))
    assert streamed.wiou() == pytest.approx(np.dot(weights, ious))
    empty = ConfusionMatrix(3)
    assert math.isnan(empty.miou()) and math.isnan(empty.wiou())


def test_video_consistency_hand_computed_windows():
    gt = [np.array([[1, 5]]), np.array([[1, 6]]), np.array([[1, 6]]), np.array([[2, 6]])]
    pred = [np.array([[0, 0]]), np.array([[0, 1]]), np.array([[1, 1]]), np.array([[1, 1]])]
    vc2 = VideoConsistency(2)
    vc2.add_video(pred, gt)
    # Windows start at 0 and 1 only (N - n = 2): scores 1/1 and 1/2. The window (2, 3),
    # which would score 1, is not counted.
    assert vc2.windows == 2 and vc2.value() == pytest.approx(0.75)
    vc3 = VideoConsistency(3)
    vc3.add_video(pred, gt)
    assert vc3.windows == 1 and vc3.value() == 0.0  # frames 0-2: G = {pixel 0}, P = {}
    vc4 = VideoConsistency(4)
    vc4.add_video(pred, gt)  # N = n: no window
    assert vc4.windows == 0 and math.isnan(vc4.value())


def test_video_consistency_pools_windows_and_skips_short_videos_and_empty_windows():
    vc = VideoConsistency(2)
    vc.add_video([np.array([[0, 0]]), np.array([[0, 1]]), np.array([[1, 1]]), np.array([[1, 1]])],
                 [np.array([[1, 5]]), np.array([[1, 6]]), np.array([[1, 6]]), np.array([[2, 6]])])
    vc.add_video([np.zeros((1, 2))] * 2, [np.zeros((1, 2))] * 2)  # N = 2 <= n: nothing
    assert vc.windows == 2
    # Video B: one window, G = both pixels, P = one -> 0.5.
    vc.add_video([np.array([[0, 0]]), np.array([[0, 1]]), np.array([[7, 7]])],
                 [np.array([[3, 3]]), np.array([[3, 3]]), np.array([[9, 9]])])
    # Video C: one window with an empty G: NaN, left out.
    vc.add_video([np.zeros((1, 2))] * 3, [np.array([[1, 2]]), np.array([[2, 1]]), np.array([[1, 2]])])
    assert vc.windows == 3 and vc.nan_windows == 1
    # Pooled over windows: (1 + 0.5 + 0.5) / 3, not the mean of video means (0.625).
    assert vc.value() == pytest.approx(2 / 3)


def test_video_consistency_compares_raw_values_without_ignore():
    # GT pixel 0 goes others (0) -> void (255): raw values differ, so it is not in G.
    # After the training remap both would be 255 and the pixel would count (score 1/2).
    gt = [np.array([[0, 7]], np.uint8), np.array([[255, 7]], np.uint8), np.array([[0, 7]], np.uint8)]
    pred = [np.array([[4, 4]]), np.array([[5, 4]]), np.array([[5, 4]])]
    vc = VideoConsistency(2)
    vc.add_video(pred, gt)
    assert vc.value() == 1.0


def _official_mvc(videos, n):
    """VSPW's definition written out literally: every window, AND over j of equality with
    frame i, |P & G| / |G|, nan-mean over all windows of all videos."""
    scores = []
    for preds, gts in videos:
        if len(gts) <= n:
            continue
        for i in range(len(gts) - n):
            g = np.ones(gts[0].shape, bool)
            p = np.ones(gts[0].shape, bool)
            for j in range(1, n):
                g &= gts[i] == gts[i + j]
                p &= preds[i] == preds[i + j]
            with np.errstate(invalid="ignore", divide="ignore"):
                scores.append((p & g).sum() / g.sum())
    return float(np.nanmean(scores)) if scores else float("nan")


@pytest.mark.parametrize("n", [2, 3, 8, 16])
def test_video_consistency_matches_the_literal_definition(n):
    rng = np.random.default_rng(n)
    videos = []
    for length in (3, 9, 17, 25, 8, 16):
        # Slowly changing labels, so windows hold consistent pixels.
        gt = [rng.integers(0, 3, (6, 5), dtype=np.uint8)]
        pred = [rng.integers(0, 3, (6, 5), dtype=np.uint8)]
        for _ in range(length - 1):
            g, p = gt[-1].copy(), pred[-1].copy()
            g[rng.random(g.shape) < 0.05] = rng.integers(0, 3)
            p[rng.random(p.shape) < 0.08] = rng.integers(0, 3)
            gt.append(g)
            pred.append(p)
        videos.append((pred, gt))
    vc = VideoConsistency(n)
    for pred, gt in videos:
        vc.start_video()
        for p, g in zip(pred, gt):
            vc.update(torch.from_numpy(p), g)
    expected = _official_mvc(videos, n)
    assert vc.windows > 0 and expected == pytest.approx(vc.value(), abs=1e-12)
    # Perfect predictions are perfectly consistent.
    perfect = VideoConsistency(n)
    for _, gt in videos:
        perfect.add_video(gt, gt)
    assert perfect.value() == 1.0


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differs"):
        ConfusionMatrix(2).update(np.zeros((2, 2)), np.zeros((2, 3)))
    vc = VideoConsistency(2)
    vc.update(np.zeros((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="frame size"):
        vc.update(np.zeros((3, 2)), np.zeros((3, 2)))


def test_flicker_rate_by_hand():
    from tfcseg.metrics import FlickerRate

    f = FlickerRate()
    assert f.value() is None
    a = np.zeros((2, 4), np.uint8)
    b = a.copy()
    b[0, :2] = 1  # 2 of 8 pixels change
    c = b.copy()
    c[:, :] = 3  # all 8 change
    for labels in (a, b, c):
        f.update(labels)
    assert f.value() == pytest.approx((2 / 8 + 8 / 8) / 2)
    f.start_video()  # a new video: no pair across the cut
    f.update(np.zeros((3, 3), np.uint8))
    f.update(np.zeros((3, 3), np.uint8))
    assert f.pairs == 3 and f.value() == pytest.approx((2 / 8 + 1 + 0) / 3)
    with pytest.raises(ValueError):
        f.update(np.zeros((2, 2), np.uint8))
