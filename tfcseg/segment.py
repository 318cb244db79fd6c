"""Segment a whole video into a colourised overlay video (the core of `tfcseg segment`).

    summary = segment_video("street.mp4")                  # -> street_tfcseg.mp4 beside it
    summary = segment_video("frames/", masks_dir="preds")  # + preds/frames/<frame>.png

Streaming end to end: a reader thread decodes a few frames ahead, the `VideoSegmenter`
holds one keyframe's state, the encoder takes frames as they are drawn. Every selected
input frame gives one output frame, at its own presentation time: the output keeps the
source's timing (a variable frame rate stays variable), pixel aspect and audio (cut to the
frames written). A live source (camera, stream) is read until it ends or Ctrl-C, and the
output is then finished, complete and playable. `segment_videos` runs many inputs, one
output each; a failure is reported in its summary and the others go on.

Masks (`masks_dir`) are index PNGs in the VSPW layout `<masks_dir>/<video>/<frame>.png`,
written into a fresh folder swapped in when complete (a rerun never mixes old and new masks;
a folder holding or inside the input is refused),
with VSPW's mask encoding: value = class id + 1 (0 is VSPW's "others", never written), so
`tfcseg eval --predictions` reads them like ground-truth masks. 8-bit for up to 254
classes, 16-bit beyond. `<frame>` is the image's stem for image folders and the frame
index as `%05d` for video files; `<video>` is the input's stem (a VSPW `<video>/origin`
folder gives `<video>`).
"""

from __future__ import annotations

import collections
import logging
import contextlib
import queue
import re
import signal
import threading
import time
from collections.abc import Collection, Sequence
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

from .errors import TfcsegError, check_hysteresis_power, check_margin, check_power
from .data.masks import write_labels
from .io.atomic import AtomicFolder, is_temporary, sweep_stale
from .io.overlay import OverlayRenderer
from .io.video import (Frame, FrameSource, VideoInfo, VideoWriter, ensure_writable_folder, expand_sources,
                       open_frames)
from .metrics import FlickerRate
from .models.segformer import TFCSegFormer
from .runtime import BACKENDS, MODES, PRECISIONS, resolve_device
from .segmenter import VideoSegmenter, keyframe_schedule, mean_keyframe_interval

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

log = logging.getLogger(__name__)


def default_output(source: FrameSource) -> Path:
    """`<input stem>_tfcseg.mp4` beside the input (beside the frames' folder for images; in
    the current folder for a URL or camera)."""
    info = source.info
    if info.kind == "stream":
        where = Path(".")
    elif info.kind == "video":
        where = info.path.parent
    else:
        where = (info.folder or info.path).resolve().parent
    return where / f"{info.name}_tfcseg.mp4"


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_mask_folder(mask_folder: Path, info: VideoInfo, output: Path, overwrite: bool) -> None:
    """Refuse a masks folder that would destroy anything: one that holds the input (its
    frames, or the video file) or lies inside the input's frames folder, one that would hold
    the output video, one holding other files than masks; and masks already there without
    `overwrite`."""
    target = mask_folder.resolve()
    if info.kind == "images":
        frames = (info.folder or Path(info.path)).resolve()
        if target == frames:
            raise TfcsegError(f"{mask_folder}: is the folder of the input frames; the masks would replace "
                              "them: choose another folder for the masks")
        if _inside(target, frames):
            raise TfcsegError(f"{mask_folder}: is inside the folder of the input frames ({frames}): "
                              "choose another folder for the masks")
        if _inside(frames, target):
            raise TfcsegError(f"{mask_folder}: holds the input frames ({frames}); replacing it would "
                              "delete them: choose another folder for the masks")
    elif info.kind == "video" and _inside(Path(info.path).resolve(), target):
        raise TfcsegError(f"{mask_folder}: holds the input video ({info.path}); replacing it would "
                          "delete it: choose another folder for the masks")
    if _inside(output.resolve(), target):
        raise TfcsegError(f"{mask_folder}: the masks folder would replace the output video "
                          f"({output}); choose another folder for the masks")
    if target.exists():
        if not target.is_dir():
            raise TfcsegError(f"{mask_folder}: is a file, not a folder of masks")
        sweep_stale(target)  # a killed run's temporaries of single masks
        entries = [e for e in target.iterdir() if not is_temporary(e.name)]
        others = [e.name for e in entries if not (e.is_file() and e.suffix.lower() == ".png")]
        if others:
            raise TfcsegError(f"{mask_folder}: holds other files than masks ({', '.join(sorted(others)[:3])}); "
                              "it is never replaced: choose another folder for the masks")
        if entries and not overwrite:
            raise TfcsegError(f"{mask_folder}: holds masks already (use overwrite=True to replace them)",
                              options=("overwrite",))


