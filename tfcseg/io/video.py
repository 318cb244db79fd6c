"""Frames in and video out, streaming: one frame in memory at a time (plus a small queue).

Sources (`open_frames`): a video file of any format the bundled ffmpeg reads, a folder of
images, a glob of images, or a stream ffmpeg opens: a URL (`rtsp://`, `http(s)://`, ...) or a
camera (`/dev/video0`, or an index). Frames are H x W x 3 uint8 **RGB** everywhere. A reader
thread decodes ahead into a bounded queue, so decoding overlaps the model without ever holding
the video.

Time is the frames' presentation time, as a player shows them: ffmpeg's `showinfo` filter
reports each decoded frame's timestamp and duration, so a variable-frame-rate video keeps
its timing, and `--start`/`--end` select frames by time (inside ffmpeg, with `trim`). The
nominal frame rate is kept exact as a `Fraction` (29.97 is 30000/1001).

`VideoWriter` encodes H.264 yuv420p MP4 (plays in browsers) with the ffmpeg that
imageio-ffmpeg ships. Frames reach the encoder in a minimal Matroska stream carrying each
frame's timestamp, so the output has the timing it is given (constant or variable). yuv420p
needs even sizes: an odd width or height is padded by one pixel (the last column/row
repeated); frames are never rescaled; the pixel aspect ratio (SAR) is kept. Audio is copied
from the source by a second ffmpeg pass (re-encoded to AAC only where the container cannot
hold it), cut to the frames written. The file is written under a temporary name and renamed
onto the final name only when everything finished cleanly.
"""

from __future__ import annotations

import collections
import errno as errno_codes
import glob as globlib
import math
import os
import queue
import re
import secrets
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from ..errors import TfcsegError
from .atomic import OS_ERROR_REASONS, UMASK, make_temp, sweep_stale, write_error

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# What a folder or a glob of videos is made of (a single file of any name is read as a video).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
                  ".m2ts", ".wmv", ".flv", ".3gp", ".ogv", ".mxf", ".y4m")
# Containers that take H.264 -> ffmpeg muxer name.
OUTPUT_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
DEFAULT_IMAGE_FPS = Fraction(30)
# Audio codecs that MP4 players (browsers included) play; others are re-encoded to AAC there.
MP4_AUDIO = ("aac", "mp3", "ac3", "eac3", "opus", "flac", "alac")


