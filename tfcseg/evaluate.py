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
    empty_videos                              videos of the split without any frame (skipped)
    mvc8_windows, mvc16_windows               windows the mVC means are over
    dataset, split, num_classes
and, for model runs: fps (model only: reading, scoring and the first frame's start-up
excluded), mode, keyframe_interval (K or "auto"), keyframe_policy (auto's settings, else
None), short_side, keyframes, keyframe_share (share of frames run as keyframes),
keyframes_on_change (auto: keyframes chosen by the similarity), mean_keyframe_interval (mean
gap between consecutive keyframes within a video), msda_share (mean share of points sparse
MSDA updated on non-keyframes), msda_threshold and msda_gate (None where MSDA did not run),
interpolation_power (p of the soft weight; None without one), label_hysteresis_power (q of
motion-aware hysteresis, 0: the same margin everywhere), label_hysteresis (the margin
used; 0: off).
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .data.masks import DataWarning, UnreadableFileError, read_mask, remap_label, write_labels
from .data.vspw import VSPWDataset
from .errors import TfcsegError, check_hysteresis_power, check_margin, check_power
from .metrics import ConfusionMatrix, FlickerRate, VideoConsistency
from .runtime import MODES

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
        out["empty_videos"] = list(self.dataset.empty_videos)
        out["skipped"] = [{"path": p, "reason": r} for p, r in self.dataset.skipped]
        for n, vc in self.consistency.items():
            out[f"mvc{n}_windows"] = vc.windows
        return out


# Stored values that are classes, per encoding (K classes), in words for the warning.
_ENCODING_RANGE = {"vspw": (1, "class k stored as k + 1"), "index": (0, "class k stored as k")}
OUT_OF_RANGE_WARN = 0.01  # share of predicted pixels holding no class that is worth a warning


def _no_class_share(values: np.ndarray, num_classes: int, encoding: str) -> float:
    low, _ = _ENCODING_RANGE[encoding]
    inside = values[low:low + num_classes].sum()
    return 1.0 - inside / max(values.sum(), 1)


