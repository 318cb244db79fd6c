"""Evaluation on a VSPW-layout split: run a model over whole videos, or score saved predictions.

Both paths go through the same accumulators (`tfcseg.metrics`) and give the same result
dict, so `evaluate_model(..., save_predictions=DIR)` followed by `score_predictions(root,
DIR)` reproduces the numbers exactly.

Saved predictions are index PNGs `<DIR>/<video>/<frame>.png` in the dataset's own mask
encoding: class k is stored as k + 1 (value 0 and 255 are never predicted), written as
palette PNGs coloured with the dataset's palette. So the ground-truth masks themselves are
perfect predictions (mIoU = 1, mVC = 1), and VSPW's official scripts, which read the PNGs
with PIL, see the same values. `score_predictions(..., encoding="index")` reads the other
common convention (class k stored as k).

Result dict (JSON-ready; a metric that is undefined, e.g. mVC16 when no video has more than
16 frames, is None):
    miou, wiou, mvc8, mvc16, pixel_accuracy   fractions in 0..1
    per_class_iou                             class name -> IoU, None if absent from the GT
    frames, videos                            frames and videos scored
    skipped_frames, skipped                   how many frames were left out, and why (path, reason)
    mvc8_windows, mvc16_windows               windows the mVC means are over
    dataset, split, num_classes
and, for model runs: fps (model only: reading, scoring and the first frame's start-up
excluded), mode, keyframe_interval, short_side, keyframe_share (share of frames run as
keyframes), msda_share (mean share of points sparse MSDA updated on non-keyframes).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .data.masks import DataWarning, UnreadableFileError, mask_palette, read_mask, remap_label, write_mask
from .data.vspw import VSPWDataset
from .errors import TfcsegError
from .metrics import ConfusionMatrix, FlickerRate, VideoConsistency

MVC_LENGTHS = (8, 16)
PREDICTION_ENCODINGS = ("vspw", "index")


class _Scores:
    """The accumulators of one evaluation and the counts beside them."""

    def __init__(self, dataset: VSPWDataset) -> None:
        self.dataset = dataset
        self.confusion = ConfusionMatrix(dataset.num_classes)
        self.consistency = {n: VideoConsistency(n) for n in MVC_LENGTHS}
        self.flicker = FlickerRate()
        self.frames = 0
        self.videos = 0
        self._video_frames = 0

    def start_video(self) -> None:
        for vc in self.consistency.values():
            vc.start_video()
        self.flicker.start_video()
        self._video_frames = 0

    def add(self, pred_classes: np.ndarray, pred_raw: np.ndarray, gt_raw: np.ndarray, mask_path: Path) -> None:
        """One frame: predicted class ids (-1 / out of range = none) for the IoUs, the
        prediction as stored and the GT mask as stored for mVC (raw values, see metrics)."""
        self.confusion.update(pred_classes, remap_label(gt_raw, self.dataset.num_classes, mask_path))
        for vc in self.consistency.values():
            vc.update(pred_raw, gt_raw)
        self.flicker.update(pred_raw)
        self.frames += 1
        self._video_frames += 1
        if self._video_frames == 1:
            self.videos += 1

    def result(self) -> dict[str, Any]:
        if self.frames == 0:
            raise TfcsegError(f"{self.dataset.root / (self.dataset.split + '.txt')}: no frame could be scored "
                              f"({len(self.dataset.skipped)} skipped)")
        iou = self.confusion.per_class_iou()
        out: dict[str, Any] = {
            "dataset": str(self.dataset.root), "split": self.dataset.split,
            "num_classes": self.dataset.num_classes,
            "miou": _finite(self.confusion.miou()), "wiou": _finite(self.confusion.wiou()),
        }
        for n, vc in self.consistency.items():
            out[f"mvc{n}"] = _finite(vc.value())
        out["flicker"] = self.flicker.value()  # share of pixels changing label frame to frame
        out["pixel_accuracy"] = _finite(self.confusion.pixel_accuracy())
        out["per_class_iou"] = {name: _finite(v) for name, v in zip(self.dataset.class_names, iou)}
        out["frames"] = self.frames
        out["videos"] = self.videos
        out["skipped_frames"] = len(self.dataset.skipped)
        out["skipped"] = [{"path": p, "reason": r} for p, r in self.dataset.skipped]
        for n, vc in self.consistency.items():
            out[f"mvc{n}_windows"] = vc.windows
        return out


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


@contextlib.contextmanager
def _progress(enabled: bool, total: int, description: str) -> Iterator[Any]:
    """A rich progress bar on stderr (a no-op object when disabled)."""
    if not enabled:
        class _Null:
            def advance(self) -> None:
                pass
        yield _Null()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)

        class _Bar:
            def advance(self) -> None:
                bar.advance(task)
        yield _Bar()


def evaluate_model(
    model,
    root: str | Path,
    split: str = "val",
    mode: str = "tfc",
    keyframe_interval: int = 4,
    short_side: int | None = None,
    save_predictions: str | Path | None = None,
    progress: bool = True,
    precision: str = "fp32",
    backend: str | None = None,
) -> dict[str, Any]:
    """Run `model` (a `TFCSegFormer`, on its own device) over every video of a split and
    score it with the official VSPW metrics (see the module docstring for the result).

    mode: `tfc`, `segformer` or `reuse` (see `tfcseg.segmenter.VideoSegmenter`); a new video
    starts with a keyframe. short_side: inference short side (default: the model's,
    480 = the paper's 480x853 for VSPW). save_predictions: a folder for the predicted index
    PNGs. precision: fp32, or bf16/fp16 autocast. backend: pytorch, or onnxruntime (the
    model's ONNX graphs in ONNX Runtime; `model` may be an `OnnxRuntimeModel`); default: the
    model's own. Frames with a missing or unreadable file are skipped with a `DataWarning`.
    """
    from .segmenter import VideoSegmenter

    dataset = VSPWDataset(root, split)
    if model.num_classes != dataset.num_classes:
        raise TfcsegError(
            f"{dataset.root}: the dataset has {dataset.num_classes} classes but the model predicts "
            f"{model.num_classes}; evaluate a model trained for this dataset's classes")
    try:
        segmenter = VideoSegmenter(model, keyframe_interval=keyframe_interval, mode=mode,
                                   short_side=short_side, precision=precision, backend=backend)
    except ValueError as exc:
        raise TfcsegError(str(exc)) from None
    save_dir = Path(save_predictions) if save_predictions is not None else None
    png_palette = mask_palette(dataset.palette)
    scores = _Scores(dataset)
    frame_lists = {video: dataset.frames(video) for video in dataset.videos}
    model_seconds, timed_frames, keyframes, msda_shares = 0.0, 0, 0, []
    with _progress(progress, sum(map(len, frame_lists.values())), f"eval {split}") as bar:
        for video, records in frame_lists.items():
            segmenter.reset()
            scores.start_video()
            for record in records:
                pair = dataset.read_frame(record)
                bar.advance()
                if pair is None:
                    continue
                rgb, gt_raw = pair
                start = time.perf_counter()
                result = segmenter.segment_frame(rgb)  # labels are on the CPU: timing is synchronised
                elapsed = time.perf_counter() - start
                if scores.frames > 0:  # the very first frame pays one-time start-up costs
                    model_seconds += elapsed
                    timed_frames += 1
                pred = result.labels
                keyframes += bool(result.is_keyframe)
                if not result.is_keyframe:
                    msda_shares.append(float(result.msda_share))
                scores.add(pred, pred, gt_raw, record.mask)
                if save_dir is not None:
                    write_mask(save_dir / video / f"{record.name}.png", pred.astype(np.uint8) + 1, png_palette)
    out = scores.result()
    out.update({
        "fps": timed_frames / model_seconds if model_seconds > 0 else None,
        "mode": mode, "keyframe_interval": segmenter.keyframe_interval, "short_side": segmenter.short_side,
        "precision": precision, "backend": segmenter.backend,
        "keyframe_share": keyframes / scores.frames,
        "msda_share": float(np.mean(msda_shares)) if msda_shares else 0.0,
    })
    return out


def score_predictions(
    root: str | Path,
    predictions_dir: str | Path,
    split: str = "val",
    encoding: str = "vspw",
    progress: bool = True,
) -> dict[str, Any]:
    """Score saved predictions `<predictions_dir>/<video>/<frame>.png` of any method against
    a split's ground truth, with the official VSPW metrics (the result as for
    `evaluate_model`, without the model fields).

    encoding: `vspw` (class k stored as k + 1, like the masks and like `evaluate_model`
    writes them) or `index` (class k stored as k). Values that are no class count as wrong
    for mIoU; mVC compares the stored values. A missing prediction file is skipped with a
    `DataWarning` and counted; a prediction of another size than its mask is an error.
    """
    import warnings

    if encoding not in PREDICTION_ENCODINGS:
        raise TfcsegError(f"prediction encoding must be one of {', '.join(PREDICTION_ENCODINGS)}, not {encoding!r}")
    pred_root = Path(predictions_dir)
    if not pred_root.is_dir():
        raise TfcsegError(f"{pred_root}: no such predictions folder")
    dataset = VSPWDataset(root, split)
    offset = 1 if encoding == "vspw" else 0
    scores = _Scores(dataset)
    frame_lists = {video: dataset.frames(video) for video in dataset.videos}
    with _progress(progress, sum(map(len, frame_lists.values())), f"score {split}") as bar:
        for video, records in frame_lists.items():
            scores.start_video()
            for record in records:
                bar.advance()
                pred_path = pred_root / video / f"{record.name}.png"
                try:
                    gt_raw = read_mask(record.mask)
                except UnreadableFileError as exc:
                    dataset.skipped.append((str(exc.path), exc.reason + " (frame skipped)"))
                    warnings.warn(f"{exc} (frame skipped)", DataWarning, stacklevel=2)
                    continue
                try:
                    pred_raw = read_mask(pred_path)
                except UnreadableFileError as exc:
                    dataset.skipped.append((str(exc.path), "prediction " + exc.reason + " (frame skipped)"))
                    warnings.warn(f"{exc.path}: prediction {exc.reason} (frame skipped)", DataWarning, stacklevel=2)
                    continue
                if pred_raw.shape != gt_raw.shape:
                    raise TfcsegError(
                        f"{pred_path}: prediction is {pred_raw.shape[1]}x{pred_raw.shape[0]} but the mask "
                        f"{record.mask} is {gt_raw.shape[1]}x{gt_raw.shape[0]}; predictions are scored "
                        "at the ground truth's size")
                classes = pred_raw.astype(np.int64) - offset
                classes[(classes < 0) | (classes >= dataset.num_classes)] = -1
                scores.add(classes, pred_raw, gt_raw, record.mask)
    if scores.frames == 0:
        raise TfcsegError(f"{pred_root}: no prediction PNG found for the {split} split "
                          f"(expected <video>/<frame>.png, e.g. {dataset.videos[0]}/...)")
    out = scores.result()
    out["predictions"] = str(pred_root)
    out["encoding"] = encoding
    return out


__all__ = ["evaluate_model", "score_predictions", "MVC_LENGTHS", "PREDICTION_ENCODINGS"]