def ffmpeg_exe() -> str:
    """The ffmpeg binary imageio-ffmpeg ships (or the one IMAGEIO_FFMPEG_EXE names)."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


# ---- what a source is ---------------------------------------------------------------------


@dataclass
class VideoInfo:
    """What is known about a source before reading it.

    `path` is the file or folder, or for a stream the URL or device as given. `kind`:
    "video" (a local file), "images" (a folder or glob of frames) or "stream" (a URL or a
    camera). `fps` is the nominal rate (the stream's r_frame_rate) and `avg_fps` the average
    (frames over duration): they differ for a variable-frame-rate video. `frame_count` is
    exact for images; for videos it is the duration times `avg_fps` (an estimate: ffmpeg knows
    the true count only after decoding), or None (a live stream: no known length).
    `width`/`height` are the decoded frames' size (after ffmpeg applies rotation metadata);
    `sar` the pixel aspect ratio (the display is `width * sar` wide).
    """

    path: Path | str
    kind: str  # "video" | "images" | "stream"
    name: str  # the video's name: file stem, folder name (VSPW `<video>/origin` -> `<video>`)
    width: int
    height: int
    fps: Fraction
    frame_count: int | None
    codec: str | None = None
    pix_fmt: str | None = None
    duration: float | None = None
    folder: Path | None = None  # images: the folder holding the frames
    avg_fps: Fraction | None = None
    time_base: Fraction | None = None  # of the frames' timestamps (video and streams)
    sar: Fraction = Fraction(1)
    audio: tuple[str, ...] = ()  # codec of each audio stream
    input_args: tuple[str, ...] = ()  # ffmpeg options before `-i` (a camera's format)

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    @property
    def live(self) -> bool:
        """A stream without a known length (a camera, a live URL): read until it ends or
        the reader is stopped."""
        return self.kind == "stream" and self.duration is None

    @property
    def variable_rate(self) -> bool:
        """The average frame rate is not the nominal one: frames are not evenly spaced."""
        return self.avg_fps is not None and abs(self.avg_fps - self.fps) > self.fps / 100

    @property
    def display_aspect(self) -> Fraction:
        return Fraction(self.width) * self.sar / self.height


@dataclass
class Frame:
    index: int  # position in the source (before --start/--stride selection)
    name: str  # file stem for images, %05d of `index` for videos
    rgb: np.ndarray  # [H, W, 3] uint8 RGB
    time: Fraction | None = None  # presentation time in seconds, from the source's start
    duration: Fraction | None = None  # how long it is shown (None: unknown)


# ---- what names a source -----------------------------------------------------------------------

_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+")


def is_url(text: str) -> bool:
    return _URL_RE.fullmatch(str(text)) is not None


def camera_input(text: str) -> tuple[tuple[str, ...], str] | None:
    """(ffmpeg input options, device) for a camera named as `/dev/videoN` or by index N,
    None for anything else. An index is a camera only where no file of that name exists."""
    text = str(text)
    if re.fullmatch(r"/dev/video\d+", text):
        return ("-f", "v4l2"), text
    if not re.fullmatch(r"\d{1,2}", text) or Path(text).exists():
        return None
    if sys.platform.startswith("linux"):
        return ("-f", "v4l2"), f"/dev/video{text}"
    if sys.platform == "darwin":
        return ("-f", "avfoundation"), text
    raise TfcsegError(f"{text}: camera indexes work on Linux and macOS; on Windows name the "
                      "camera as ffmpeg's dshow input does (video=NAME)")


def is_stream(text: str) -> bool:
    """A URL or a camera, read through ffmpeg rather than from a local file."""
    return is_url(text) or (re.fullmatch(r"/dev/video\d+|\d{1,2}", str(text)) is not None
                            and not Path(str(text)).is_file())


def _stream_name(text: str) -> str:
    """A file-name-safe name for a URL or camera: the URL path's stem, else its host."""
    if (cam := re.fullmatch(r"(?:/dev/video)?(\d+)", text)) is not None:
        return f"camera{cam[1]}"
    rest = text.split("://", 1)[-1].split("?", 1)[0].split("#", 1)[0]
    host, _, path = rest.partition("/")
    stem = Path(path.rstrip("/")).stem if path.strip("/") else ""
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", stem or host.split("@")[-1]).strip("._")
    return name or "stream"


# ---- probing video files --------------------------------------------------------------------

_RATE_RE = re.compile(r"config in time_base: (\d+)/(\d+), frame_rate: (\d+)/(\d+)")
_FRAME_RE = re.compile(r"\bn:\s*0\b.*?\bsar:(\d+)/(\d+) s:(\d+)x(\d+)")
_DURATION_RE = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")
_AVG_FPS_RE = re.compile(r"(\d+(?:\.\d+)?) fps\b")
_TBR_RE = re.compile(r"(\d+(?:\.\d+)?) tbr\b")
_LEVEL_TAG_RE = re.compile(r"\[(?:info|warning|error|fatal|panic|verbose|debug)\]\s?")
_CONTEXT_RE = re.compile(r"^\[[^\]]*@ [^\]]*\]\s*|^\[(?:out|in|vf|af|vost|dec)#[^\]]*\]\s*")


def _clean_line(line: str) -> str:
    """An ffmpeg log line without its `[context @ 0x..]` and `[level]` prefixes."""
    line = _LEVEL_TAG_RE.sub("", line.strip(), count=1)
    return re.sub(r"^\[[^\]]*\]\s*", "", line).strip()


def _last_error_line(text: str) -> str:
    lines = [_clean_line(ln) for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if ln]
    for ln in reversed(lines):
        if "error" in ln.lower() or "invalid" in ln.lower() or "not found" in ln.lower():
            return ln
    return lines[-1] if lines else "no output from ffmpeg"


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
    """Size, frame rates, time base, pixel aspect, codec, audio streams and estimated frame
    count of a video file, a URL or a camera.

    Decodes the first frame (so a file with a video stream but no decodable frame is caught
    here). Raises a TfcsegError naming the source for a missing file, a file or URL ffmpeg
    cannot read, a source without a video stream and a video with no frames.
    """
    text = str(path)
    stream = is_stream(text)
    input_args: tuple[str, ...] = ()
    if stream:
        camera = camera_input(text)
        input_args, where = camera if camera is not None else ((), text)
        label: Path | str = text
    else:
        path = Path(path)
        label, where = path, str(path)
        if not path.exists():
            raise TfcsegError(f"{path}: no such file")
        if path.is_dir():
            raise TfcsegError(f"{path}: is a folder, not a video file")
        if path.stat().st_size == 0:
            raise TfcsegError(f"{path}: the file is empty")
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", *input_args, "-i", where,
           "-map", "0:v:0?", "-frames:v", "1", "-vf", "showinfo=checksum=0", "-f", "null", "-"]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, timeout=120)
    except subprocess.TimeoutExpired:
        raise TfcsegError(f"{label}: ffmpeg took over 2 minutes to open it") from None
    text_err = proc.stderr.decode("utf-8", "replace")
    # Only the input section describes the source (the output section repeats streams).
    head = text_err.split("Stream mapping:", 1)[0]
    if "Input #0" not in head:
        what = "not a readable video or stream" if stream else "not a readable video"
        raise TfcsegError(f"{label}: {what} ({_last_error_line(text_err)})")
    streams = [ln for ln in head.splitlines() if re.search(r"Stream #0:\d+.*?: (?:Video|Audio): ", ln)]
    video = next((ln for ln in streams if ": Video: " in ln), None)
    if video is None:
        raise TfcsegError(f"{label}: {'the stream' if stream else 'the file'} has no video stream")
    frame = _FRAME_RE.search(text_err)
    if frame is None:
        raise TfcsegError(f"{label}: the video has no frames that can be decoded")
    sar = Fraction(int(frame[1]), int(frame[2])) if int(frame[1]) > 0 and int(frame[2]) > 0 else Fraction(1)
    width, height = int(frame[3]), int(frame[4])

    fps: Fraction | None = None
    time_base: Fraction | None = None
    if m := _RATE_RE.search(text_err):
        if int(m[1]) > 0 and int(m[2]) > 0:
            time_base = Fraction(int(m[1]), int(m[2]))
        if int(m[3]) > 0 and int(m[4]) > 0:
            fps = Fraction(int(m[3]), int(m[4]))
    if not fps and (m := _TBR_RE.search(video) or _AVG_FPS_RE.search(video)):
        fps = _float_rate(float(m[1]))
    if not fps:
        raise TfcsegError(f"{label}: ffmpeg reports no frame rate for the video stream")
    avg_fps = _float_rate(float(m[1])) if (m := _AVG_FPS_RE.search(video)) and float(m[1]) > 0 else None

    vid = video.split(": Video: ", 1)[1]
    codec = vid.split()[0].rstrip(",")
    parts = re.split(r",\s*(?![^()]*\))", vid)
    pix_fmt = parts[1].split("(")[0].strip() if len(parts) > 1 else None
    audio = tuple(ln.split(": Audio: ", 1)[1].split()[0].rstrip(",") for ln in streams if ": Audio: " in ln)

    duration = None
    if m := _DURATION_RE.search(head):
        duration = int(m[1]) * 3600 + int(m[2]) * 60 + float(m[3])
    count = max(1, round(duration * (avg_fps or fps))) if duration else None
    if stream:
        return VideoInfo(path=text, kind="stream", name=_stream_name(text), width=width,
                         height=height, fps=fps, frame_count=count, codec=codec, pix_fmt=pix_fmt,
                         duration=duration, avg_fps=avg_fps, time_base=time_base, sar=sar,
                         audio=audio, input_args=input_args)
    return VideoInfo(path=path, kind="video", name=path.stem, width=width, height=height,
                     fps=fps, frame_count=count, codec=codec, pix_fmt=pix_fmt, duration=duration,
                     avg_fps=avg_fps, time_base=time_base, sar=sar, audio=audio)


