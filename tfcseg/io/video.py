"""Frames in and video out, streaming: one frame in memory at a time (plus a small queue).

Sources (`open_frames`): a video file of any format the bundled ffmpeg reads, a folder of
images, or a glob of images. Frames are H x W x 3 uint8 **RGB** everywhere. A reader thread
decodes ahead into a bounded queue, so decoding overlaps the model without ever holding the
video.

The frame rate is kept exact as a `Fraction` (29.97 is 30000/1001): ffmpeg's `showinfo`
filter reports the rate its decoder runs at (the stream's r_frame_rate, or its average rate
where that is the better guess), as a ratio of integers.

`VideoWriter` encodes H.264 yuv420p MP4 (plays in browsers) with the ffmpeg that
imageio-ffmpeg ships. yuv420p needs even sizes: an odd width or height is padded by one
pixel (the last column/row repeated); frames are never rescaled. The file is written under a
temporary name and renamed onto the final name only when the encoder finished cleanly.
"""

from __future__ import annotations

import collections
import glob as globlib
import math
import os
import queue
import re
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from ..errors import TfcsegError
from .atomic import UMASK, make_temp, sweep_stale, write_error

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# Containers that take H.264 -> ffmpeg muxer name.
OUTPUT_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
DEFAULT_IMAGE_FPS = Fraction(30)


