"""Segment a whole video into a colourised overlay video (the core of `tfcseg segment`).

    summary = segment_video("street.mp4")                  # -> street_tfcseg.mp4 beside it
    summary = segment_video("frames/", masks_dir="preds")  # + preds/frames/<frame>.png

Streaming end to end: a reader thread decodes a few frames ahead, the `VideoSegmenter`
holds one keyframe's state, the encoder takes frames as they are drawn. Every selected
input frame gives one output frame, at the source's exact frame rate (divided by `stride`).

Masks (`masks_dir`) are index PNGs in the VSPW layout `<masks_dir>/<video>/<frame>.png`,
with VSPW's mask encoding: value = class id + 1 (0 is VSPW's "others", never written), so
`tfcseg eval --predictions` reads them like ground-truth masks. 8-bit for up to 254
classes, 16-bit beyond. `<frame>` is the image's stem for image folders and the frame
index as `%05d` for video files; `<video>` is the input's stem (a VSPW `<video>/origin`
folder gives `<video>`).
"""

from __future__ import annotations

import collections
import queue
import re
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TaskProgressColumn,
                           TextColumn, TimeElapsedColumn, TimeRemainingColumn)
from rich.text import Text

from .errors import TfcsegError
from .data.masks import encode_labels
from .io.atomic import atomic_write_bytes
from .io.overlay import OverlayRenderer
from .io.video import Frame, FrameSource, VideoWriter, ensure_writable_folder, open_frames
from .metrics import FlickerRate
from .models.segformer import TFCSegFormer
from .runtime import BACKENDS, MODES, PRECISIONS, resolve_device
from .segmenter import VideoSegmenter

def parse_time(value: str | float | int | None, option: str = "--start") -> float | None:
    """Seconds from `12.5`, `1:02.5` or `0:01:02.5`; None stays None."""
    if value is None or isinstance(value, (int, float)):
        return None if value is None else float(value)
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d*)?|\.\d+", text):
        return float(text)
    m = re.fullmatch(r"(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d*)?)", text)
    if not m:
        raise TfcsegError(f"{option} {value}: not a time (use seconds like 12.5, or [HH:]MM:SS[.ss])")
    return int(m[1] or 0) * 3600 + int(m[2]) * 60 + float(m[3])


def default_output(source: FrameSource) -> Path:
    """`<input stem>_tfcseg.mp4` beside the input (beside the frames' folder for images)."""
    info = source.info
    where = info.path.parent if info.kind == "video" else (info.folder or info.path).resolve().parent
    return where / f"{info.name}_tfcseg.mp4"


class _DrawingThread:
    """Draws and encodes frames in a background thread, up to `maxsize` frames behind the
    model, so drawing and the encoder's pipe overlap with inference (NumPy, OpenCV and pipe
    writes release the GIL). An exception in the thread is re-raised by `put`/`finish`."""

    def __init__(self, draw, maxsize: int = 4) -> None:
        self._draw = draw
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tfcseg-draw", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stop.is_set():
                return
            try:
                self._draw(*item)
            except BaseException as exc:
                self._error = exc
                return

    def _put(self, item) -> None:
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def put(self, frame: Frame, labels: np.ndarray) -> None:
        self._put((frame, labels))

    def finish(self) -> None:
        """Wait until every queued frame is drawn."""
        self._put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Drop the queued frames and stop the thread (after the frame it is drawing)."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout=10)


class _RateColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("   ? frames/s" if speed is None else f"{speed:5.1f} frames/s", style="cyan")


def _progress(enabled: bool, console: Console | None) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TaskProgressColumn(), _RateColumn(), TimeElapsedColumn(), TextColumn("ETA"),
        TimeRemainingColumn(), console=console or Console(stderr=True), disable=not enabled,
    )