def resolve_classes(classes: str | Sequence[str | int], class_names: Sequence[str]) -> list[int]:
    """Class ids from names (any case; spaces or underscores alike) or ids: `"road,car"`,
    `["road", 13]`. A name the model does not have is a TfcsegError listing its classes."""
    items = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else list(classes)
    items = [c for c in items if str(c).strip() != ""]
    if not items:
        raise TfcsegError("classes: name at least one class (e.g. road,car)", options=("classes",))

    def key(name: str) -> str:
        return re.sub(r"[\s_-]+", " ", str(name).strip().lower())

    by_name = {}
    for i, name in enumerate(class_names):
        by_name.setdefault(key(name), i)
    ids = []
    for item in items:
        if isinstance(item, int) or str(item).isdigit():
            cid = int(item)
            if not 0 <= cid < len(class_names):
                raise TfcsegError(f"classes: {item} is not a class id of this model (0..{len(class_names) - 1})",
                                  options=("classes",))
        elif key(item) in by_name:
            cid = by_name[key(item)]
        else:
            shown = ", ".join(class_names[:20]) + (", ..." if len(class_names) > 20 else "")
            raise TfcsegError(f"classes: {item!s} is not a class of this model (its classes: {shown})",
                              options=("classes",))
        if cid not in ids:
            ids.append(cid)
    return ids


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
            try:  # polled: a wakeup lost to a signal in the main thread cannot hang it
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
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
    keyframe_interval: int | str = 4,
    opacity: float = 0.5,
    masks_dir: str | Path | None = None,
    side_by_side: bool = False,
    legend: bool = True,
    start: float | str | None = None,
    end: float | str | None = None,
    stride: int = 1,
    device: str | torch.device = "auto",
    overwrite: bool = False,
    progress: bool | Progress = True,
    *,
    fps: float | str | Fraction | None = None,
    short_side: int | None = None,
    precision: str = "fp32",
    console: Console | None = None,
    keyframe_similarity: float | None = None,
    keyframe_changed_share: float | None = None,
    max_keyframe_interval: int | None = None,
    min_keyframe_interval: int | None = None,
    audio: bool = True,
    classes: str | Sequence[str | int] | None = None,
    realtime: bool = False,
    keep_outputs: Collection[Path] = (),
    backend: str | None = None,
    threads: int | str | None = "auto",
    msda: bool | float | None = None,
    msda_gate: float | None = None,
    hysteresis: float | None = None,
    interpolation_power: float | None = None,
    hysteresis_power: float | None = None,
) -> dict[str, Any]:
    """Segment `input` (a video file, a folder of frames, a glob, a URL or a camera) into an
    overlay video.

    `output`: a file (.mp4, .mov, .mkv), or a folder to hold the default name
    (`<input stem>_tfcseg.mp4`, by default beside the input). `model`: a registry name, a Hub
    id, a local checkpoint, a loaded `TFCSegFormer`, or None for the model shipped in
    `weights/`. `start`/`end`: seconds (or `[HH:]MM:SS`) of presentation time, what a player
    shows; `stride`: keep every N-th frame (each kept frame is shown until the next, so the
    duration is kept). `fps`: frame rate of an image sequence (default 30). `short_side`:
    inference size (default: the model's). `precision`: fp32, or bf16/fp16 autocast (bf16 on
    CPUs with AVX512-BF16 or AMX, both on GPUs; labels agree with fp32 on ~99.9% of pixels).
    `keyframe_interval`: frames per keyframe, or "auto" (keyframes where TFC's similarity
    says the scene changed; `keyframe_similarity`, `keyframe_changed_share`,
    `max_keyframe_interval` and `min_keyframe_interval` tune it, see
    `tfcseg.segmenter.KeyframePolicy`); the summary has `keyframe_indices` (0-based among the
    frames segmented) and `mean_keyframe_interval`. `audio`: copy the source's audio into the output (False: none). `classes`: draw only
    these classes (names or ids, e.g. "road,car"); the masks keep all. `realtime`: drop
    frames to keep up with a live source (counted in `dropped_frames`). `progress`: a bar,
    or a rich `Progress` to add this video's bar to. `keep_outputs`: files (and masks folders) this call
    must not replace (the outputs of earlier videos in a batch). Returns the summary (also what
    `--json` writes); `warnings` lists lost frames and the like. User mistakes raise
    `TfcsegError`; the output appears under its final name only when complete, as do the
    masks. A live source ends at the first Ctrl-C or SIGTERM (in the main thread) and still
    gives a complete output (`interrupted` is True). `backend`: `pytorch`, or `onnxruntime`
    (the model's ONNX graphs in ONNX Runtime; an ONNX export runs as it is, any other model is
    exported once into tfcseg's cache; fp32; needs `pip install "tfcseg[onnx]"`). `threads`:
    CPU threads, "auto" (PyTorch's count or one, whichever is faster now: see
    `VideoSegmenter`), or a count. `msda`: sparse MSDA as the model's config says (None), off,
    on, or on at a similarity threshold (`tfcseg.segmenter.with_msda`); `msda_gate`: the
    margin a label change by MSDA needs (None: the config's). `hysteresis`: the logit margin
    by which a new class must lead a pixel's previous label to replace it (None: the model's
    `label_hysteresis`; 0: off; `tfcseg.postprocess.LabelHysteresis`). `hysteresis_power`: q of
    motion-aware hysteresis (None: the model's `label_hysteresis_power`; 0: the same margin
    everywhere). `interpolation_power`: p of the soft interpolation weight (None: the config's;
    `TFCOptions.interpolation_power`).
    """
    if mode not in MODES:
        raise TfcsegError(f"mode {mode}: choose one of {', '.join(MODES)}", options=("mode",))
    schedule = dict(keyframe_similarity=keyframe_similarity, keyframe_changed_share=keyframe_changed_share,
                    max_keyframe_interval=max_keyframe_interval, min_keyframe_interval=min_keyframe_interval)
    keyframe_interval, _ = keyframe_schedule(keyframe_interval, **schedule)  # checked up front
    if precision not in PRECISIONS:
        raise TfcsegError(f"precision {precision}: choose one of {', '.join(PRECISIONS)}",
                          options=("precision",))
    if short_side is not None and short_side < 0:
        raise TfcsegError(f"short_side must be 0 (the frames' own size) or a number of pixels, not {short_side}",
                          options=("short_side",))
    backend = backend or getattr(model, "backend", "pytorch")  # an OnnxRuntimeModel runs on its own
    if backend not in BACKENDS:
        raise TfcsegError(f"backend {backend}: choose one of {', '.join(BACKENDS)}", options=("backend",))
    if backend == "onnxruntime" and precision != "fp32":
        raise TfcsegError(f"backend onnxruntime runs in fp32, not precision {precision}",
                          options=("backend", "precision"))
    if not 0.0 <= opacity <= 1.0:
        raise TfcsegError(f"opacity must be between 0 and 1, not {opacity}", options=("opacity",))
    start_s, end_s = parse_time(start, "--start"), parse_time(end, "--end")
    check_margin(hysteresis, "hysteresis")
    check_hysteresis_power(hysteresis_power)
    check_margin(msda_gate, "msda_gate")
    check_power(interpolation_power)

    # Everything that can fail on the user's input fails here, before the model loads.
    source = open_frames(input, start=start_s, end=end_s, stride=stride, fps=fps,
                         realtime=realtime, capture_audio=audio)
    info = source.info
    out_path = Path(output).expanduser() if output is not None else default_output(source)
    if out_path.is_dir():
        out_path = out_path / default_output(source).name
    if info.kind == "video" and out_path.resolve() == Path(info.path).resolve():
        raise TfcsegError(f"{out_path}: the output would replace the input")
    if any(out_path.resolve() == Path(p).resolve() for p in keep_outputs):
        raise TfcsegError(f"{out_path}: another input of this run was written there; give each "
                          "video its own output name")
    renderer_size = (2 * info.width if side_by_side else info.width, info.height)
    writer = VideoWriter(out_path, *renderer_size, source.fps, overwrite=overwrite,
                         time_base=info.time_base, sar=info.sar, audio=source.audio_source() if audio else None,
                         variable_rate=info.variable_rate or realtime)
    mask_folder = None
    if masks_dir is not None:
        mask_folder = Path(masks_dir).expanduser() / info.name
        if any(mask_folder.resolve() == Path(p).resolve() for p in keep_outputs):
            raise TfcsegError(f"{mask_folder}: another input of this run named {info.name} wrote its "
                              "masks there; give the videos different names or one masks folder each")
        check_mask_folder(mask_folder, info, out_path, overwrite)
        ensure_writable_folder(mask_folder.parent)

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
                                   short_side=short_side, precision=precision, backend=backend, threads=threads,
                                   msda=msda, msda_gate=msda_gate, hysteresis=hysteresis,
                                   hysteresis_power=hysteresis_power,
                                   interpolation_power=interpolation_power, **schedule)
    except TfcsegError:
        raise
    except ValueError as exc:
        raise TfcsegError(str(exc)) from None
    if dev.type == "cpu" and backend == "pytorch":  # a first run compiles the CPU kernels: before the clock starts
        from .ops import build

        build.load()
    cfg = net.config
    shown = resolve_classes(classes, cfg.class_names) if classes is not None else None
    render = OverlayRenderer(cfg.palette, cfg.class_names, opacity=opacity, legend=legend,
                             side_by_side=side_by_side, classes=shown)

    pending: collections.deque = collections.deque()  # frames handed to the segmenter, not yet drawn

    def frames():
        for frame in source:
            pending.append(frame)
            yield frame.rgb

    n_frames = n_key = 0
    key_indices: list[int] = []  # frames run as keyframes
    n_on_change = 0  # of them, made keyframes by the similarity (auto)
    flicker = FlickerRate()
    shares: list[float] = []  # MSDA share of every non-keyframe
    masks = AtomicFolder(mask_folder) if mask_folder is not None else None  # swapped in when complete
    # Ctrl-C (or SIGTERM) ends a live source as its own end would: the output is finished.
    ending = _EndOnSignal(source if info.live else None)
    t0 = time.perf_counter()
    with _bar_context(progress, console) as bar:
        task = bar.add_task(info.name, total=source.expected)

        def draw(frame: Frame, labels: np.ndarray) -> None:  # runs in the drawing thread
            # Each kept frame is shown until the next one (stride N: N source frames).
            duration = frame.duration * stride if frame.duration is not None else None
            writer.write(render(frame.rgb, labels), frame.time, duration)
            if masks is not None:
                write_labels(masks.tmp / f"{frame.name}.png", labels, cfg.num_classes)
            bar.advance(task)

        sink = _DrawingThread(draw)
        ending.start()
        try:
            for result in segmenter.segment(frames()):
                labels = np.asarray(result.labels)
                sink.put(pending.popleft(), labels)
                flicker.update(labels)
                n_frames += 1
                if result.is_keyframe:
                    n_key += 1
                    key_indices.append(n_frames - 1)
                    n_on_change += result.keyframe_reason == "change"
                else:
                    shares.append(float(result.msda_share))
            ending.stop()
            source.close()  # a live source's saved audio is complete before it is muxed
            sink.finish()  # the last frames drawn; re-raises what failed in the thread
            writer.close()
            if masks is not None:
                masks.commit()
        except BaseException:
            sink.abort()
            writer.abort()
            if masks is not None:
                masks.abort()
            raise
        finally:
            ending.stop()
            source.close()
        if source.expected is not None and n_frames != source.expected:
            bar.update(task, total=n_frames)
        if isinstance(progress, Progress):
            bar.remove_task(task)
    seconds = time.perf_counter() - t0

    out_w, out_h = writer.output_size
    duration = float(writer.duration)
    return {
        "input": str(info.path),
        "output": str(out_path),
        "masks_dir": str(mask_folder) if mask_folder is not None else None,
        "frames": n_frames,
        "keyframes": n_key,
        "keyframe_indices": key_indices,
        "mean_keyframe_interval": mean_keyframe_interval(key_indices),
        "keyframes_on_change": n_on_change if segmenter.policy is not None else None,
        "mean_msda_share": float(np.mean(shares)) if shares else None,
        "flicker": flicker.value(),
        "fps": n_frames / seconds if seconds > 0 else None,
        "seconds": seconds,
        "lost_frames": source.lost,
        "dropped_frames": source.dropped,
        "interrupted": ending.fired,
        "frame_rate": _rate_text(source.fps),
        "variable_frame_rate": info.variable_rate,
        "average_frame_rate": n_frames / duration if duration > 0 else None,
        "source_frame_rate": _rate_text(info.fps),
        "duration": duration,
        "source_duration": info.duration,
        "audio_streams": writer.audio_streams,
        "width": info.width,
        "height": info.height,
        "output_width": out_w,
        "output_height": out_h,
        "sar": _rate_text(info.sar),
        "classes": [cfg.class_names[c] for c in shown] if shown is not None else None,
        "mode": mode,
        "keyframe_interval": segmenter.keyframe_interval,
        "keyframe_policy": segmenter.policy.as_dict() if segmenter.policy is not None else None,
        "msda_threshold": segmenter.msda_threshold,
        "msda_gate": segmenter.msda_gate,
        "interpolation_power": segmenter.interpolation_power,
        "label_hysteresis": segmenter.hysteresis.margin,
        "label_hysteresis_power": segmenter.hysteresis.power_in_use,
        "precision": precision,
        "backend": backend,
        "threads": segmenter.tuner.current if segmenter.tuner is not None else None,
        "model": model_name,
        "device": str(dev),
        "warnings": list(source.warnings) + writer.warnings,
    }


