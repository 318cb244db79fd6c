"""Streaming video segmentation: a session that holds one keyframe's state, never the video.

    seg = VideoSegmenter(model, keyframe_interval=4, mode="tfc")
    for result in seg.segment(frames):        # frames: H x W x 3 uint8 RGB arrays
        result.labels                         # H x W label map at the frame's own size

Keyframes: every `keyframe_interval` frames, or `keyframe_interval="auto"`: a new keyframe when
TFC's own similarity says the scene has changed (`KeyframePolicy`). Every non-keyframe computes
its similarity to the keyframe at each point of the 1/4 map anyway; when more than
`keyframe_changed_share` of the points are below `keyframe_similarity` (and at least
`min_keyframe_interval` frames have passed), that frame itself becomes the keyframe, its
encoder stages 1-2 reused (extra cost: stages 3-4 and the decoder), so that a scene cut is
labelled from its own scene at once. After `max_keyframe_interval` frames a keyframe is due
whatever the similarity.

Frames are resized so that their short side is `short_side` (aspect kept, no padding:
SegFormer takes any size); a frame already at that size is not resized. Labels are made
directly at the frame's own size, as mmseg does: the argmax of the 1/4-resolution logits
upsampled bilinearly (align_corners=False) to the frame size, computed exactly but cheaply
by `postprocess.labels_from_logits` (interpolated logits only on class boundaries). With
label hysteresis (`hysteresis`, default the model's `label_hysteresis`), the previous frame's
labels get that margin added to their logits first (`postprocess.LabelHysteresis`), so a
label changes only where another class leads it by the margin; with `hysteresis_power` Q > 0
(default the model's `label_hysteresis_power`) the margin at a point is scaled by s^Q, s the
similarity of the frame's features to the previous frame's there (motion-aware: the frame's
unit features, `TFCSegFormer.frame_units`, are kept for the next frame). Held labels are
dropped at a new video, a new frame size and an "auto" keyframe on a change.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, replace

import cv2
import numpy as np
import torch

from .errors import OptionError, check_margin, check_power
from .models.config import TFCOptions, smallest_input
from .models.segformer import IMAGENET_MEAN, IMAGENET_STD, TFCSegFormer
from .models.state import KeyframeState
from .postprocess import LabelHysteresis, labels_from_logits
from .runtime import AUTO_KEYFRAMES, BACKENDS, MODES, PRECISIONS, ThreadTuner, parse_keyframe_interval


def inference_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    """(h, w) with the short side `short_side` and the aspect kept (rounded half up);
    short_side 0 keeps the frame's own size. 1080x1920 -> 480x853."""
    if short_side <= 0 or min(height, width) == short_side:
        return height, width
    scale = short_side / min(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def preprocess(frame_rgb_uint8: np.ndarray, size: tuple[int, int] | None = None,
               device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """An H x W x 3 uint8 RGB frame -> ImageNet-normalised pixels [1, 3, h, w].

    `size` = (h, w) to resize to (bilinear, OpenCV's INTER_LINEAR, as mmseg's pipeline);
    None or the frame's own size: no resize."""
    frame = check_frame(frame_rgb_uint8)
    if size is not None and tuple(size) != frame.shape[:2]:
        frame = cv2.resize(frame, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR)
    if not frame.flags.writeable:  # e.g. np.frombuffer of decoded bytes; torch wants writable
        frame = frame.copy()
    x = torch.from_numpy(frame).to(device)
    x = x.permute(2, 0, 1)[None].float().contiguous()  # [1, 3, h, w] in 0..255
    mean, std = _normalisation(x.device)
    return ((x - mean) / std).to(dtype)


_NORM_CACHE: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def _normalisation(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean/std in 0..255 units, [1, 3, 1, 1], made once per device."""
    if device not in _NORM_CACHE:
        mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1) * 255
        std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1) * 255
        _NORM_CACHE[device] = (mean, std)
    return _NORM_CACHE[device]


def check_frame(frame: np.ndarray, index: int | None = None) -> np.ndarray:
    """The frame as a C-contiguous H x W x 3 uint8 array, or a ValueError saying what is wrong."""
    where = f"frame {index}: " if index is not None else ""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"{where}expected a numpy array, got {type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"{where}expected an H x W x 3 RGB array, got shape {frame.shape}")
    if frame.dtype != np.uint8:
        raise ValueError(f"{where}expected uint8 pixels, got {frame.dtype}")
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise ValueError(f"{where}empty frame {frame.shape}")
    return np.ascontiguousarray(frame)


@dataclass(frozen=True)
class KeyframePolicy:
    """When `keyframe_interval="auto"` makes a keyframe. At each frame after a keyframe, a point
    of the 1/4 map has *changed* when TFC's similarity of its low-level features to the
    keyframe's is below `keyframe_similarity`; the frame becomes a keyframe when more than
    `keyframe_changed_share` of the points have changed and at least `min_keyframe_interval`
    frames have passed since the keyframe, or when `max_keyframe_interval` frames have passed.

    The defaults were chosen on the CamVid val video with the model in weights/ (README,
    "Adaptive keyframes"): fewer keyframes than a fixed interval of 4 there (19.8% against
    25.7%) at its mVC8 and 0.3 below its mIoU, and a cut between two CamVid scenes is over
    the limit."""

    keyframe_similarity: float = 0.7
    keyframe_changed_share: float = 0.3
    max_keyframe_interval: int = 16
    min_keyframe_interval: int = 1

    def __post_init__(self) -> None:
        s, p = self.keyframe_similarity, self.keyframe_changed_share
        if not (isinstance(s, (int, float)) and math.isfinite(s) and -1.0 <= s <= 1.0):
            raise OptionError(f"keyframe_similarity must be a cosine similarity, -1 to 1, not {s}",
                              options=("keyframe_similarity",))
        if not (isinstance(p, (int, float)) and math.isfinite(p) and 0.0 <= p <= 1.0):
            raise OptionError(f"keyframe_changed_share must be a share of the points, 0 to 1, not {p}",
                              options=("keyframe_changed_share",))
        for name in ("max_keyframe_interval", "min_keyframe_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise OptionError(f"{name} must be a whole number of frames, 1 or more, not {value}",
                                  options=(name,))
        if self.min_keyframe_interval > self.max_keyframe_interval:
            raise OptionError(f"min_keyframe_interval ({self.min_keyframe_interval}) is above "
                              f"max_keyframe_interval ({self.max_keyframe_interval})",
                              options=("min_keyframe_interval", "max_keyframe_interval"))

    def changed_share(self, similarity: torch.Tensor) -> float:
        """The share of points whose similarity is below `keyframe_similarity`."""
        return int((similarity < self.keyframe_similarity).sum()) / max(similarity.numel(), 1)

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def keyframe_schedule(keyframe_interval: int | str = 4, *, keyframe_similarity: float | None = None,
                      keyframe_changed_share: float | None = None,
                      max_keyframe_interval: int | None = None,
                      min_keyframe_interval: int | None = None) -> tuple[int | str, KeyframePolicy | None]:
    """(keyframe_interval, policy): a fixed interval and None, or "auto" and its
    `KeyframePolicy` (the options left None at the policy's defaults). The policy options
    apply to "auto" only: given with a fixed interval they are an `OptionError`."""
    interval = parse_keyframe_interval(keyframe_interval)
    given = {k: v for k, v in dict(keyframe_similarity=keyframe_similarity,
                                   keyframe_changed_share=keyframe_changed_share,
                                   max_keyframe_interval=max_keyframe_interval,
                                   min_keyframe_interval=min_keyframe_interval).items() if v is not None}
    if interval != AUTO_KEYFRAMES:
        if given:
            names = ", ".join(given)
            raise OptionError(f"{names}: only with keyframe_interval {AUTO_KEYFRAMES} (the interval "
                              f"is fixed at {interval})", options=(*given, "keyframe_interval"))
        return interval, None
    return interval, KeyframePolicy(**given)


def mean_keyframe_interval(keyframe_indices: list[int]) -> float | None:
    """The mean gap between consecutive keyframes (K for a fixed interval K); None with fewer
    than two keyframes."""
    if len(keyframe_indices) < 2:
        return None
    return float(np.mean(np.diff(keyframe_indices)))


@dataclass
class FrameResult:
    index: int  # frame number since the start (or the last `reset()`)
    labels: np.ndarray  # [H, W] at the frame's own size; uint8 if K <= 255 else int32
    is_keyframe: bool
    msda_share: float  # fraction of points sparse MSDA updated (0.0 at keyframes / when off)
    logits_lowres: torch.Tensor | None = None  # [K, h4, w4] on the CPU, only if asked for (the model's, before the hysteresis)
    # why a keyframe: "start" (first frame, or after reset()), "size" (a new frame size),
    # "interval" (the fixed or the maximum interval), "change" (auto: the similarity); None
    keyframe_reason: str | None = None
    # auto only: the share of points below `keyframe_similarity` (what the decision read;
    # None at frames made keyframes without computing it)
    changed_share: float | None = None


def with_msda(options: TFCOptions, msda: bool | float | None, gate: float | None = None) -> TFCOptions:
    """`options` with sparse MSDA as asked: None keeps them, False turns it off, True turns it
    on at their threshold, a number turns it on at that similarity threshold (points below it
    are updated; 0 < threshold <= 1). `gate`: MSDA's label-change gate (`TFCOptions.msda_gate`,
    a logit margin >= 0; None keeps theirs)."""
    if gate is not None:
        options = replace(options, msda_gate=check_margin(gate, "msda_gate"))
    if msda is None:
        return options
    if isinstance(msda, bool):
        return replace(options, msda=msda)
    threshold = float(msda)
    if not 0.0 < threshold <= 1.0:
        raise OptionError(f"msda threshold {msda}: expected a similarity in (0, 1]", options=("msda",))
    return replace(options, msda=True, msda_threshold=threshold)


class VideoSegmenter:
    """A streaming video session over a `TFCSegFormer`.

    mode: `tfc` (keyframe every `keyframe_interval` frames, TFC in between, options from
    `model.config.tfc`), `reuse` (the same with interpolation `none` and MSDA off: feature
    reuse only) or `segformer` (every frame a keyframe). `keyframe_interval="auto"`:
    keyframes when the similarity says so (`KeyframePolicy`; its options
    `keyframe_similarity`, `keyframe_changed_share`, `max_keyframe_interval`,
    `min_keyframe_interval` default to the policy's). `short_side`: the inference size's
    short side (default `model.config.inference_short_side`; 0 = each frame's own size).
    `device`: where to run (the model is moved there; default: where the model is).
    `precision`: fp32, or bf16/fp16 through autocast (bf16 on CPUs with AMX/AVX512-BF16, both on
    GPUs); labels agree with fp32 on most pixels (`tfcseg benchmark` reports how many). The
    model is put in eval mode. Only the current keyframe's state is held.
    `threads` (CPU only): "auto" measures, frame by frame, whether PyTorch's thread count or
    one thread is faster and uses that (`runtime.ThreadTuner`: on a machine where another
    process is busy, one thread can be 10x faster); an int runs every frame at that count;
    None leaves PyTorch's setting alone. The caller's setting is restored after each frame.
    Different thread counts round floats differently, so with "auto" two identical frames may
    differ in the last bits of their logits (labels practically never); None or a count keeps
    every frame bit-for-bit reproducible.
    `backend`: `pytorch`, or `onnxruntime` (`pip install "tfcseg[onnx]"`): the model's two ONNX
    graphs in ONNX Runtime (CPU provider, CUDA's for a CUDA `device`), fp32; `model` is then
    an `OnnxRuntimeModel` (`tfcseg.load_onnx_model`) or a `TFCSegFormer`, exported once into
    tfcseg's cache. Default: the model's own (onnxruntime for an `OnnxRuntimeModel`).
    `msda`: sparse MSDA as the model's config says (None), off (False), on at the config's
    threshold (True) or on at this similarity threshold (a float; see `with_msda`);
    `msda_gate`: the margin a label change by MSDA needs to stand (`TFCOptions.msda_gate`;
    None: the config's). `hysteresis`: label hysteresis, the logit margin by which a new class
    must lead a pixel's previous label to replace it (`postprocess.LabelHysteresis`; every
    mode; None: the model's `label_hysteresis`; 0: off, each frame labelled on its own).
    `hysteresis_power`: Q of motion-aware hysteresis, the margin at a point times s^Q, s the
    similarity of its features to the previous frame's (None: the model's
    `label_hysteresis_power`; 0: the same margin everywhere).
    `interpolation_power`: p of TFC's soft interpolation weight clamp(w, 0, 1)^p
    (`TFCOptions.interpolation_power`, >= 1; 1: the paper's; None: the config's).
    """

    def __init__(self, model: TFCSegFormer, keyframe_interval: int | str = 4, mode: str = "tfc",
                 device: torch.device | str | None = None, short_side: int | None = None,
                 options: TFCOptions | None = None, precision: str = "fp32", *,
                 keyframe_similarity: float | None = None, keyframe_changed_share: float | None = None,
                 max_keyframe_interval: int | None = None,
                 min_keyframe_interval: int | None = None, threads: int | str | None = "auto",
                 backend: str | None = None, msda: bool | float | None = None,
                 msda_gate: float | None = None, hysteresis: float | None = None,
                 interpolation_power: float | None = None, hysteresis_power: float | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        interval, policy = keyframe_schedule(
            keyframe_interval, keyframe_similarity=keyframe_similarity,
            keyframe_changed_share=keyframe_changed_share, max_keyframe_interval=max_keyframe_interval,
            min_keyframe_interval=min_keyframe_interval)
        own = getattr(model, "backend", "pytorch")
        backend = own if backend is None else backend
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        if own != backend and backend == "pytorch":
            raise ValueError("an ONNX Runtime model runs with backend='onnxruntime'; load the "
                             "checkpoint with tfcseg.load_model for the PyTorch backend")
        if backend == "onnxruntime" and precision != "fp32":
            raise ValueError(f"backend onnxruntime runs in fp32, not {precision}")
        options = with_msda(options or model.config.tfc, msda, msda_gate)
        if interpolation_power is not None:
            options = replace(options, interpolation_power=check_power(interpolation_power))
        if mode == "reuse":
            options = replace(options, interpolation="none", msda=False)
        options.validate()
        self.options = options
        self.backend = backend
        if backend == "onnxruntime":
            from .backends.ort import as_onnx_model

            self.model = as_onnx_model(model, device=device, options=options,
                                       threads=threads if isinstance(threads, int) else None)
            self.model.check_options(options)  # an export that cannot run them fails here
            self.dtype = torch.float32
        else:
            self.model = model if device is None else model.to(device)
            self.model.eval()
            self.dtype = next(self.model.parameters()).dtype
        self.device = self.model.device
        self.mode = mode
        # "auto" or a fixed interval; policy: what decides under "auto" (None when fixed)
        self.keyframe_interval: int | str = 1 if mode == "segformer" else interval
        self.policy: KeyframePolicy | None = None if mode == "segformer" else policy
        self.short_side = model.config.inference_short_side if short_side is None else int(short_side)
        self._min_side = smallest_input(model.config)
        if self.short_side < 0:
            raise ValueError(f"short side must be 0 (each frame's own size) or a number of pixels, "
                             f"not {self.short_side}")
        if 0 < self.short_side < self._min_side:
            raise ValueError(f"short side {self.short_side} is below the {self._min_side} pixels "
                             "the encoder needs; use a larger short side")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, not {precision!r}")
        # fp32 weights stay; reduced precision runs the matmuls/convs under autocast
        self.precision = precision
        self._nonfinite_seen = False
        if threads is not None and threads != "auto" and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be auto, None or a count >= 1, not {threads!r}")
        self.threads = threads
        cfg = model.config
        self.hysteresis = LabelHysteresis(
            cfg.label_hysteresis if hysteresis is None else hysteresis,
            cfg.label_hysteresis_power if hysteresis_power is None else hysteresis_power)
        if (backend == "onnxruntime" and self.hysteresis.needs_similarity
                and not getattr(self.model, "has_frame_units", False)):
            raise ValueError(f"{self.model.folder}: this ONNX export predates motion-aware label hysteresis "
                             "(it does not return a frame's features); export the model again, or use "
                             "hysteresis_power 0")
        # the thread-count chooser (CPU only; kept across reset(): the machine's load is not the video's)
        self.tuner: ThreadTuner | None = None
        if self.device.type == "cpu" and threads is not None and backend == "pytorch":
            self.tuner = ThreadTuner() if threads == "auto" else ThreadTuner(candidates=(int(threads),))
        self.reset()

    def reset(self) -> None:
        """Start a new video: drop the keyframe state; the next frame is a keyframe."""
        self._state: KeyframeState | None = None  # the current keyframe's state
        self._since_key = 0  # frames since the current keyframe
        self._index = 0  # frames seen since the start / last reset
        # the previous frame's unit features (`TFCSegFormer.frame_units`, rows [h4*w4, r]), kept
        # only for motion-aware hysteresis
        self._prev_units: torch.Tensor | None = None
        self.hysteresis.reset()

    def _keyframe_due(self, size: tuple[int, int]) -> str | None:
        """Why the next frame is a keyframe whatever its content, or None."""
        if self._state is None:
            return "start"
        if tuple(self._state.size) != tuple(size):
            return "size"
        limit = (self.policy.max_keyframe_interval if self.policy is not None
                 else int(self.keyframe_interval))
        return "interval" if self._since_key >= limit else None

    @property
    def msda_threshold(self) -> float | None:
        """The similarity below which sparse MSDA updates a point, or None where it does not run
        (off, feature reuse, SegFormer mode, or a model whose MSDA is untrained)."""
        if (self.mode != "tfc" or not self.options.msda
                or not getattr(self.model.config, "tfc_trained", False)):
            return None
        return self.options.msda_threshold

    @property
    def msda_gate(self) -> float | None:
        """The margin a label change by sparse MSDA needs (`TFCOptions.msda_gate`), or None where
        MSDA does not run."""
        return None if self.msda_threshold is None else self.options.msda_gate

    @property
    def interpolation_power(self) -> float | None:
        """p of the soft interpolation weight clamp(w, 0, 1)^p (`TFCOptions.interpolation_power`),
        or None where no soft interpolation runs (SegFormer mode, feature reuse, other weights)."""
        if self.mode != "tfc" or self.options.interpolation != "soft":
            return None
        return self.options.interpolation_power

    def _keyframe_units(self) -> torch.Tensor:
        """The current keyframe's unit features as rows [h4*w4, r] (either backend)."""
        if self.backend == "pytorch":
            return self.model.frame_units(self._state.x1, self._state.x2, self.options, state=self._state)
        return self.model.keyframe_units(self._state)

    def segment(self, frames: Iterable[np.ndarray], *,
                return_logits: bool = False) -> Iterator[FrameResult]:
        """One `FrameResult` per frame, as the frames come (the session continues across
        calls until `reset()`). A frame whose size differs from its keyframe's starts a
        new keyframe."""
        for frame in frames:
            yield self.segment_frame(frame, return_logits=return_logits)

    def segment_frame(self, frame: np.ndarray, *, return_logits: bool = False) -> FrameResult:
        """Segment the next frame of the video (see `segment`)."""
        if self.tuner is None:
            return self._segment_frame(frame, return_logits)
        return self.tuner.run(lambda: self._segment_frame(frame, return_logits),
                              lambda r: "key" if r.is_keyframe else "non")

    @torch.inference_mode()
    def _segment_frame(self, frame: np.ndarray, return_logits: bool) -> FrameResult:
        frame = check_frame(frame, self._index)
        height, width = frame.shape[:2]
        size = inference_size(height, width, self.short_side)
        if min(size) < self._min_side:
            raise ValueError(f"frame {self._index}: {size[0]}x{size[1]} at inference is smaller than "
                             f"the {self._min_side} pixels a side the encoder needs; use a "
                             "larger short_side")
        pixels = preprocess(frame, size, self.device, self.dtype)
        reason = self._keyframe_due(size)  # known before running anything; else None
        share, changed = 0.0, None
        amp = PRECISIONS[self.precision]
        # motion-aware hysteresis: this frame's unit features, for its similarity to the previous
        # frame's (rows [h4*w4, r]; at a TFC keyframe they are the ones its non-keyframes use)
        need_units = self.hysteresis.needs_similarity
        units = None
        with torch.autocast(self.device.type, dtype=amp, enabled=amp is not None):
            if reason is not None:
                self._state = None  # free the old state before building the new one
                logits, self._state = self.model.keyframe(pixels)
                if need_units:
                    units = self._keyframe_units()
            elif self.backend != "pytorch":  # whole-frame graphs: the similarity comes with a non-keyframe
                logits, info = self.model.non_keyframe(pixels, self._state, self.options)
                share, units = info.msda_share, info.units
                if self.policy is not None:
                    changed = self.policy.changed_share(info.similarity)
                    if (self._since_key >= self.policy.min_keyframe_interval
                            and changed > self.policy.keyframe_changed_share):
                        reason = "change"  # run again as a keyframe (no stages 1-2 to reuse here)
                        self._state = None
                        logits, self._state = self.model.keyframe(pixels)
                        share = 0.0  # (units: this frame's own, from the non-keyframe pass: the same)
            else:
                x1, x2 = self.model.low_level(pixels)
                similarity = None
                if need_units:
                    # computed once: for the similarity to the keyframe and to the previous frame
                    units = self.model.frame_units(x1, x2, self.options)
                    key_units = self.model.frame_units(x1, x2, self.options, state=self._state)
                    similarity = self.model.units_similarity(key_units, units, (x1.shape[0], *x1.shape[-2:]))
                elif self.policy is not None:
                    similarity = self.model.similarity(x1, x2, self._state, self.options)
                if self.policy is not None:
                    changed = self.policy.changed_share(similarity)
                    if (self._since_key >= self.policy.min_keyframe_interval
                            and changed > self.policy.keyframe_changed_share):
                        reason = "change"
                if reason is not None:  # this frame is the keyframe: its stages 1-2 reused
                    self._state = None
                    logits, self._state = self.model.keyframe_from_low_level(size, x1, x2)
                    if units is not None:  # its non-keyframes' unit features: these very rows
                        self._state.cache[f"unit{self.options.similarity_level}"] = units
                else:
                    logits, info = self.model.non_keyframe_from_low_level(
                        x1, x2, self._state, self.options, similarity)
                    share = info.msda_share
        is_key = reason is not None
        if reason in ("size", "change"):  # another picture: the held labels are not its labels
            self.hysteresis.reset()
        motion = None  # [h4, w4]: the similarity to the previous frame (motion-aware hysteresis)
        if need_units:
            prev, self._prev_units = self._prev_units, units
            if self.hysteresis.holding and prev is not None and prev.shape == units.shape:
                motion = TFCSegFormer.units_similarity(prev, units, tuple(logits.shape[-2:]))
        self._since_key = 1 if is_key else self._since_key + 1
        if not self._nonfinite_seen and not bool(torch.isfinite(logits).all()):
            self._nonfinite_seen = True  # said once per session
            why = "broken weights?" if self.precision == "fp32" else f"broken weights, or {self.precision} overflowing?"
            warnings.warn(f"frame {self._index}: the model's output holds NaN or Inf ({why}); the labels of "
                          "those pixels are meaningless", RuntimeWarning, stacklevel=2)
        labels = labels_from_logits(self.hysteresis(logits.float(), motion), (height, width))[0]  # [H, W], frame size
        dtype = torch.uint8 if self.model.num_classes <= 255 else torch.int32
        result = FrameResult(
            index=self._index, labels=labels.to(dtype).cpu().numpy(), is_keyframe=is_key,
            msda_share=share,
            logits_lowres=logits[0].float().cpu().clone() if return_logits else None,
            keyframe_reason=reason, changed_share=changed,
        )
        self._index += 1
        return result