def ffmpeg_exe() -> str:
    """The ffmpeg binary imageio-ffmpeg ships (or the one IMAGEIO_FFMPEG_EXE names)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


# ---- what a source is ---------------------------------------------------------------------


@dataclass
class VideoInfo:
    """What is known about a source before reading it.

    `frame_count` is exact for images; for video files it is the container's duration times
    the frame rate (an estimate: ffmpeg knows the true count only after decoding), or None.
    `width`/`height` are the decoded frames' size (after ffmpeg applies rotation metadata).
    """

    path: Path
    kind: str  # "video" | "images"
    name: str  # the video's name: file stem, folder name (VSPW `<video>/origin` -> `<video>`)
    width: int
    height: int
    fps: Fraction
    frame_count: int | None
    codec: str | None = None
    pix_fmt: str | None = None
    duration: float | None = None
    folder: Path | None = None  # images: the folder holding the frames

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height


@dataclass
class Frame:
    index: int  # position in the source (before --start/--stride selection)
    name: str  # file stem for images, %05d of `index` for video files
    rgb: np.ndarray  # [H, W, 3] uint8 RGB


# ---- probing video files --------------------------------------------------------------------

_RATE_RE = re.compile(r"config in time_base: \d+/\d+, frame_rate: (\d+)/(\d+)")
_FRAME_RE = re.compile(r"\bn:\s*0\b.*?\bs:(\d+)x(\d+)")
_DURATION_RE = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_FPS_RE = re.compile(r"(\d+(?:\.\d+)?) (?:fps|tbr)\b")


def _last_error_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "error" in ln.lower() or "invalid" in ln.lower() or "not found" in ln.lower():
            return re.sub(r"^\[[^\]]*\]\s*", "", ln)
    return re.sub(r"^\[[^\]]*\]\s*", "", lines[-1]) if lines else "no output from ffmpeg"


def _float_rate(rate: float) -> Fraction:
    """A Fraction for a rate ffmpeg printed rounded (29.97 -> 30000/1001, 25 -> 25)."""
    ntsc = round(rate * 1.001)
    if abs(Fraction(ntsc * 1000, 1001) - Fraction(rate)) < 0.006 and abs(ntsc - rate) > 0.006:
        return Fraction(ntsc * 1000, 1001)
    return Fraction(rate).limit_denominator(1000)


def parse_rate(value: Fraction | float | int | str) -> Fraction:
    """A frame rate as a Fraction: `15`, `30000/1001`, or a decimal (29.97 and 23.976 are
    read as the NTSC rates 30000/1001 and 24000/1001)."""
    try:
        if isinstance(value, Fraction):
            rate = value
        elif isinstance(value, str) and "/" in value:
            rate = Fraction(value.strip())
        else:
            rate = _float_rate(float(value))
    except (ValueError, ZeroDivisionError, OverflowError):
        raise TfcsegError(f"fps {value}: not a frame rate (use e.g. 15, 29.97 or 30000/1001)",
                          options=("fps",)) from None
    if rate <= 0:
        raise TfcsegError(f"fps must be positive, not {value}", options=("fps",))
    return rate


def probe_video(path: str | Path) -> VideoInfo:
    """Size, exact frame rate, codec and estimated frame count of a video file.

    Decodes the first frame (so a file with a video stream but no decodable frame is caught
    here). Raises a TfcsegError naming the path for a missing file, a file ffmpeg cannot
    read, a file without a video stream and a video with no frames.
    """
    path = Path(path)
    if not path.exists():
        raise TfcsegError(f"{path}: no such file")
    if path.is_dir():
        raise TfcsegError(f"{path}: is a folder, not a video file")
    if path.stat().st_size == 0:
        raise TfcsegError(f"{path}: the file is empty")
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-i", str(path),
           "-map", "0:v:0?", "-frames:v", "1", "-vf", "showinfo", "-f", "null", "-"]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=120)
    except subprocess.TimeoutExpired:
        raise TfcsegError(f"{path}: ffmpeg took over 2 minutes to open the file") from None
    text = proc.stderr.decode("utf-8", "replace")
    # Only the input section describes the source (the output section repeats streams).
    head = text.split("Stream mapping:", 1)[0]
    if "Input #0" not in head:
        raise TfcsegError(f"{path}: not a readable video ({_last_error_line(text)})")
    stream = next((ln for ln in head.splitlines() if re.search(r"Stream #0:\d+.*: Video: ", ln)), None)
    if stream is None:
        raise TfcsegError(f"{path}: the file has no video stream")
    frame = _FRAME_RE.search(text)
    if frame is None:
        raise TfcsegError(f"{path}: the video has no frames that can be decoded")
    width, height = int(frame[1]), int(frame[2])

    fps: Fraction | None = None
    if (m := _RATE_RE.search(text)) and int(m[1]) > 0 and int(m[2]) > 0:
        fps = Fraction(int(m[1]), int(m[2]))
    elif m := _FPS_RE.search(stream):
        fps = _float_rate(float(m[1]))
    if not fps:
        raise TfcsegError(f"{path}: ffmpeg reports no frame rate for the video stream")

    vid = stream.split(": Video: ", 1)[1]
    codec = vid.split()[0].rstrip(",")
    parts = re.split(r",\s*(?![^()]*\))", vid)
    pix_fmt = parts[1].split("(")[0].strip() if len(parts) > 1 else None

    duration = None
    if m := _DURATION_RE.search(head):
        duration = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
    count = max(1, round(duration * fps)) if duration else None
    return VideoInfo(path=path, kind="video", name=path.stem, width=width, height=height,
                     fps=fps, frame_count=count, codec=codec, pix_fmt=pix_fmt, duration=duration)


# ---- selection: --start / --end / --stride ---------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Frames first, first + stride, ... before `stop` (exclusive; None = to the end)."""

    first: int = 0
    stop: int | None = None
    stride: int = 1

    @classmethod
    def from_times(cls, fps: Fraction, start: float | None, end: float | None,
                   stride: int = 1) -> "Selection":
        """Frame i is shown at i / fps seconds: keep start <= i / fps < end."""
        if stride < 1:
            raise TfcsegError(f"stride must be 1 or more, not {stride}", options=("stride",))
        if start is not None and start < 0:
            raise TfcsegError(f"start must be 0 or more seconds, not {start}", options=("start",))
        if start is not None and end is not None and end <= start:
            raise TfcsegError(f"end ({end} s) must be after start ({start} s)", options=("end", "start"))
        # Fraction(str(x)) reads 1.1 as 11/10 exactly, so 1.1 s at 10 fps is frame 11.
        first = math.ceil(Fraction(str(start)) * fps) if start else 0
        stop = math.ceil(Fraction(str(end)) * fps) if end is not None else None
        return cls(first, stop, stride)

    def count(self, total: int | None) -> int | None:
        """How many frames of a source of `total` frames are selected (None: unknown)."""
        stop = self.stop if total is None else (total if self.stop is None else min(self.stop, total))
        if stop is None:
            return None
        return max(0, -(-(stop - self.first) // self.stride))

    def keeps(self, index: int) -> bool:
        return (index >= self.first and (index - self.first) % self.stride == 0
                and (self.stop is None or index < self.stop))

    @property
    def is_all(self) -> bool:
        return self.first == 0 and self.stop is None and self.stride == 1


# ---- reading ---------------------------------------------------------------------------------

_DONE = object()


class _Prefetcher:
    """Runs a frame generator in a daemon thread, `maxsize` frames ahead of the consumer.

    Exceptions raised by the generator are re-raised in the consumer. `close()` stops the
    thread even when the consumer leaves early (the producer polls a stop flag on a full queue).
    """

    def __init__(self, gen_fn, maxsize: int) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self._gen_fn = gen_fn
        self._thread = threading.Thread(target=self._run, name="tfcseg-frame-reader", daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        gen = self._gen_fn(self._stop)
        try:
            for item in gen:
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as exc:  # handed to the consumer, re-raised there
            self._put(exc)
        finally:
            gen.close()  # runs the generator's cleanup (stops ffmpeg) in this thread

    def __iter__(self) -> Iterator[Frame]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout=5)


class FrameSource:
    """An iterable of `Frame`s, read once, streaming.

    After iteration, `lost` is the number of selected frames that could not be read
    (a truncated or damaged video, unreadable image files) and `warnings` says which.
    Use as a context manager (or call `close()`) to stop the reader early.
    """

    def __init__(self, info: VideoInfo, selection: Selection, queue_size: int = 8) -> None:
        self.info = info
        self.selection = selection
        self.queue_size = queue_size
        self.lost = 0
        self.read = 0
        self.warnings: list[str] = []
        self._prefetcher: _Prefetcher | None = None

    @property
    def expected(self) -> int | None:
        """Frames the selection should give (an estimate for video files)."""
        return self.selection.count(self.info.frame_count)

    @property
    def fps(self) -> Fraction:
        """The rate of the selected frames (stride N divides it, so the duration is kept)."""
        return self.info.fps / self.selection.stride

    def _frames(self, stop: threading.Event) -> Iterator[Frame]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        if self._prefetcher is not None:
            raise RuntimeError("a FrameSource can be iterated only once")
        self._prefetcher = _Prefetcher(self._frames, self.queue_size)
        try:
            for frame in self._prefetcher:
                self.read += 1
                yield frame
        finally:
            self._prefetcher.close()

    def close(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.close()

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class VideoFileSource(FrameSource):
    """Frames of a video file decoded by ffmpeg, one raw RGB frame at a time from a pipe.

    `-fps_mode passthrough` makes every decoded frame come out exactly once (no frames
    duplicated or dropped to reach a constant rate); selection runs inside ffmpeg (`select`),
    so skipped frames are never piped.
    """

    def _frames(self, stop: threading.Event) -> Iterator[Frame]:
        info, sel = self.info, self.selection
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-v", "error",
               "-i", str(info.path), "-map", "0:v:0", "-an", "-sn", "-dn"]
        if not sel.is_all:
            expr = f"gte(n\\,{sel.first})*not(mod(n-{sel.first}\\,{sel.stride}))"
            cmd += ["-vf", f"select={expr}"]
        if sel.stop is not None:
            cmd += ["-frames:v", str(sel.count(None))]
        cmd += ["-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        # ffmpeg's error lines (bounded), collected by a thread so a chatty stderr never blocks.
        errors: collections.deque[str] = collections.deque(maxlen=20)
        err_thread = threading.Thread(
            target=lambda: errors.extend(ln.decode("utf-8", "replace").rstrip() for ln in proc.stderr),
            daemon=True)
        err_thread.start()
        nbytes = info.width * info.height * 3
        produced, partial = 0, False
        try:
            while not stop.is_set():
                got = _read_exactly(proc.stdout, buf := bytearray(nbytes))
                if got < nbytes:
                    partial = got > 0
                    break
                rgb = np.frombuffer(buf, np.uint8).reshape(info.height, info.width, 3)
                index = sel.first + produced * sel.stride
                produced += 1
                yield Frame(index, f"{index:05d}", rgb)
        finally:
            if proc.poll() is None and stop.is_set():
                proc.kill()
            proc.stdout.close()
            rc = proc.wait()
            err_thread.join(timeout=5)
            proc.stderr.close()
        if stop.is_set():
            return
        damaged = partial or rc != 0 or any(ln.strip() for ln in errors)
        expected = self.expected
        if damaged and (expected is None or produced < expected):
            first_error = next((ln for ln in errors if ln.strip()), f"ffmpeg exit status {rc}")
            first_error = re.sub(r"^\[[^\]]*\]\s*", "", first_error.strip()).rstrip(".")
            if expected is not None:
                self.lost = expected - produced
                self.warnings.append(
                    f"{info.path}: the video is truncated or damaged ({first_error}); "
                    f"{produced} of {expected} frames could be read, {self.lost} lost")
            else:
                self.warnings.append(
                    f"{info.path}: the video is truncated or damaged ({first_error}); "
                    f"{produced} frames could be read, an unknown number lost")
        if produced == 0:
            raise TfcsegError(f"{info.path}: no frame could be decoded"
                              + (" in the selected range" if not sel.is_all and not damaged else ""))


def _read_exactly(stream, buf: bytearray) -> int:
    """Fill `buf` from `stream`; fewer bytes only at the end of the stream."""
    view, got = memoryview(buf), 0
    while got < len(buf):
        n = stream.readinto(view[got:])
        if not n:
            break
        got += n
    return got


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def read_image_rgb(path: Path) -> np.ndarray | None:
    """An image file as [H, W, 3] uint8 RGB (grey, alpha and 16-bit converted), or None."""
    data = np.fromfile(str(path), np.uint8) if path.stat().st_size else None
    if data is None or data.size == 0:
        return None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class ImageSequenceSource(FrameSource):
    """Frames from image files, in natural name order. Unreadable files are skipped and
    counted as lost; a frame of another size than the first is an error naming the file."""

    def __init__(self, info: VideoInfo, files: list[Path], selection: Selection,
                 queue_size: int = 8) -> None:
        super().__init__(info, selection, queue_size)
        self.files = files

    def _frames(self, stop: threading.Event) -> Iterator[Frame]:
        bad: list[Path] = []
        produced = 0
        for index, path in enumerate(self.files):
            if stop.is_set():
                return
            if not self.selection.keeps(index):
                continue
            rgb = read_image_rgb(path)
            if rgb is None:
                bad.append(path)
                continue
            if rgb.shape[:2] != (self.info.height, self.info.width):
                raise TfcsegError(
                    f"{path}: frame size {rgb.shape[1]}x{rgb.shape[0]} differs from the first "
                    f"frame's {self.info.width}x{self.info.height}")
            produced += 1
            yield Frame(index, path.stem, rgb)
        if bad:
            self.lost = len(bad)
            more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
            self.warnings.append(f"{len(bad)} unreadable image(s) skipped: "
                                 + ", ".join(str(p) for p in bad[:3]) + more)
        if produced == 0:
            raise TfcsegError(f"{self.info.path}: none of the selected image files can be read")


def _sequence_name(folder: Path) -> str:
    """VSPW keeps frames in `<video>/origin/`: name such a sequence after `<video>`."""
    folder = folder.resolve()
    return folder.parent.name if folder.name == "origin" and folder.parent.name else folder.name


def _image_files(pattern_or_dir: str | Path) -> tuple[list[Path], Path]:
    p = Path(pattern_or_dir)
    if p.is_dir():
        files = [f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise TfcsegError(f"{p}: no image frames in the folder (looked for "
                              f"{', '.join(IMAGE_SUFFIXES)})")
        return sorted(files, key=_natural_key), p
    files = [Path(f) for f in globlib.glob(str(p)) if Path(f).is_file()]
    images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        what = "no files" if not files else "no image files"
        raise TfcsegError(f"{p}: {what} match the pattern")
    parents = {f.parent.resolve() for f in images}
    folder = parents.pop() if len(parents) == 1 else Path(os.path.commonpath([str(q) for q in parents]))
    return sorted(images, key=lambda f: (str(f.parent), _natural_key(f))), folder


def is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def open_frames(source: str | Path, start: float | None = None, end: float | None = None,
                stride: int = 1, fps: Fraction | float | str | None = None,
                queue_size: int = 8) -> FrameSource:
    """Open a video file, a folder of images or a glob of images as a `FrameSource`.

    `start`/`end` are seconds (frame i is at i / fps), `stride` keeps every N-th selected
    frame. `fps` is the rate of an image sequence (default 30); a video file keeps its own.
    Errors (missing path, not a video, no frames) are TfcsegErrors naming the path.
    """
    text = str(source)
    path = Path(source).expanduser()
    if path.is_file():
        info = probe_video(path)
        sel = Selection.from_times(info.fps, start, end, stride)
        src: FrameSource = VideoFileSource(info, sel, queue_size)
    elif path.is_dir() or (is_glob(text) and not path.exists()):
        files, folder = _image_files(path)
        rate = parse_rate(fps) if fps is not None else DEFAULT_IMAGE_FPS
        first = next((img for f in files if (img := read_image_rgb(f)) is not None), None)
        if first is None:
            raise TfcsegError(f"{path}: none of the {len(files)} image files can be read")
        info = VideoInfo(path=path, kind="images", name=_sequence_name(folder),
                         width=first.shape[1], height=first.shape[0], fps=rate,
                         frame_count=len(files), folder=folder)
        sel = Selection.from_times(rate, start, end, stride)
        src = ImageSequenceSource(info, files, sel, queue_size)
    else:
        raise TfcsegError(f"{path}: no such file or folder")
    if src.expected == 0:
        raise TfcsegError(f"{path}: no frames in the selected range (the source has "
                          f"{info.frame_count} frames at {info.fps} fps)")
    return src


# ---- writing -----------------------------------------------------------------------------------


def even_size(width: int, height: int) -> tuple[int, int]:
    """The size yuv420p can hold: odd sides grow by one pixel."""
    return width + width % 2, height + height % 2


def pad_to_even(rgb: np.ndarray) -> np.ndarray:
    """Repeat the last column/row where the width/height is odd (never rescales)."""
    h, w = rgb.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return rgb
    return np.pad(rgb, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def ensure_writable_folder(folder: Path) -> None:
    """Create `folder` if needed and prove a file can be made in it (TfcsegError if not)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise write_error(folder, exc, "cannot write there") from None


class VideoWriter:
    """H.264 yuv420p video, written under a temporary name and renamed on success.

    Frames go in as [H, W, 3] uint8 RGB of the size given here; odd sizes are padded by one
    pixel. `crf` is x264's constant rate factor (lower = better; 18 is visually lossless).

        with VideoWriter("out.mp4", width, height, Fraction(30000, 1001)) as w:
            for rgb in frames:
                w.write(rgb)
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: Fraction | int | float,
                 crf: int = 18, preset: str = "medium", overwrite: bool = False) -> None:
        self.path = Path(path)
        self.width, self.height = int(width), int(height)
        self.fps = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
        self.crf, self.preset = crf, preset
        self.frames = 0
        muxer = OUTPUT_FORMATS.get(self.path.suffix.lower())
        if muxer is None:
            raise TfcsegError(f"{self.path}: unsupported output format "
                              f"(use one of {', '.join(OUTPUT_FORMATS)})")
        if self.path.exists() and not overwrite:
            raise TfcsegError(f"{self.path}: exists already (use overwrite=True to replace it)",
                              options=("overwrite",))
        if self.path.is_dir():
            raise TfcsegError(f"{self.path}: is a folder")
        ensure_writable_folder(self.path.parent)
        sweep_stale(self.path.parent, self.path.name)  # what a killed earlier run left
        self._muxer = muxer
        self._proc: subprocess.Popen | None = None
        self._tmp: Path | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)

    @property
    def output_size(self) -> tuple[int, int]:
        return even_size(self.width, self.height)

    def open(self) -> "VideoWriter":
        try:
            self._tmp = make_temp(self.path)
        except OSError as exc:
            raise write_error(self.path, exc, "cannot write here") from None
        w, h = self.output_size
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-v", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
               "-framerate", f"{self.fps.numerator}/{self.fps.denominator}", "-i", "-",
               "-an", "-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf),
               # RGB -> BT.709 limited-range YUV, and tagged as such, so players decode the
               # colours that were encoded.
               "-vf", "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p",
               "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
               "-color_range", "tv"]
        if self._muxer in ("mp4", "mov"):
            cmd += ["-movflags", "+faststart"]  # index first: playback starts before download ends
        cmd += ["-f", self._muxer, str(self._tmp)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE)
        proc = self._proc
        self._err_thread = threading.Thread(
            target=lambda: self._stderr.extend(
                ln.decode("utf-8", "replace").rstrip() for ln in proc.stderr),
            daemon=True)
        self._err_thread.start()
        return self

    def write(self, rgb: np.ndarray) -> None:
        if self._proc is None:
            self.open()
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"expected a {self.height}x{self.width}x3 uint8 frame, "
                             f"got {rgb.shape} {rgb.dtype}")
        try:
            self._proc.stdin.write(np.ascontiguousarray(pad_to_even(rgb)).tobytes())
        except (BrokenPipeError, OSError):
            self._proc.wait()
            self._err_thread.join(timeout=5)
            raise TfcsegError(f"{self.path}: the encoder stopped ({self._error()})") from None
        self.frames += 1

    def _error(self) -> str:
        lines = [re.sub(r"^\[[^\]]*\]\s*", "", ln) for ln in self._stderr if ln.strip()]
        return lines[-1] if lines else f"ffmpeg exit status {self._proc.returncode}"

    def close(self) -> Path:
        """Finish the file and rename it onto the final name."""
        if self.frames == 0:
            self.abort()
            raise TfcsegError(f"{self.path}: no frames to write")
        proc = self._proc
        try:
            proc.stdin.close()
        except OSError:
            pass
        rc = proc.wait()
        self._err_thread.join(timeout=5)
        proc.stderr.close()
        if rc != 0:
            self.abort()
            raise TfcsegError(f"{self.path}: the encoder failed ({self._error()})")
        try:
            os.chmod(self._tmp, 0o666 & ~UMASK)
            os.replace(self._tmp, self.path)
        except OSError as exc:
            self.abort()
            raise write_error(self.path, exc) from None
        self._tmp = None
        return self.path

    def abort(self) -> None:
        """Stop the encoder and remove the temporary file; the final name is never touched."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            for pipe in (self._proc.stdin, self._proc.stderr):
                try:
                    pipe.close()
                except OSError:
                    pass
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