class _EndOnSignal:
    """While a live source is read (in the main thread): the first SIGINT or SIGTERM ends the
    source as its own end would, so the frames read so far are finished into a complete
    output; the handlers are then restored, and a second signal stops as usual."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, source: FrameSource | None) -> None:
        self.source = source
        self.fired = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        self.fired = True
        self._restore()
        self.source.end()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def start(self) -> None:
        if self.source is not None and threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                if (signum := getattr(signal, name, None)) is not None:
                    self._previous[signum] = signal.signal(signum, self._handle)

    def stop(self) -> None:
        self._restore()


def _bar_context(progress: bool | Progress, console: Console | None):
    """A new progress display, or the one a batch shows (its own bar added to it)."""
    if isinstance(progress, Progress):
        return contextlib.nullcontext(progress)
    return _progress(progress, console)


def segment_videos(
    inputs: str | Path | Sequence[str | Path],
    output_dir: str | Path | None = None,
    model: str | Path | TFCSegFormer | None = None,
    progress: bool = True,
    *,
    device: str | torch.device = "auto",
    console: Console | None = None,
    **options: Any,
) -> list[dict[str, Any]]:
    """Segment many videos: paths, folders of videos, globs of videos (a folder or glob of
    images is one video), URLs. One output each, into `output_dir` (created) or beside each
    input; the model is loaded once. Returns one summary per video, in order; a video that
    fails has `error` (the message) in its summary and the others go on. `options` are
    `segment_video`'s."""
    sources = expand_sources(inputs)
    if not sources:
        raise TfcsegError("no videos to segment")
    if output_dir is not None:
        out_dir = Path(output_dir).expanduser()
        if out_dir.exists() and not out_dir.is_dir():
            raise TfcsegError(f"{out_dir}: is a file, not a folder for the outputs")
        ensure_writable_folder(out_dir)
    backend = options.get("backend") or getattr(model, "backend", "pytorch")
    from .backends import load_backend_model, resolve_backend_device

    dev = resolve_backend_device(device, backend) if backend == "onnxruntime" else resolve_device(device)
    if isinstance(model, TFCSegFormer) or getattr(model, "backend", None) == "onnxruntime":
        net, model_name = model, "(in memory)"
    else:
        net, model_name = load_backend_model(model, backend, dev), str(model) if model is not None else "default"
    if options.get("classes") is not None:  # a mistake of the command, not of one video: said once
        resolve_classes(options["classes"], net.config.class_names)
    results: list[dict[str, Any]] = []
    written: list[Path] = []
    with _progress(progress, console) as bar:
        overall = bar.add_task("videos", total=len(sources))
        for text in sources:
            try:
                summary = segment_video(text, output_dir, net, device=dev, progress=bar if progress else False,
                                        console=console, keep_outputs=written, **options)
                summary["model"] = model_name
                summary["error"] = None
                written.append(Path(summary["output"]))
                if summary.get("masks_dir"):
                    written.append(Path(summary["masks_dir"]))
            except TfcsegError as exc:
                summary = {"input": text, "output": None, "error": f"{text}: {exc}",
                           "error_options": list(exc.options)}
            except Exception as exc:  # noqa: BLE001 - one video's failure must not stop the rest
                log.exception("segmenting %s failed", text)  # a bug: its traceback is kept
                summary = {"input": text, "output": None, "error": f"{text}: {type(exc).__name__}: {exc}",
                           "error_options": []}
            results.append(summary)
            bar.advance(overall)
    return results


def _rate_text(rate: Fraction) -> str:
    return str(rate.numerator) if rate.denominator == 1 else f"{rate.numerator}/{rate.denominator}"