# ---- selection: --start / --end / --stride ---------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Frames shown from `start` (inclusive) to `end` (exclusive) seconds, every `stride`-th.

    `first`/`stop` are the same range as frame indexes at a constant rate (exact for image
    sequences, an estimate for videos, whose frames are selected by their timestamps)."""

    first: int = 0
    stop: int | None = None
    stride: int = 1
    start: Fraction | None = None
    end: Fraction | None = None

    @classmethod
    def from_times(cls, fps: Fraction, start: float | None, end: float | None,
                   stride: int = 1) -> "Selection":
        """At a constant rate frame i is shown at i / fps seconds: keep start <= i / fps < end."""
        if stride < 1:
            raise TfcsegError(f"stride must be 1 or more, not {stride}", options=("stride",))
        if start is not None and start < 0:
            raise TfcsegError(f"start must be 0 or more seconds, not {start}", options=("start",))
        if start is not None and end is not None and end <= start:
            raise TfcsegError(f"end ({end} s) must be after start ({start} s)", options=("end", "start"))
        # Fraction(str(x)) reads 1.1 as 11/10 exactly, so 1.1 s at 10 fps is frame 11.
        start_f = Fraction(str(start)) if start else None
        end_f = Fraction(str(end)) if end is not None else None
        first = math.ceil(start_f * fps) if start_f else 0
        stop = math.ceil(end_f * fps) if end_f is not None else None
        return cls(first, stop, stride, start_f, end_f)

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
        return self.first == 0 and self.stop is None and self.stride == 1 and not self.start


# ---- reading ---------------------------------------------------------------------------------

_DONE = object()


class _Prefetcher:
    """Runs a frame generator in a daemon thread, `maxsize` frames ahead of the consumer.

    Exceptions raised by the generator are re-raised in the consumer. `close()` stops the
    thread even when the consumer leaves early (the producer polls a stop flag on a full queue).
    With `drop_oldest` a full queue never blocks the producer: the oldest waiting frame is
    dropped (counted in `dropped`), so a slow consumer always gets recent frames.
    """

    def __init__(self, gen_fn, maxsize: int, drop_oldest: bool = False) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self._gen_fn = gen_fn
        self._drop_oldest = drop_oldest
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="tfcseg-frame-reader", daemon=True)
        self._thread.start()

    def _put(self, item, droppable: bool = False) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                if droppable and self._drop_oldest:
                    try:
                        self._queue.get_nowait()  # only frames wait before the end marker
                        self.dropped += 1
                    except queue.Empty:
                        pass
        return False

    def _run(self) -> None:
        gen = self._gen_fn(self._stop)
        try:
            for item in gen:
                if not self._put(item, droppable=True):
                    return
            self._put(_DONE)
        except BaseException as exc:  # handed to the consumer, re-raised there
            self._put(exc)
        finally:
            gen.close()  # runs the generator's cleanup (stops ffmpeg) in this thread

    def __iter__(self) -> Iterator[Frame]:
        while True:
            try:  # polled: a wakeup lost to a signal in the main thread cannot hang it
                item = self._queue.get(timeout=0.1)
            except queue.Empty:
                if not self._thread.is_alive() and self._queue.empty():
                    return  # stopped
                continue
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def stop(self) -> None:
        self._stop.set()

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
    (a truncated or damaged video, unreadable image files) and `warnings` says which;
    `dropped` counts the frames left out to keep up with the source (`realtime`).
    Use as a context manager (or call `close()`) to stop the reader early.
    """

    def __init__(self, info: VideoInfo, selection: Selection, queue_size: int = 8,
                 realtime: bool = False) -> None:
        self.info = info
        self.selection = selection
        self.queue_size = queue_size
        self.realtime = realtime
        self.lost = 0
        self.read = 0
        self.warnings: list[str] = []
        self.audio_capture: Path | None = None  # a live source's audio, saved while reading
        self._prefetcher: _Prefetcher | None = None
        self._ended = threading.Event()

    @property
    def dropped(self) -> int:
        return self._prefetcher.dropped if self._prefetcher is not None else 0

    @property
    def expected(self) -> int | None:
        """Frames the selection should give (an estimate for videos, None for live streams)."""
        return self.selection.count(self.info.frame_count)

    @property
    def fps(self) -> Fraction:
        """The nominal rate of the selected frames (stride N divides it, so the duration is kept)."""
        return self.info.fps / self.selection.stride

    def _frames(self, stop: threading.Event) -> Iterator[Frame]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[Frame]:
        if self._prefetcher is not None:
            raise RuntimeError("a FrameSource can be iterated only once")
        self._prefetcher = _Prefetcher(self._frames, self.queue_size, drop_oldest=self.realtime)
        try:
            for frame in self._prefetcher:
                self.read += 1
                yield frame
        finally:
            self.close()

    def _stop_reading(self) -> None:
        """Unblock a reader waiting on its input (a stalled stream)."""

    def end(self) -> None:
        """End the source as at its own end: the frames read so far still come out, then
        iteration stops normally (Ctrl-C on a live source). Safe in a signal handler."""
        self._ended.set()
        self._stop_reading()

    def close(self) -> None:
        if self._prefetcher is not None:
            self._prefetcher.stop()
            self._stop_reading()
            self._prefetcher.close()

    def audio_source(self) -> AudioSource | None:
        """Where the audio of this source is read from for an output (None: no audio). A
        live source's audio is its capture, saved while reading (removed by the writer)."""
        if not self.info.audio:
            return None
        if self.audio_capture is not None:
            return AudioSource(str(self.audio_capture), (), self.info.audio, temporary=True)
        if self.info.live:
            return None
        return AudioSource(str(self.info.path), self.info.input_args, self.info.audio)

    def remove_temporaries(self) -> None:
        """Remove what the reader saved on the side (a live source's audio)."""
        if self.audio_capture is not None:
            self.audio_capture.unlink(missing_ok=True)
            self.audio_capture = None

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        self.remove_temporaries()


