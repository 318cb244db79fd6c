"""Run-time choices shared by every pipeline: inference modes, precisions, the device, and
where tfcseg keeps its caches."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

from .errors import OptionError, TfcsegError

# How a video is run: TFC (the method), per-frame SegFormer (every frame a keyframe), or
# feature reuse (non-keyframes reuse the keyframe's high-level features, nothing else).
MODES = ("tfc", "segformer", "reuse")
# Inference precision name -> autocast dtype (None: fp32, no autocast).
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# What runs the model: PyTorch itself, or its two exported ONNX graphs in ONNX Runtime
# (`pip install "tfcseg[onnx]"`; see tfcseg.backends).
BACKENDS = ("pytorch", "onnxruntime")


# `keyframe_interval` of this value: keyframes chosen from TFC's own similarity (segmenter.KeyframePolicy).
AUTO_KEYFRAMES = "auto"


def parse_keyframe_interval(value: int | str) -> int | str:
    """A keyframe interval as given on the command line or to the library: a whole number of
    frames (1 or more; `4` or "4") or "auto"."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text == AUTO_KEYFRAMES:
            return AUTO_KEYFRAMES
        if not text.lstrip("-").isdigit():
            raise OptionError(f"keyframe_interval {value}: a whole number of frames (1 or more) or "
                              f"{AUTO_KEYFRAMES}", options=("keyframe_interval",))
        value = int(text)
    try:
        whole = not isinstance(value, bool) and int(value) == value
    except (TypeError, ValueError, OverflowError):
        whole = False
    if not whole:
        raise OptionError(f"keyframe_interval {value}: a whole number of frames (1 or more) or "
                          f"{AUTO_KEYFRAMES}", options=("keyframe_interval",))
    if int(value) < 1:
        raise OptionError(f"keyframe_interval must be 1 or more, not {value}", options=("keyframe_interval",))
    return int(value)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """`auto` -> CUDA when available, else CPU; a named device that is absent is an error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise TfcsegError(f"device {device}: not a device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise TfcsegError(f"device {device}: CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise TfcsegError(f"device {device}: only {torch.cuda.device_count()} CUDA device(s)")
    return dev


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (Linux: /proc/cpuinfo; empty where they cannot be read)."""
    try:
        line = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines()
                     if ln.startswith("flags")), "")
    except OSError:
        return frozenset()
    return frozenset(line.partition(":")[2].split())


def has_amx() -> bool:
    """Whether this CPU has AMX tiles for bf16 (Intel Sapphire Rapids and later): oneDNN then
    runs PyTorch's bf16 matmuls, linears and convolutions on them."""
    return "amx_bf16" in cpu_flags()


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matmuls have hardware support here: a CUDA GPU that supports bf16, or a
    CPU with AVX512-BF16 or AMX. Elsewhere bf16 autocast runs emulated and slower than fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return "avx512_bf16" in cpu_flags() or has_amx()


def cache_root() -> Path:
    """tfcseg's own cache: `$TFCSEG_CACHE`, else `$XDG_CACHE_HOME/tfcseg` (~/.cache/tfcseg).
    Compiled kernels go to `ext/`, converted Hub checkpoints to `converted/`."""
    if os.environ.get("TFCSEG_CACHE"):
        return Path(os.environ["TFCSEG_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "tfcseg"


class ThreadTuner:
    """Chooses the intra-op thread count of CPU inference by measuring it, frame by frame.

    On a machine shared with other busy processes, PyTorch's default of one OpenMP thread a
    core can be 10-20x slower than one thread: a parallel region waits for a thread that is
    not scheduled. `run(fn, kind_of)` times each frame at the current count; after the first
    `first` frames, every `every` frames, and whenever a frame takes over twice the recent
    median of its kind, it runs `trial` frames at each other candidate and keeps the fastest.
    So a load that starts is followed within a frame or two, one that ends within about
    `every` frames, at the cost of a few frames at a worse count when nothing changed. Frames of different kinds (keyframes,
    non-keyframes: `kind_of(result)`) cost different amounts, so counts are compared by the
    ratio of their median times within each kind.

    The thread count is a process-wide PyTorch setting: the tuner sets it while `fn` runs and
    restores the caller's afterwards. `candidates`: the counts to choose from (default: the
    caller's count and 1).
    """

    def __init__(self, candidates: tuple[int, ...] | None = None, every: int = 48, trial: int = 3,
                 first: int = 2) -> None:
        own = torch.get_num_threads()
        self.candidates = tuple(dict.fromkeys(candidates or (own, 1)))
        self.every, self.trial, self.first = max(int(every), 1), max(int(trial), 1), max(int(first), 1)
        self.current = self.candidates[0]
        self.switches = 0  # how often the choice changed (reported by pipelines)
        self._times: dict[tuple[str, int], list[float]] = {}  # (kind, threads) -> recent seconds
        self._frames = 0
        self._queue: list[int] = []  # this round's frames still to run, one count each

    def run(self, fn, kind_of=lambda _out: "frame"):
        """`fn()` at the chosen thread count; its result."""
        import time

        threads = self._queue[0] if self._queue else self.current
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            t0 = time.perf_counter()
            out = fn()
            elapsed = time.perf_counter() - t0
        finally:
            torch.set_num_threads(before)
        times = self._times.setdefault((kind_of(out), threads), [])
        slow = len(times) >= 3 and elapsed > 2 * sorted(times)[len(times) // 2]  # a load arrived?
        times.append(elapsed)
        del times[:-5]  # the latest five of each
        self._frames += 1
        if self._queue:
            self._queue.pop(0)
            if not self._queue:
                self._decide()
        elif len(self.candidates) > 1 and (self._frames == self.first or slow
                                           or self._frames % self.every == 0):
            others = [c for c in self.candidates if c != self.current]
            for key in [k for k in self._times if k[1] in others]:
                del self._times[key]  # measure the others afresh
            if slow:  # the machine changed: the current count's older times are stale
                del times[:-1]
            self._queue = [c for c in others for _ in range(self.trial)]
        return out

    def _decide(self) -> None:
        def median(key: tuple[str, int]) -> float:
            t = sorted(self._times[key])
            return t[len(t) // 2]

        best, best_ratio = self.current, 1.0
        for c in self.candidates:
            ratios = [median((kind, c)) / median((kind, self.current)) for kind, n in self._times
                      if n == c and (kind, self.current) in self._times]
            if ratios:
                ratio = sorted(ratios)[len(ratios) // 2]
                if ratio < best_ratio * 0.9:  # a clear win only: timing noise does not flip it
                    best, best_ratio = c, ratio
        if best != self.current:
            self.current = best
            self.switches += 1