def _check_encoding(values: np.ndarray, num_classes: int, encoding: str, where: Path) -> None:
    """Warn when many predicted pixels hold values that are no class in `encoding` (they
    count as wrong, and a wrong encoding scores near 0 without it), naming the encoding that
    fits better, if one does."""
    share = _no_class_share(values, num_classes, encoding)
    if share < OUT_OF_RANGE_WARN:
        return
    other = next(e for e in _ENCODING_RANGE if e != encoding)
    other_share = _no_class_share(values, num_classes, other)
    hint = (f"the {other} encoding ({_ENCODING_RANGE[other][1]}) fits them: were they written that way?"
            if other_share < share / 2 else "those pixels count as wrong")
    warnings.warn(f"{where}: {share:.1%} of the labelled pixels are predicted as values that are no class in the "
                  f"{encoding} encoding ({_ENCODING_RANGE[encoding][1]}, {num_classes} classes); {hint}",
                  DataWarning, stacklevel=3)


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
    keyframe_interval: int | str = 4,
    short_side: int | None = None,
    save_predictions: str | Path | None = None,
    progress: bool = True,
    precision: str = "fp32",
    overwrite: bool = False,
    backend: str | None = None,
    threads: int | str | None = None,
    *,
    keyframe_similarity: float | None = None,
    keyframe_changed_share: float | None = None,
    max_keyframe_interval: int | None = None,
    min_keyframe_interval: int | None = None,
    msda: bool | float | None = None,
    msda_gate: float | None = None,
    hysteresis: float | None = None,
    hysteresis_power: float | None = None,
    interpolation_power: float | None = None,
) -> dict[str, Any]:
    """Run `model` (a `TFCSegFormer`, on its own device) over every video of a split and
    score it with the official VSPW metrics (see the module docstring for the result).

    mode: `tfc`, `segformer` or `reuse` (see `tfcseg.segmenter.VideoSegmenter`); a new video
    starts with a keyframe. keyframe_interval: frames per keyframe, or "auto" (tuned by
    keyframe_similarity, keyframe_changed_share, max_keyframe_interval, min_keyframe_interval;
    see `tfcseg.segmenter.KeyframePolicy`). short_side: inference short side (default: the model's,
    480 = the paper's 480x853 for VSPW). save_predictions: a folder for the predicted index
    PNGs; a folder that holds predictions of the split's videos already is refused unless
    `overwrite` (which replaces the PNGs it writes, and nothing else). precision: fp32, or
    bf16/fp16 autocast. backend: pytorch, or onnxruntime (the model's ONNX graphs in ONNX
    Runtime; `model` may be an `OnnxRuntimeModel`); default: the model's own. msda: sparse MSDA
    as the model's config says (None), off, on, or on at a threshold (see
    `tfcseg.segmenter.with_msda`); msda_gate: the margin a label change by MSDA needs
    (None: the config's; `TFCOptions.msda_gate`). hysteresis: label hysteresis margin (None:
    the model's `label_hysteresis`; 0: off; see `tfcseg.postprocess.LabelHysteresis`).
    hysteresis_power: q of motion-aware hysteresis (None: the model's `label_hysteresis_power`;
    0: the same margin everywhere).
    interpolation_power: p of the soft interpolation weight (None: the config's;
    `TFCOptions.interpolation_power`). Frames with a missing or unreadable file are skipped with a
    `DataWarning`.
    """
    from .io.atomic import sweep_stale
    from .segmenter import VideoSegmenter, keyframe_schedule

    if short_side is not None and short_side < 0:
        raise TfcsegError(f"short_side must be 0 (the frames' own size) or a number of pixels, not {short_side}",
                          options=("short_side",))
    if mode not in MODES:
        raise TfcsegError(f"mode {mode}: choose one of {', '.join(MODES)}", options=("mode",))

    schedule = dict(keyframe_similarity=keyframe_similarity, keyframe_changed_share=keyframe_changed_share,
                    max_keyframe_interval=max_keyframe_interval, min_keyframe_interval=min_keyframe_interval)
    keyframe_schedule(keyframe_interval, **schedule)  # option mistakes before reading any data
    check_power(interpolation_power)
    check_margin(hysteresis, "hysteresis")
    check_hysteresis_power(hysteresis_power)
    dataset = VSPWDataset(root, split)
    if model.num_classes != dataset.num_classes:
        raise TfcsegError(
            f"{dataset.root}: the dataset has {dataset.num_classes} classes but the model predicts "
            f"{model.num_classes}; evaluate a model trained for this dataset's classes")
    try:
        segmenter = VideoSegmenter(model, keyframe_interval=keyframe_interval, mode=mode,
                                   short_side=short_side, precision=precision, backend=backend, threads=threads,
                                   msda=msda, msda_gate=msda_gate, hysteresis=hysteresis,
                                   hysteresis_power=hysteresis_power,
                                   interpolation_power=interpolation_power, **schedule)
    except TfcsegError:
        raise
    except ValueError as exc:
        raise TfcsegError(str(exc)) from None
    save_dir = Path(save_predictions).expanduser() if save_predictions is not None else None
    if save_dir is not None:
        data = (dataset.root / "data").resolve()
        if save_dir.resolve() == data or data in save_dir.resolve().parents:
            raise TfcsegError(f"{save_dir}: is inside the dataset's data/ folder; predictions would mix "
                              "with the frames and masks there: save them elsewhere")
        if save_dir.exists() and not save_dir.is_dir():
            raise TfcsegError(f"{save_dir}: is a file, not a folder for predictions")
        for video in dataset.videos:
            folder = save_dir / video
            if folder.is_dir():
                if any(folder.glob("*.png")) and not overwrite:
                    raise TfcsegError(f"{folder}: holds predictions already (use overwrite=True to replace "
                                      "them)", options=("overwrite",))
                sweep_stale(folder)  # what a killed earlier run left
    scores = _Scores(dataset)
    frame_lists = {video: dataset.frames(video) for video in dataset.videos}
    model_seconds, timed_frames, keyframes, msda_shares = 0.0, 0, 0, []
    on_change, gaps = 0, []  # keyframes chosen by the similarity; mean gap of each video
    with _progress(progress, sum(map(len, frame_lists.values())), f"eval {split}") as bar:
        for video, records in frame_lists.items():
            segmenter.reset()
            scores.start_video()
            key_indices = []
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
                if result.is_keyframe:
                    key_indices.append(result.index)
                    on_change += result.keyframe_reason == "change"
                else:
                    msda_shares.append(float(result.msda_share))
                scores.add(pred, pred, gt_raw, record.mask)
                if save_dir is not None:
                    # VSPW's encoding (class k as k + 1, 16-bit beyond 254 classes), coloured
                    write_labels(save_dir / video / f"{record.name}.png", pred, dataset.num_classes,
                                 dataset.palette)
            gaps.extend(np.diff(key_indices).tolist())
    out = scores.result()
    out.update({
        "fps": timed_frames / model_seconds if model_seconds > 0 else None,
        "mode": mode, "keyframe_interval": segmenter.keyframe_interval,
        "keyframe_policy": segmenter.policy.as_dict() if segmenter.policy is not None else None,
        "short_side": segmenter.short_side,
        "precision": precision, "backend": segmenter.backend,
        "keyframes": keyframes,
        "keyframe_share": keyframes / scores.frames,
        "keyframes_on_change": on_change if segmenter.policy is not None else None,
        "mean_keyframe_interval": float(np.mean(gaps)) if gaps else None,
        "msda_share": float(np.mean(msda_shares)) if msda_shares else 0.0,
        "msda_threshold": segmenter.msda_threshold,
        "msda_gate": segmenter.msda_gate,
        "interpolation_power": segmenter.interpolation_power,
        "label_hysteresis": segmenter.hysteresis.margin,
        "label_hysteresis_power": segmenter.hysteresis.power_in_use,
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
    if encoding not in PREDICTION_ENCODINGS:
        raise TfcsegError(f"prediction encoding must be one of {', '.join(PREDICTION_ENCODINGS)}, not {encoding!r}")
    pred_root = Path(predictions_dir)
    if not pred_root.is_dir():
        raise TfcsegError(f"{pred_root}: no such predictions folder")
    dataset = VSPWDataset(root, split)
    expected = f"expected <video>/<frame>.png, e.g. {dataset.videos[0]}/..."
    if not any(pred_root.rglob("*.png")):
        raise TfcsegError(f"{pred_root}: no prediction PNG in the folder ({expected})")
    offset = 1 if encoding == "vspw" else 0
    scores = _Scores(dataset)
    values = np.zeros(256, np.int64)  # how often each stored value is predicted on labelled pixels
    missing: list[Path] = []
    frame_lists = {video: dataset.frames(video) for video in dataset.videos}
    total = sum(map(len, frame_lists.values()))
    with _progress(progress, total, f"score {split}") as bar:
        for video, records in frame_lists.items():
            scores.start_video()
            for record in records:
                bar.advance()
                pred_path = pred_root / video / f"{record.name}.png"
                if not pred_path.is_file():  # counted, and said once at the end
                    missing.append(pred_path)
                    dataset.skipped.append((str(pred_path), "prediction mask not found (frame skipped)"))
                    continue
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
                # the values predicted where the ground truth has a class (elsewhere any goes)
                counts = np.bincount(pred_raw[(gt_raw >= 1) & (gt_raw <= dataset.num_classes)])
                if len(counts) > len(values):
                    values = np.pad(values, (0, len(counts) - len(values)))
                values[:len(counts)] += counts
                classes = pred_raw.astype(np.int64) - offset
                classes[(classes < 0) | (classes >= dataset.num_classes)] = -1
                scores.add(classes, pred_raw, gt_raw, record.mask)
    if scores.frames == 0:
        raise TfcsegError(f"{pred_root}: no prediction for any of the {total} frames of the {split} split "
                          f"({expected})")
    if missing:
        warnings.warn(f"{pred_root}: no prediction for {len(missing)} of {total} frames (the first: "
                      f"{missing[0]}); those frames are skipped", DataWarning, stacklevel=2)
    _check_encoding(values, dataset.num_classes, encoding, pred_root)
    out = scores.result()
    out["predictions"] = str(pred_root)
    out["encoding"] = encoding
    return out


__all__ = ["evaluate_model", "score_predictions", "MVC_LENGTHS", "PREDICTION_ENCODINGS"]
