"""Streaming video segmentation: a session that holds one keyframe's state, never the video.

    seg = VideoSegmenter(model, keyframe_interval=4, mode="tfc")
    for result in seg.segment(frames):        # frames: H x W x 3 uint8 RGB arrays
        result.labels                         # H x W label map at the frame's own size

Frames are resized so that their short side is `short_side` (aspect kept, no padding:
SegFormer takes any size); a frame already at that size is not resized. Labels are made
directly at the frame's own size, as mmseg does: the argmax of the 1/4-resolution logits
upsampled bilinearly (align_corners=False) to the frame size, computed exactly but cheaply
by `postprocess.labels_from_logits` (interpolated logits only on class boundaries).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch

from .models.config import TFCOptions, smallest_input
from .models.segformer import IMAGENET_MEAN, IMAGENET_STD, TFCSegFormer
from .models.state import KeyframeState
from .postprocess import labels_from_logits
from .runtime import BACKENDS, MODES, PRECISIONS


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


@dataclass
class FrameResult:
    index: int  # frame number since the start (or the last `reset()`)
    labels: np.ndarray  # [H, W] at the frame's own size; uint8 if K <= 255 else int32
    is_keyframe: bool
    msda_share: float  # fraction of points sparse MSDA updated (0.0 at keyframes / when off)
    logits_lowres: torch.Tensor | None = None  # [K, h4, w4] on the CPU, only if asked for


class VideoSegmenter:
    """A streaming video session over a `TFCSegFormer`.

    mode: `tfc` (keyframe every `keyframe_interval` frames, TFC in between, options from
    `model.config.tfc`), `reuse` (the same with interpolation `none` and MSDA off: feature
    reuse only) or `segformer` (every frame a keyframe). `short_side`: the inference size's
    short side (default `model.config.inference_short_side`; 0 = each frame's own size).
    `device`: where to run (the model is moved there; default: where the model is).
    `precision`: fp32, or bf16/fp16 through autocast (bf16 on CPUs with AMX/AVX512-BF16, both on
    GPUs); labels agree with fp32 on most pixels (`tfcseg benchmark` reports how many). The
    model is put in eval mode. Only the current keyframe's state is held.
    `backend`: `pytorch`, or `onnxruntime` (`pip install "tfcseg[onnx]"`): the model's two ONNX
    graphs in ONNX Runtime (CPU provider, CUDA's for a CUDA `device`), fp32; `model` is then
    an `OnnxRuntimeModel` (`tfcseg.load_onnx_model`) or a `TFCSegFormer`, exported once into
    tfcseg's cache. Default: the model's own (onnxruntime for an `OnnxRuntimeModel`).
    """

    def __init__(self, model: TFCSegFormer, keyframe_interval: int = 4, mode: str = "tfc",
                 device: torch.device | str | None = None, short_side: int | None = None,
                 options: TFCOptions | None = None, precision: str = "fp32",
                 backend: str | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        if int(keyframe_interval) < 1:
            raise ValueError(f"keyframe_interval must be >= 1, not {keyframe_interval}")
        own = getattr(model, "backend", "pytorch")
        backend = own if backend is None else backend
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
        if own != backend and backend == "pytorch":
            raise ValueError("an ONNX Runtime model runs with backend='onnxruntime'; load the "
                             "checkpoint with tfcseg.load_model for the PyTorch backend")
        if backend == "onnxruntime" and precision != "fp32":
            raise ValueError(f"backend onnxruntime runs in fp32, not {precision}")
        options = options or model.config.tfc
        if mode == "reuse":
            options = replace(options, interpolation="none", msda=False)
        options.validate()
        self.options = options
        self.backend = backend
        if backend == "onnxruntime":
            from .backends.ort import as_onnx_model

            self.model = as_onnx_model(model, device=device, options=options)
            self.model.check_options(options)  # an export that cannot run them fails here
            self.dtype = torch.float32
        else:
            self.model = model if device is None else model.to(device)
            self.model.eval()
            self.dtype = next(self.model.parameters()).dtype
        self.device = self.model.device
        self.mode = mode
        self.keyframe_interval = 1 if mode == "segformer" else int(keyframe_interval)
        self.short_side = model.config.inference_short_side if short_side is None else int(short_side)
        self._min_side = smallest_input(model.config)
        if 0 < self.short_side < self._min_side:
            raise ValueError(f"short side {self.short_side} is below the {self._min_side} pixels "
                             "the encoder needs; use a larger short side")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, not {precision!r}")
        # fp32 weights stay; reduced precision runs the matmuls/convs under autocast
        self.precision = precision
        self.reset()

    def reset(self) -> None:
        """Start a new video: drop the keyframe state; the next frame is a keyframe."""
        self._state: KeyframeState | None = None  # the current keyframe's state
        self._since_key = 0  # frames since the current keyframe
        self._index = 0  # frames seen since the start / last reset

    def segment(self, frames: Iterable[np.ndarray], *,
                return_logits: bool = False) -> Iterator[FrameResult]:
        """One `FrameResult` per frame, as the frames come (the session continues across
        calls until `reset()`). A frame whose size differs from its keyframe's starts a
        new keyframe."""
        for frame in frames:
            yield self.segment_frame(frame, return_logits=return_logits)

    @torch.inference_mode()
    def segment_frame(self, frame: np.ndarray, *, return_logits: bool = False) -> FrameResult:
        """Segment the next frame of the video (see `segment`)."""
        frame = check_frame(frame, self._index)
        height, width = frame.shape[:2]
        size = inference_size(height, width, self.short_side)
        if min(size) < self._min_side:
            raise ValueError(f"frame {self._index}: {size[0]}x{size[1]} at inference is smaller than "
                             f"the {self._min_side} pixels a side the encoder needs; use a "
                             "larger short_side")
        pixels = preprocess(frame, size, self.device, self.dtype)
        is_key = (self._state is None or self._since_key >= self.keyframe_interval
                  or tuple(self._state.size) != size)
        share = 0.0
        amp = PRECISIONS[self.precision]
        with torch.autocast(self.device.type, dtype=amp, enabled=amp is not None):
            if is_key:
                self._state = None  # free the old state before building the new one
                logits, self._state = self.model.keyframe(pixels)
                self._since_key = 1
            else:
                logits, info = self.model.non_keyframe(pixels, self._state, self.options)
                share = info.msda_share
                self._since_key += 1
        labels = labels_from_logits(logits.float(), (height, width))[0]  # [H, W], frame size
        dtype = torch.uint8 if self.model.num_classes <= 255 else torch.int32
        result = FrameResult(
            index=self._index, labels=labels.to(dtype).cpu().numpy(), is_keyframe=is_key,
            msda_share=share,
            logits_lowres=logits[0].float().cpu().clone() if return_logits else None,
        )
        self._index += 1
        return result
