"""Streaming segmentation metrics with the semantics of VSPW's official evaluation scripts.

Both accumulators hold a fixed amount of state (a K x (K+1) matrix; a few frames' worth of
arrays), whatever the size of the dataset.

- `ConfusionMatrix`: mIoU, wIoU (frequency-weighted IoU), per-class IoU, pixel accuracy.
- `VideoConsistency`: mVC_n, the video consistency of VSPW (Miao et al., CVPR 2021).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch


def _as_array(x: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class ConfusionMatrix:
    """Pixel counts `matrix[g, p]` of ground-truth class g predicted as p, over all frames.

    Conventions (those of VSPW's evaluator):
    - Only pixels with 0 <= gt < K count: pass ground truth after the remap (0 "others"
      and 255 void -> 255), so others and void pixels are ignored, as are stray values.
    - A prediction outside 0..K-1 is "no class": it is wrong for the pixel's GT class
      (counted in the GT total of that class) and a false positive of no class. It is kept
      in an extra column K. (VSPW's script would instead corrupt its bincount.)
    - IoU_c = TP_c / (GT_c + Pred_c - TP_c).
    - mIoU = mean of IoU_c over the classes present in the ground truth (GT_c > 0).
      A class that is only predicted lowers the IoU of the classes it is confused with,
      but does not enter the mean.
    - wIoU = sum over classes of (GT_c / sum GT) * IoU_c (frequency-weighted IoU).
    All results are fractions in 0..1; NaN when no pixel was counted.
    """

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, not {num_classes}")
        self.num_classes = int(num_classes)
        self.matrix = np.zeros((self.num_classes, self.num_classes + 1), np.int64)

    def reset(self) -> None:
        self.matrix[:] = 0

    def update(self, pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> None:
        """Add one frame (or a batch): `pred` class ids and `gt` labels of the same shape."""
        pred, gt = _as_array(pred), _as_array(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
        k = self.num_classes
        gt = gt.reshape(-1).astype(np.int64)
        pred = pred.reshape(-1).astype(np.int64)
        valid = (gt >= 0) & (gt < k)
        gt, pred = gt[valid], pred[valid]
        pred = np.where((pred >= 0) & (pred < k), pred, k)
        self.matrix += np.bincount(gt * (k + 1) + pred, minlength=k * (k + 1)).reshape(k, k + 1)

    def merge(self, other: "ConfusionMatrix") -> None:
        """Add another accumulator's counts (e.g. from another process)."""
        self.matrix += other.matrix

    @property
    def gt_pixels(self) -> np.ndarray:
        """GT_c: labelled pixels per class [K]."""
        return self.matrix.sum(1)

    def per_class_iou(self) -> np.ndarray:
        """IoU per class [K], NaN for classes absent from the ground truth."""
        tp = np.diag(self.matrix[:, : self.num_classes]).astype(np.float64)
        gt = self.gt_pixels.astype(np.float64)
        pred = self.matrix[:, : self.num_classes].sum(0).astype(np.float64)
        iou = np.full(self.num_classes, np.nan)
        present = gt > 0
        iou[present] = tp[present] / (gt[present] + pred[present] - tp[present])
        return iou

    def miou(self) -> float:
        iou = self.per_class_iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def wiou(self) -> float:
        gt = self.gt_pixels
        if gt.sum() == 0:
            return float("nan")
        iou = self.per_class_iou()
        present = gt > 0
        return float(np.sum(gt[present] / gt.sum() * iou[present]))

    def pixel_accuracy(self) -> float:
        total = self.matrix.sum()
        return float(np.trace(self.matrix[:, : self.num_classes]) / total) if total else float("nan")


class VideoConsistency:
    """mVC_n, computed as VSPW's official script does, streaming over frames.

    For a video of N frames (in name order) there are N - n windows, starting at
    i = 0 .. N-n-1 (the official `range(len(frames) - n)`: the window ending at the last
    frame is not counted, and a video with N <= n frames contributes nothing). For window i:
    G = pixels whose ground truth is the same in all frames i .. i+n-1, P = the same for
    the prediction; score_i = |P and G| / |G|.
    mVC_n = mean of score_i over every window of every video (pooled: long videos weigh
    more). A window with |G| = 0 scores NaN and is left out of the mean (the script's
    `np.nanmean`); `nan_windows` counts them.

    Values are compared raw, with no ignore mask: pass the ground-truth masks as stored
    (0 "others", 255 void and stray values included, before the training remap, which
    would merge 0 and 255) and predictions in any one-to-one encoding (class ids, or the
    same ids written +1 as in the saved PNGs: only equality between frames matters).

    State: per video, the previous frame of GT and prediction and, per pixel, how many
    consecutive frames up to the latest had the same value (capped at n), so memory is
    a few frames, whatever n and N are.

    Use `add_video(preds, gts)`, or `start_video()` then `update(pred, gt)` per frame.
    """

    def __init__(self, n: int) -> None:
        if n < 2:
            raise ValueError(f"n must be >= 2, not {n}")
        self.n = int(n)
        self.score_sum = 0.0   # sum of the finite window scores
        self.windows = 0       # windows with a finite score
        self.nan_windows = 0   # windows whose G was empty
        self.start_video()

    def start_video(self) -> None:
        """Begin a new video (the previous one, if any, is complete)."""
        self._frames = 0                          # frames seen in this video
        self._prev: tuple[np.ndarray, np.ndarray] | None = None  # (gt, pred) of the last frame
        self._run_gt: np.ndarray | None = None    # [H, W] uint8: length of the current GT run
        self._run_pred: np.ndarray | None = None  # [H, W] uint8: same for the prediction

    def update(self, pred: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> None:
        """Add the next frame of the current video (prediction and raw GT mask, same shape)."""
        pred, gt = _as_array(pred), _as_array(gt)
        if pred.shape != gt.shape:
            raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
        if self._prev is not None and gt.shape != self._prev[0].shape:
            raise ValueError(f"frame size {gt.shape} differs from the video's {self._prev[0].shape}")
        if self._frames >= self.n:
            # This frame exists, so the window of the n frames before it counts.
            g = self._run_gt >= self.n
            denom = int(g.sum())
            if denom == 0:
                self.nan_windows += 1
            else:
                self.score_sum += int((g & (self._run_pred >= self.n)).sum()) / denom
                self.windows += 1
        if self._prev is None:
            self._run_gt = np.ones(gt.shape, np.uint8)
            self._run_pred = np.ones(gt.shape, np.uint8)
        else:
            cap = np.uint8(self.n)
            self._run_gt = np.where(gt == self._prev[0], np.minimum(self._run_gt + 1, cap), 1).astype(np.uint8)
            self._run_pred = np.where(pred == self._prev[1], np.minimum(self._run_pred + 1, cap), 1).astype(np.uint8)
        self._prev = (gt.copy(), pred.copy())
        self._frames += 1

    def add_video(self, preds: Iterable[np.ndarray | torch.Tensor],
                  gts: Iterable[np.ndarray | torch.Tensor]) -> None:
        """Add a whole video: predictions and raw GT masks, frame by frame in order."""
        self.start_video()
        for pred, gt in zip(preds, gts, strict=True):
            self.update(pred, gt)
        self.start_video()

    def value(self) -> float:
        """mVC_n as a fraction in 0..1 (NaN when no window was scored)."""
        return self.score_sum / self.windows if self.windows else float("nan")


class FlickerRate:
    """Stability without labels: the mean share of pixels whose predicted label differs from
    the previous frame's, over every consecutive pair of frames of every video (pooled).

    0 is a frozen prediction; on steady footage lower is steadier, but real motion moves
    labels too, so compare methods on the same video, not against 0. State: the previous
    frame's labels of the current video.
    """

    def __init__(self) -> None:
        self.changed = 0.0  # sum over pairs of the share of changed pixels
        self.pairs = 0
        self._prev: np.ndarray | None = None

    def start_video(self) -> None:
        self._prev = None

    def update(self, labels: np.ndarray | torch.Tensor) -> None:
        """The next frame's labels [H, W] of the current video."""
        labels = _as_array(labels)
        if self._prev is not None:
            if labels.shape != self._prev.shape:
                raise ValueError(f"frame size {labels.shape} differs from the video's {self._prev.shape}")
            self.changed += float(np.count_nonzero(labels != self._prev)) / labels.size
            self.pairs += 1
        self._prev = labels.copy()

    def value(self) -> float | None:
        """The flicker rate as a fraction in 0..1 (None before two frames of one video)."""
        return self.changed / self.pairs if self.pairs else None