# `[Parsed_showinfo_K @ 0x..] [info] n:  12 pts:  6144 pts_time:0.4 duration:  512 ...`
_SHOWINFO_RE = re.compile(r"\[Parsed_showinfo_(\d+) @ [^\]]*\] (?:\[info\] )?n:\s*(\d+) pts:\s*(-?\d+|NOPTS)"
                          r"\s.*?duration:\s*(-?\d+|NOPTS)")
_CONFIG_RE = re.compile(r"\[Parsed_showinfo_0 @ [^\]]*\] (?:\[info\] )?config in time_base: (\d+)/(\d+)")
_ERROR_RE = re.compile(r"\[(?:error|fatal|panic)\]")


class VideoFileSource(FrameSource):
    """Frames of a video file or stream decoded by ffmpeg, one raw RGB frame at a time from
    a pipe, each with its presentation time and duration.

    `-fps_mode passthrough` makes every decoded frame come out exactly once (no frames
    duplicated or dropped to reach a constant rate). Selection runs inside ffmpeg: `trim`
    keeps the frames shown from start to end (and stops decoding there), `select` every N-th
    of them, so skipped frames are never piped. A `showinfo` filter before and after the
    selection logs each frame's number in the source and timestamp; a parser thread pairs
    them with the frames read from the pipe.
    """

    _proc: subprocess.Popen | None = None

    def _filters(self) -> tuple[str, bool]:
        """The -vf chain, and whether it has a second showinfo (after a selection)."""
        sel, tb = self.selection, self.info.time_base
        chain = ["showinfo=checksum=0"]
        if sel.is_all:
            return chain[0], False
        trim = []
        if sel.start:
            trim.append(f"start_pts={math.ceil(sel.start / tb)}" if tb else f"start={float(sel.start)}")
        if sel.end is not None:
            trim.append(f"end_pts={math.ceil(sel.end / tb)}" if tb else f"end={float(sel.end)}")
        if trim:
            chain.append("trim=" + ":".join(trim))
        if sel.stride > 1:
            chain.append(f"select=not(mod(n\\,{sel.stride}))")
        chain.append("showinfo=checksum=0")
        return ",".join(chain), True

    def _command(self) -> list[str]:
        info = self.info
        chain, _ = self._filters()
        camera = camera_input(str(info.path)) if info.kind == "stream" else None
        where = camera[1] if camera is not None else str(info.path)
        pre = list(info.input_args)
        if self.realtime and not info.live:
            pre.append("-re")  # read a file at its own pace, as a live source would come
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-v", "level+info", *pre,
               "-i", where, "-map", "0:v:0", "-vf", chain, "-fps_mode", "passthrough",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"]
        if self.audio_capture is not None:
            # Written as it comes (small clusters, no buffer): usable however ffmpeg ends.
            cmd += ["-map", "0:a", "-c:a", "copy", "-flush_packets", "1", "-f", "matroska",
                    "-cluster_time_limit", "200",
                    "-y", str(self.audio_capture)]
        return cmd

    _signalled = False

    def _stop_reading(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            # A live source ends as at its own end (once: ffmpeg takes repeated signals
            # for an emergency); a file is simply stopped.
            if not self.info.live:
                proc.kill()
            elif not self._signalled:
                self._signalled = True
                proc.terminate()

    def close(self) -> None:
        super().close()
        proc = self._proc
        if proc is not None and proc.poll() is None:  # a live source finishing its audio
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _frames(self, stop: threading.Event) -> Iterator[Frame]:
        info, sel = self.info, self.selection
        _, paired = self._filters()
        proc = self._proc = subprocess.Popen(
            self._command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True)  # Ctrl-C reaches tfcseg, not ffmpeg
        # ffmpeg's stderr, read by a thread so a chatty stderr never blocks: the timing of each
        # piped frame (index, pts, duration) in order, the time base, error lines (bounded).
        timing: queue.Queue = queue.Queue()
        errors: collections.deque[str] = collections.deque(maxlen=20)
        time_base = [info.time_base]

        def parse_stderr() -> None:
            seen: collections.deque[tuple[int | None, int]] = collections.deque()
            for raw in proc.stderr:
                line = raw.decode("utf-8", "replace").rstrip()
                if m := _SHOWINFO_RE.search(line):
                    pts = None if m[3] == "NOPTS" else int(m[3])
                    dur = None if m[4] == "NOPTS" else int(m[4])
                    if not paired:
                        timing.put((int(m[2]), pts, dur))
                    elif m[1] == "0":
                        seen.append((pts, int(m[2])))
                    else:  # the source's number of this frame: its pts seen before selection
                        index = None
                        while seen:
                            p, n = seen.popleft()
                            if p == pts:
                                index = n
                                break
                        timing.put((index, pts, dur))
                elif m := _CONFIG_RE.search(line):
                    time_base[0] = Fraction(int(m[1]), int(m[2]))
                elif _ERROR_RE.search(line):
                    errors.append(_clean_line(line))
            timing.put(None)

        err_thread = threading.Thread(target=parse_stderr, daemon=True)
        err_thread.start()
        nbytes = info.width * info.height * 3
        produced, partial, index = 0, False, sel.first - sel.stride
        try:
            # Ended (Ctrl-C on a live source): the frames still inside ffmpeg are not taken.
            while not stop.is_set() and not self._ended.is_set():
                got = _read_exactly(proc.stdout, buf := bytearray(nbytes))
                if got < nbytes:
                    partial = got > 0
                    break
                rgb = np.frombuffer(buf, np.uint8).reshape(info.height, info.width, 3)
                try:  # logged before the frame was piped: it is there or on its way
                    record = timing.get(timeout=30)
                except queue.Empty:
                    record = None
                n, pts, dur = record if record is not None else (None, None, None)
                index = n if n is not None else index + sel.stride
                tb = time_base[0]
                shown = Fraction(pts) * tb if pts is not None and tb else Fraction(index) / info.fps
                duration = Fraction(dur) * tb if dur and tb else None
                produced += 1
                yield Frame(index, f"{index:05d}", rgb, shown, duration)
        finally:
            if proc.poll() is None and (stop.is_set() or self._ended.is_set() or info.live):
                # Stopped early, or a live source whose video ended (`--end`) while its
                # audio was still being saved.
                self._stop_reading()
                if info.live:  # let it finish its outputs: no broken pipe on the way out
                    _drain(proc.stdout, deadline=time.monotonic() + 10)
            proc.stdout.close()
            try:
                rc = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            err_thread.join(timeout=5)
            proc.stderr.close()
        if stop.is_set():
            return
        if self._ended.is_set():
            return  # stopped on purpose: what was read is what there is
        damaged = partial or (rc != 0 and not info.live) or any(ln.strip() for ln in errors)
        expected = self.expected
        if damaged and (expected is None or produced < expected):
            first_error = next((ln for ln in errors if ln.strip()), f"ffmpeg exit status {rc}")
            first_error = first_error.strip().rstrip(".")
            if expected is not None:
                self.lost = expected - produced
                self.warnings.append(
                    f"{info.path}: the video is truncated or damaged ({first_error}); "
                    f"{produced} of {expected} frames could be read, {self.lost} lost")
            elif not info.live:
                self.warnings.append(
                    f"{info.path}: the video is truncated or damaged ({first_error}); "
                    f"{produced} frames could be read, an unknown number lost")
            elif produced == 0:
                self.warnings.append(f"{info.path}: the stream ended with an error ({first_error})")
        if produced == 0:
            raise TfcsegError(f"{info.path}: no frame could be decoded"
                              + (" in the selected range" if not sel.is_all and not damaged else ""))


def _drain(stream, deadline: float) -> None:
    """Read and drop what a stopping process still writes, until it closes (or the deadline)."""
    while time.monotonic() < deadline and stream.read1(1 << 16):
        pass


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
    """Frames from image files, in natural name order, frame i shown at i / fps seconds.
    Unreadable files are skipped and counted as lost; a frame of another size than the
    first is an error naming the file."""

    def __init__(self, info: VideoInfo, files: list[Path], selection: Selection,
                 queue_size: int = 8, realtime: bool = False) -> None:
        super().__init__(info, selection, queue_size, realtime)
        self.files = files

    def _frames(self, stop: threading.Event) -> Iterator[Frame]:
        bad: list[Path] = []
        produced = 0
        step = 1 / self.info.fps
        for index, path in enumerate(self.files):
            if stop.is_set():
                return
            if self._ended.is_set():
                break
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
            yield Frame(index, path.stem, rgb, index * step, step)
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


def expand_sources(inputs: str | Path | list[str | Path]) -> list[str]:
    """The videos named by `inputs`, one entry per output: a video file, a URL or camera,
    a folder or glob of images (one sequence), or a folder or glob of videos (each video).
    Paths that name nothing are kept, so that opening them reports the error."""
    items = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    out: list[str] = []
    for item in items:
        text = str(item)
        path = Path(text).expanduser()
        if is_stream(text) or path.is_file():
            out.append(text)
            continue
        if path.is_dir():
            files = [f for f in path.iterdir() if f.is_file()]
        elif is_glob(text):
            files = [Path(f) for f in globlib.glob(str(path)) if Path(f).is_file()]
        else:
            out.append(text)
            continue
        videos = sorted((f for f in files if f.suffix.lower() in VIDEO_SUFFIXES), key=_natural_key)
        has_images = any(f.suffix.lower() in IMAGE_SUFFIXES for f in files)
        if videos and not has_images:
            out.extend(str(v) for v in videos)
        elif videos and has_images:
            raise TfcsegError(f"{text}: holds both videos and image frames; name the videos or "
                              "the frames (a glob such as 'DIR/*.mp4' or 'DIR/*.png')")
        else:
            out.append(text)  # image frames (or nothing: reported when opened)
    return out


def open_frames(source: str | Path, start: float | None = None, end: float | None = None,
                stride: int = 1, fps: Fraction | float | str | None = None,
                queue_size: int = 8, realtime: bool = False,
                capture_audio: bool = False) -> FrameSource:
    """Open a video file, a folder or glob of images, a URL or a camera as a `FrameSource`.

    `start`/`end` are seconds of presentation time (what a player shows), `stride` keeps
    every N-th selected frame. `fps` is the rate of an image sequence (default 30); a video
    keeps its own timing. `realtime`: never let the source wait for the consumer: frames
    are dropped (counted in `dropped`) when the queue is full, and a file is read at its own
    pace. `capture_audio`: a live source's audio is saved while reading (`audio_capture`), as
    it cannot be read again. Errors (missing path, not a video, no frames) are TfcsegErrors
    naming the source.
    """
    text = str(source)
    path = Path(source).expanduser()
    if is_stream(text):
        info = probe_video(text)
        sel = Selection.from_times(info.avg_fps or info.fps, start, end, stride)
        src: FrameSource = VideoFileSource(info, sel, 2 if realtime else queue_size, realtime)
        if capture_audio and info.live and info.audio:  # made by ffmpeg when reading starts
            src.audio_capture = Path(tempfile.gettempdir()) / f"tfcseg-audio-{os.getpid()}-{secrets.token_hex(6)}.mka"
    elif path.is_file():
        info = probe_video(path)
        sel = Selection.from_times(info.avg_fps or info.fps, start, end, stride)
        src = VideoFileSource(info, sel, 2 if realtime else queue_size, realtime)
    elif path.is_dir() or (is_glob(text) and not path.exists()):
        files, folder = _image_files(path)
        rate = parse_rate(fps) if fps is not None else DEFAULT_IMAGE_FPS
        first = next((img for f in files if (img := read_image_rgb(f)) is not None), None)
        if first is None:
            raise TfcsegError(f"{path}: none of the {len(files)} image files can be read")
        info = VideoInfo(path=path, kind="images", name=_sequence_name(folder),
                         width=first.shape[1], height=first.shape[0], fps=rate,
                         frame_count=len(files), folder=folder, avg_fps=rate, time_base=1 / rate)
        sel = Selection.from_times(rate, start, end, stride)
        src = ImageSequenceSource(info, files, sel, queue_size, realtime)
    else:
        raise TfcsegError(f"{path}: no such file or folder")
    if info.kind == "images" and src.expected == 0:
        raise TfcsegError(f"{path}: no frames in the selected range (the source has "
                          f"{info.frame_count} frames at {info.fps} fps)")
    if info.kind != "images" and info.duration is not None and sel.start and sel.start >= info.duration:
        raise TfcsegError(f"{info.path}: no frames in the selected range (the video is "
                          f"{info.duration:.2f} s long)")
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


def _rate_arg(rate: Fraction) -> str:
    return f"{rate.numerator}/{rate.denominator}"


# A minimal Matroska stream for the encoder's stdin: one track of raw RGB frames (`RGB` + 24
# as its colour space, which ffmpeg reads as rgb24), one cluster per frame holding the frame's
# timestamp (in ns) and duration. It is what lets the encoder keep any timing, constant or not.

def _ebml_id(id_: int) -> bytes:
    return id_.to_bytes((id_.bit_length() + 7) // 8, "big")


def _ebml_size(n: int) -> bytes:
    for length in range(1, 9):
        if n < (1 << (7 * length)) - 1:
            return (n | (1 << (7 * length))).to_bytes(length, "big")
    raise ValueError(f"EBML size {n} too large")


def _ebml(id_: int, payload: bytes) -> bytes:
    return _ebml_id(id_) + _ebml_size(len(payload)) + payload


def _ebml_uint(id_: int, value: int) -> bytes:
    return _ebml(id_, value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big"))


def _mkv_header(width: int, height: int, default_ns: int) -> bytes:
    ebml = _ebml(0x1A45DFA3, _ebml_uint(0x4286, 1) + _ebml_uint(0x42F7, 1) + _ebml_uint(0x42F2, 4)
                 + _ebml_uint(0x42F3, 8) + _ebml(0x4282, b"matroska") + _ebml_uint(0x4287, 4)
                 + _ebml_uint(0x4285, 2))
    segment = _ebml_id(0x18538067) + bytes.fromhex("01FFFFFFFFFFFFFF")  # unknown size: streamed
    info = _ebml(0x1549A966, _ebml_uint(0x2AD7B1, 1) + _ebml(0x4D80, b"tfcseg") + _ebml(0x5741, b"tfcseg"))
    video = _ebml(0xE0, _ebml_uint(0xB0, width) + _ebml_uint(0xBA, height) + _ebml(0x2EB524, b"RGB\x18"))
    track = _ebml(0xAE, _ebml_uint(0xD7, 1) + _ebml_uint(0x73C5, 1) + _ebml_uint(0x83, 1)
                  + _ebml(0x86, b"V_UNCOMPRESSED") + _ebml_uint(0x23E383, default_ns) + video)
    return ebml + segment + info + _ebml(0x1654AE6B, track)


def _mkv_frame(nbytes: int, time_ns: int, duration_ns: int) -> tuple[bytes, bytes]:
    """What goes before and after a frame's `nbytes` of pixels: a cluster at `time_ns` with a
    block group (the block, then its duration)."""
    block_head = b"\x81" + struct.pack(">hB", 0, 0)  # track 1, no offset from the cluster time
    after = _ebml_uint(0x9B, duration_ns)
    block_len = len(block_head) + nbytes
    group_len = len(_ebml_id(0xA1)) + len(_ebml_size(block_len)) + block_len + len(after)
    stamp = _ebml_uint(0xE7, time_ns)
    cluster_len = len(stamp) + len(_ebml_id(0xA0)) + len(_ebml_size(group_len)) + group_len
    before = (_ebml_id(0x1F43B675) + _ebml_size(cluster_len) + stamp + _ebml_id(0xA0)
              + _ebml_size(group_len) + _ebml_id(0xA1) + _ebml_size(block_len) + block_head)
    return before, after


@dataclass(frozen=True)
class AudioSource:
    """Where an output's sound comes from: the audio streams of `source` (a file, a URL, or
    a live source's audio saved while reading), opened with ffmpeg options `input_args`;
    `codecs`: theirs, where known (uncompressed audio is cut to the sample, not copied)."""

    source: str
    input_args: tuple[str, ...] = ()
    codecs: tuple[str, ...] = ()
    temporary: bool = False  # a saved capture: the writer removes it when done


class VideoWriter:
    """H.264 yuv420p video, written under a temporary name and renamed on success.

    Frames go in as [H, W, 3] uint8 RGB of the size given here; odd sizes are padded by one
    pixel. `write(rgb, time, duration)` places each frame at its presentation time (seconds,
    e.g. a source frame's; the first frame written is at 0 in the output) for its duration;
    without a time, frame i is at i / fps. Times are kept exactly in `time_base` (default
    1 / fps). `fps` is the nominal rate; `sar` the pixel aspect ratio (kept in the output).
    `audio`: copy that source's audio streams, cut to the frames written (from the first
    frame's time, as long as the video), re-encoded to AAC only if the container needs it.
    `variable_rate`: frames are not evenly spaced (a VFR source, dropped frames): encoded
    without B-frames, as MP4 measures its duration by decoding order, which B-frames shift
    by a few of the first frames' durations. `crf` is x264's constant rate factor (lower =
    better; 18 is visually lossless).

        with VideoWriter("out.mp4", width, height, Fraction(30000, 1001)) as w:
            for rgb in frames:
                w.write(rgb)
    """

    def __init__(self, path: str | Path, width: int, height: int, fps: Fraction | int | float,
                 crf: int = 18, preset: str = "medium", overwrite: bool = False, *,
                 time_base: Fraction | None = None, sar: Fraction | None = None,
                 audio: AudioSource | None = None, variable_rate: bool = False) -> None:
        self.path = Path(path)
        self.variable_rate = variable_rate
        self.width, self.height = int(width), int(height)
        self.fps = fps if isinstance(fps, Fraction) else Fraction(fps).limit_denominator(1001)
        self.time_base = Fraction(time_base) if time_base else 1 / self.fps
        if self.time_base < Fraction(1, 10**6):
            self.time_base = Fraction(1, 90000)
        self.sar = Fraction(sar) if sar else Fraction(1)
        self.audio = audio
        self.crf, self.preset = crf, preset
        self.frames = 0
        self.start_time: Fraction | None = None  # the first frame's time: the output's 0
        self.duration = Fraction(0)  # of the video written so far, in seconds
        self.audio_streams = 0  # audio streams in the finished file
        self.warnings: list[str] = []
        muxer = OUTPUT_FORMATS.get(self.path.suffix.lower())
        if self.path.is_dir():
            raise TfcsegError(f"{self.path}: is a folder")
        if muxer is None:
            raise TfcsegError(f"{self.path}: unsupported output format "
                              f"(use one of {', '.join(OUTPUT_FORMATS)})")
        if self.path.exists() and not overwrite:
            raise TfcsegError(f"{self.path}: exists already (use overwrite=True to replace it)",
                              options=("overwrite",))
        ensure_writable_folder(self.path.parent)
        sweep_stale(self.path.parent, self.path.name)  # what a killed earlier run left
        self._muxer = muxer
        self._proc: subprocess.Popen | None = None
        self._tmp: Path | None = None
        self._muxed: Path | None = None
        self._last_ns = -1
        self._stderr: collections.deque[str] = collections.deque(maxlen=20)

    @property
    def output_size(self) -> tuple[int, int]:
        return even_size(self.width, self.height)

    def _temp(self) -> Path:
        try:
            return make_temp(self.path)
        except OSError as exc:
            raise write_error(self.path, exc, "cannot write here") from None

    def open(self) -> "VideoWriter":
        self._tmp = self._temp()
        w, h = self.output_size
        vf = "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p"
        if self.sar != 1:
            vf += f",setsar={_rate_arg(self.sar)}"
        cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-v", "error", "-y",
               "-f", "matroska", "-i", "pipe:0",
               "-an", "-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf),
               # RGB -> BT.709 limited-range YUV, and tagged as such, so players decode the
               # colours that were encoded.
               "-vf", vf,
               "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709",
               "-color_range", "tv",
               # Every frame at its own time, counted in the source's time base.
               "-fps_mode", "passthrough", "-enc_time_base", _rate_arg(self.time_base)]
        if self.variable_rate:
            cmd += ["-bf", "0"]
        if self._muxer in ("mp4", "mov"):
            cmd += ["-movflags", "+faststart"]  # index first: playback starts before download ends
        cmd += ["-f", self._muxer, str(self._tmp)]
        self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE, start_new_session=True)
        proc = self._proc
        self._err_thread = threading.Thread(
            target=lambda: self._stderr.extend(
                ln.decode("utf-8", "replace").rstrip() for ln in proc.stderr),
            daemon=True)
        self._err_thread.start()
        default_ns = round(10**9 / self.fps)
        self._pipe(_mkv_header(w, h, default_ns))
        return self

    def _pipe(self, *chunks: bytes) -> None:
        try:
            for chunk in chunks:
                self._proc.stdin.write(chunk)
        except (BrokenPipeError, OSError):
            self._proc.wait()
            self._err_thread.join(timeout=5)
            raise TfcsegError(f"{self.path}: the encoder stopped ({self._error()})") from None

    def write(self, rgb: np.ndarray, time: Fraction | float | None = None,
              duration: Fraction | float | None = None) -> None:
        if self._proc is None:
            self.open()
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"expected a {self.height}x{self.width}x3 uint8 frame, "
                             f"got {rgb.shape} {rgb.dtype}")
        step = 1 / self.fps
        time = Fraction(time) if time is not None else self.frames * step
        duration = Fraction(duration) if duration else step
        if self.start_time is None:
            self.start_time = time
        # On the output's time base (as the encoder will count it), never going backwards.
        rel = round((time - self.start_time) / self.time_base) * self.time_base
        time_ns = max(round(rel * 10**9), self._last_ns + 1)
        data = np.ascontiguousarray(pad_to_even(rgb))
        before, after = _mkv_frame(data.nbytes, time_ns, max(1, round(duration * 10**9)))
        self._pipe(before, memoryview(data).cast("B"), after)
        self._last_ns = time_ns
        self.duration = max(self.duration, rel + duration)
        self.frames += 1

    def _error(self) -> str:
        """Why the encoder stopped, in words. An OS error anywhere in its log wins (ffmpeg's
        last line after a full disk is often only "Nothing was written ..."), and a target
        folder with next to no space left is named as such whatever the log says."""
        lines = [_clean_line(ln) for ln in self._stderr if ln.strip()]
        for errno in OS_ERROR_REASONS:
            if any(os.strerror(errno) in ln for ln in lines):
                return OS_ERROR_REASONS[errno]
        try:
            if shutil.disk_usage(self._tmp.parent).free < 1 << 20:
                return OS_ERROR_REASONS[errno_codes.ENOSPC]
        except OSError:
            pass
        return lines[-1] if lines else f"ffmpeg exit status {self._proc.returncode}"

    def _mux_audio(self) -> None:
        """Copy the audio streams of `self.audio`, cut to the video's span, into the file."""
        audio, tmp = self.audio, self._tmp
        self._muxed = self._temp()
        failure = ""
        # Compressed audio is copied (cut to its packets, some ms); uncompressed audio, whose
        # packets can hold a second, is decoded and written again as it was, cut to the
        # sample. AAC where MP4 players would not play the original, or the container
        # refuses it.
        keep = ["-c:a", "copy"]
        for i, codec in enumerate(audio.codecs):
            if self._muxer == "mp4" and codec not in MP4_AUDIO:
                keep += [f"-c:a:{i}", "aac"]
            elif codec.startswith("pcm_"):
                keep += [f"-c:a:{i}", codec]
        for codecs in (keep, ["-c:a", "aac"]):
            cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-nostats", "-v", "error", "-y",
                   "-i", str(tmp), *audio.input_args,
                   "-ss", f"{float(self.start_time):.6f}", "-t", f"{float(self.duration):.6f}",
                   "-i", audio.source, "-map", "0:v:0", "-map", "1:a", "-c:v", "copy", *codecs]
            if self._muxer in ("mp4", "mov"):
                cmd += ["-movflags", "+faststart"]
            cmd += ["-f", self._muxer, str(self._muxed)]
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, start_new_session=True)
            if proc.returncode == 0:
                os.replace(self._muxed, tmp)
                self._muxed = None
                return
            failure = _last_error_line(proc.stderr.decode("utf-8", "replace"))
        self._muxed.unlink(missing_ok=True)
        self._muxed = None
        self.audio_streams = 0
        self.warnings.append(f"{self.path}: the audio could not be kept ({failure}); the video has no sound")

    def _drop_capture(self) -> None:
        if self.audio is not None and self.audio.temporary:
            Path(self.audio.source).unlink(missing_ok=True)

    def close(self) -> Path:
        """Finish the file (and add the audio) and rename it onto the final name."""
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
            if self.audio is not None:
                self.audio_streams = -1  # set by the probe below
                self._mux_audio()
                self._drop_capture()
                if self.audio_streams == -1:
                    self.audio_streams = len(probe_video(self._tmp).audio)
            os.chmod(self._tmp, 0o666 & ~UMASK)
            os.replace(self._tmp, self.path)
        except OSError as exc:
            self.abort()
            raise write_error(self.path, exc) from None
        except BaseException:
            self.abort()
            raise
        self._tmp = None
        return self.path

    def abort(self) -> None:
        """Stop the encoder and remove the temporary files; the final name is never touched."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            for pipe in (self._proc.stdin, self._proc.stderr):
                try:
                    pipe.close()
                except OSError:
                    pass
        for tmp in (self._tmp, self._muxed):
            if tmp is not None:
                tmp.unlink(missing_ok=True)
        self._tmp = self._muxed = None
        self._drop_capture()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