def segment_video(
    input: str | Path,
    output: str | Path | None = None,
    model: str | Path | TFCSegFormer | None = None,
    mode: str = "tfc",
    keyframe_interval: int = 4,
    opacity: float = 0.5,
    masks_dir: str | Path | None = None,
    side_by_side: bool = False,
    legend: bool = True,
    start: float | str | None = None,
    end: float | str | None = None,
    stride: int = 1,
    device: str | torch.device = "auto",
    overwrite: bool = False,
    progress: bool = True,
    *,
    fps: float | str | Fraction | None = None,
    short_side: int | None = None,
    precision: str = "fp32",
    console: Console | None = None,
    backend: str = "pytorch",
) -> dict[str, Any]:
    """Segment `input` (a video file, a folder of frames or a glob) into an overlay video.

    `model`: a registry name, a Hub id, a local checkpoint, a loaded `TFCSegFormer`, or None
    for the model shipped in `weights/`. `start`/`end`: seconds (or `[HH:]MM:SS`); `stride`:
    keep every N-th frame (the output's frame rate is divided by N so its duration is kept).
    `fps`: frame rate of an image sequence (default 30). `short_side`: inference size
    (default: the model's). `precision`: fp32, or bf16/fp16 autocast (bf16 on CPUs with
    AVX512-BF16 or AMX, both on GPUs; labels agree with fp32 on ~99.9% of pixels). `backend`:
    `pytorch`, or `onnxruntime` (the model's ONNX graphs in ONNX Runtime; an ONNX export
    runs as it is, any other model is exported once into tfcseg's cache; fp32; needs
    `pip install "tfcseg[onnx]"`). Returns the summary (also what `--json` writes); `warnings`
    lists lost frames and the like. User mistakes raise `TfcsegError`; the output appears
    under its final name only when complete.
    """
    if mode not in MODES:
        raise TfcsegError(f"mode {mode}: choose one of {', '.join(MODES)}", options=("mode",))
    if keyframe_interval < 1:
        raise TfcsegError(f"keyframe_interval must be 1 or more, not {keyframe_interval}",
                          options=("keyframe_interval",))
    if precision not in PRECISIONS:
        raise TfcsegError(f"precision {precision}: choose one of {', '.join(PRECISIONS)}",
                          options=("precision",))
    if backend not in BACKENDS:
        raise TfcsegError(f"backend {backend}: choose one of {', '.join(BACKENDS)}", options=("backend",))
    if backend == "onnxruntime" and precision != "fp32":
        raise TfcsegError(f"backend onnxruntime runs in fp32, not precision {precision}",
                          options=("backend", "precision"))
    if not 0.0 <= opacity <= 1.0:
        raise TfcsegError(f"opacity must be between 0 and 1, not {opacity}", options=("opacity",))
    start_s, end_s = parse_time(start, "--start"), parse_time(end, "--end")

    # Everything that can fail on the user's input fails here, before the model loads.
    source = open_frames(input, start=start_s, end=end_s, stride=stride, fps=fps)
    info = source.info
    out_path = Path(output).expanduser() if output is not None else default_output(source)
    if info.kind == "video" and out_path.resolve() == info.path.resolve():
        raise TfcsegError(f"{out_path}: the output would replace the input")
    renderer_size = (2 * info.width if side_by_side else info.width, info.height)
    writer = VideoWriter(out_path, *renderer_size, source.fps, overwrite=overwrite)
    mask_folder = None
    if masks_dir is not None:
        mask_folder = Path(masks_dir).expanduser() / info.name
        if mask_folder.is_dir() and any(mask_folder.glob("*.png")) and not overwrite:
            raise TfcsegError(f"{mask_folder}: holds masks already (use overwrite=True to replace them)",
                              options=("overwrite",))
        ensure_writable_folder(mask_folder)

    if backend == "onnxruntime":
        from .backends import resolve_backend_device

        dev = resolve_backend_device(device, backend)
    else:
        dev = resolve_device(device)
    if isinstance(model, TFCSegFormer) or getattr(model, "backend", None) == "onnxruntime":
        net, model_name = model, "(in memory)"
        if backend == "pytorch" and isinstance(model, TFCSegFormer):
            net = model.to(dev).eval()
    else:
        from .backends import load_backend_model

        net, model_name = load_backend_model(model, backend, dev), str(model) if model is not None else "default"
    try:
        segmenter = VideoSegmenter(net, keyframe_interval=keyframe_interval, mode=mode, device=dev,
                                   short_side=short_side, precision=precision, backend=backend)
    except ValueError as exc:
        raise TfcsegError(str(exc)) from None
    if dev.type == "cpu" and backend == "pytorch":  # a first run compiles the CPU kernels: before the clock starts
        from .ops import build

        build.load()
    cfg = net.config
    render = OverlayRenderer(cfg.palette, cfg.class_names, opacity=opacity, legend=legend,
                             side_by_side=side_by_side)

    pending: collections.deque = collections.deque()  # frames handed to the segmenter, not yet drawn

    def frames():
        for frame in source:
            pending.append(frame)
            yield frame.rgb

    n_frames = n_key = 0
    flicker = FlickerRate()
    shares: list[float] = []  # MSDA share of every non-keyframe
    t0 = time.perf_counter()
    with _progress(progress, console) as bar:
        task = bar.add_task(info.name, total=source.expected)

        def draw(frame: Frame, labels: np.ndarray) -> None:  # runs in the drawing thread
            writer.write(render(frame.rgb, labels))
            if mask_folder is not None:
                atomic_write_bytes(mask_folder / f"{frame.name}.png", encode_labels(labels, cfg.num_classes))
            bar.advance(task)

        sink = _DrawingThread(draw)
        try:
            for result in segmenter.segment(frames()):
                labels = np.asarray(result.labels)
                sink.put(pending.popleft(), labels)
                flicker.update(labels)
                n_frames += 1
                if result.is_keyframe:
                    n_key += 1
                else:
                    shares.append(float(result.msda_share))
            sink.finish()  # the last frames drawn; re-raises what failed in the thread
            writer.close()
        except BaseException:
            sink.abort()
            writer.abort()
            raise
        finally:
            source.close()
        if source.expected is not None and n_frames != source.expected:
            bar.update(task, total=n_frames)
    seconds = time.perf_counter() - t0

    out_w, out_h = writer.output_size
    return {
        "input": str(info.path),
        "output": str(out_path),
        "masks_dir": str(mask_folder) if mask_folder is not None else None,
        "frames": n_frames,
        "keyframes": n_key,
        "mean_msda_share": float(np.mean(shares)) if shares else None,
        "flicker": flicker.value(),
        "fps": n_frames / seconds if seconds > 0 else None,
        "seconds": seconds,
        "lost_frames": source.lost,
        "frame_rate": _rate_text(source.fps),
        "source_frame_rate": _rate_text(info.fps),
        "width": info.width,
        "height": info.height,
        "output_width": out_w,
        "output_height": out_h,
        "mode": mode,
        "keyframe_interval": segmenter.keyframe_interval,
        "precision": precision,
        "backend": backend,
        "model": model_name,
        "device": str(dev),
        "warnings": list(source.warnings),
    }


def _rate_text(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"
