"""The ONNX Runtime backend: a model that runs the two exported graphs (onnx_export.py).

`OnnxRuntimeModel` has the inference face of `TFCSegFormer` that `VideoSegmenter` uses:
`config`, `num_classes`, `device`, `keyframe(pixels)` -> (logits, state) and
`non_keyframe(pixels, state, options)` -> (logits, NonKeyframeInfo), with torch tensors in
and out (on the CPU) and the same layouts (logits [1, K, h4, w4], a channels-last view). The
keyframe state is the keyframe graph's outputs, kept as NumPy arrays and fed back by name.
Run-time options (threshold, MSDA on/off, interpolation, fixed weight, MSDA gate, interpolation power) are graph inputs, so
every mode runs on one export; the similarity level and whether MSDA is in the graph are
fixed at export.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import TfcsegError
from ..models.config import CONFIG_NAME, ModelConfig, TFCOptions
from ..models.state import NonKeyframeInfo
from ..models.temporal import UNTRAINED_MSDA
from .onnx_export import EXTRA_HINT, KEY_PREFIX

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def require_onnxruntime():
    """The `onnxruntime` module, or a one-line error naming the extra that installs it."""
    try:
        import onnxruntime
    except ImportError:
        raise TfcsegError(f"backend onnxruntime needs ONNX Runtime: {EXTRA_HINT}",
                          options=("backend",)) from None
    return onnxruntime


def onnx_entry(folder: str | Path) -> dict | None:
    """The "onnx" entry of a folder's config.json (an ONNX export), else None."""
    try:
        data = json.loads((Path(folder) / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return None
    entry = data.get("onnx") if isinstance(data, dict) else None
    return entry if isinstance(entry, dict) else None


def providers_for(device: torch.device | str | None) -> list:
    """ONNX Runtime providers for a device: the CPU provider, or CUDA's (with the CPU's for
    what it lacks) for a CUDA device; a clear error where this ONNX Runtime has no CUDA."""
    ort = require_onnxruntime()
    dev = torch.device(device) if device is not None and str(device) != "auto" else torch.device("cpu")
    if dev.type == "cpu":
        return [CPU]
    if dev.type == "cuda":
        if CUDA not in ort.get_available_providers():
            raise TfcsegError(f"device {dev}: this ONNX Runtime has no CUDA provider (install "
                              "onnxruntime-gpu, or use device cpu)", options=("device",))
        return [(CUDA, {"device_id": dev.index or 0}), CPU]
    raise TfcsegError(f"device {dev}: backend onnxruntime runs on cpu or cuda", options=("device", "backend"))


@dataclass
class OnnxKeyframeState:
    """A keyframe's state: its graph outputs by name (NumPy arrays), and its input size."""

    size: tuple[int, int]
    tensors: dict[str, np.ndarray] = field(repr=False)

    @property
    def batch(self) -> int:
        return 1


class OnnxRuntimeModel:
    """The two graphs of an ONNX export in ONNX Runtime sessions (see the module docstring)."""

    backend = "onnxruntime"

    def __init__(self, folder: str | Path, device: torch.device | str | None = "cpu",
                 threads: int | None = None) -> None:
        ort = require_onnxruntime()
        folder = Path(folder)
        entry = onnx_entry(folder)
        if entry is None:
            raise TfcsegError(f"{folder}: not an ONNX export (config.json has no \"onnx\" entry); "
                              "write one with `tfcseg export MODEL --format onnx -o DIR`")
        self.folder = folder
        self.config = ModelConfig.load(folder / CONFIG_NAME)
        self.entry = entry
        self.state_names = tuple(entry["state"])
        self.graph_msda = bool(entry["msda"])
        self.similarity_level = int(entry["similarity_level"])
        self.interpolation_codes = dict(entry["interpolation_codes"])
        self.providers = providers_for(device)
        self.provider_device = device  # what `providers` were chosen for (see as_onnx_model)
        options = ort.SessionOptions()
        # `threads`, else as the PyTorch backend (fixed for the sessions' life: ONNX Runtime
        # has no per-run count, so VideoSegmenter's threads="auto" tuning is PyTorch's only)
        self.threads = int(threads) if threads else torch.get_num_threads()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        sessions = []
        for key in ("keyframe", "non_keyframe"):
            path = folder / entry[key]
            if not path.is_file():
                raise TfcsegError(f"{path}: missing from the ONNX export (export it again)")
            try:
                sessions.append(ort.InferenceSession(str(path), options, providers=self.providers))
            except Exception as exc:  # noqa: BLE001 - ONNX Runtime's own exception types
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise TfcsegError(f"{path}: ONNX Runtime cannot load it ({first})") from None
        self._key, self._non = sessions
        self._non_inputs = {i.name for i in self._non.get_inputs()}
        self._non_outputs = [o.name for o in self._non.get_outputs()]
        # whether a non-keyframe returns the frame's unit features (motion-aware hysteresis;
        # exports before it do not)
        self.has_frame_units = "unit" in self._non_outputs
        self._warned_untrained = False

    # ---- the face VideoSegmenter uses ------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def device(self) -> torch.device:
        """Where inputs and outputs live (ONNX Runtime copies them to its provider)."""
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def eval(self) -> "OnnxRuntimeModel":
        return self

    @staticmethod
    def _pixels(pixels: torch.Tensor) -> np.ndarray:
        if pixels.dim() != 4 or pixels.shape[0] != 1:
            raise ValueError(f"the ONNX graphs take one frame [1, 3, H, W], got {tuple(pixels.shape)}")
        return np.ascontiguousarray(pixels.detach().to("cpu", torch.float32).numpy())

    @staticmethod
    def _logits(nhwc: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(nhwc).permute(0, 3, 1, 2)  # [1, K, h4, w4], channels-last

    def keyframe(self, pixels: torch.Tensor) -> tuple[torch.Tensor, OnnxKeyframeState]:
        """Keyframe pass: logits [1, K, h4, w4] and the state its non-keyframes need."""
        outs = self._key.run(list(self.state_names), {"pixels": self._pixels(pixels)})
        state = OnnxKeyframeState(tuple(pixels.shape[-2:]), dict(zip(self.state_names, outs)))
        return self._logits(outs[0].copy()), state  # a copy: the state's logits stay as they are

    def check_options(self, options: TFCOptions) -> bool:
        """Whether sparse MSDA runs with `options` (as `TemporalFusion.msda_enabled`); an error
        for options this export cannot run."""
        options.validate()
        if options.similarity_level != self.similarity_level:
            raise TfcsegError(f"{self.folder}: this ONNX export computes the similarity on level "
                              f"{self.similarity_level}, not {options.similarity_level}; export the "
                              "model again with that similarity_level in its config")
        if (options.interpolation == "soft" and options.interpolation_power != 1
                and "interpolation_power" not in self._non_inputs):
            raise TfcsegError(f"{self.folder}: this ONNX export predates interpolation_power and "
                              f"cannot sharpen the interpolation (asked: {options.interpolation_power}); "
                              "export the model again")
        if not options.msda:
            return False
        if not self.config.tfc_trained:
            if not self._warned_untrained:
                warnings.warn(UNTRAINED_MSDA, stacklevel=3)
                self._warned_untrained = True
            return False
        if not self.graph_msda:
            raise TfcsegError(f"{self.folder}: this ONNX export has no sparse MSDA (exported with "
                              "msda off); export it again with \"msda\": true in the model's config")
        if options.msda_gate > 0 and "msda_gate" not in self._non_inputs:
            raise TfcsegError(f"{self.folder}: this ONNX export predates msda_gate and cannot gate MSDA's "
                              f"repairs (asked: {options.msda_gate}); export the model again")
        return True

    def non_keyframe(self, pixels: torch.Tensor, state: OnnxKeyframeState,
                     options: TFCOptions | None = None) -> tuple[torch.Tensor, NonKeyframeInfo]:
        """Non-keyframe pass against `state`: logits [1, K, h4, w4] and info (similarity,
        msda_share). `options` default to the config's."""
        options = options or self.config.tfc
        msda = self.check_options(options)
        if tuple(pixels.shape[-2:]) != tuple(state.size):
            raise ValueError(f"frame size {tuple(pixels.shape[-2:])} differs from its keyframe's {state.size}")
        feed = {KEY_PREFIX + name: value for name, value in state.tensors.items()}
        feed.update(
            pixels=self._pixels(pixels),
            msda_threshold=np.array(options.msda_threshold, np.float32),
            msda=np.array(int(msda), np.int64),
            interpolation=np.array(self.interpolation_codes[options.interpolation], np.int64),
            fixed_weight=np.array(options.fixed_weight, np.float32),
            msda_gate=np.array(options.msda_gate, np.float32),
            interpolation_power=np.array(options.interpolation_power, np.float32),
        )
        # (an input the graph does not use is not in it: e.g. msda_threshold without MSDA
        # and a soft interpolation)
        outs = dict(zip(self._non_outputs, self._non.run(None, {k: v for k, v in feed.items() if k in self._non_inputs})))
        unit = outs.get("unit")
        return self._logits(outs["logits"]), NonKeyframeInfo(
            similarity=torch.from_numpy(outs["similarity"]), msda_share=float(outs["msda_share"]) if msda else 0.0,
            units=None if unit is None else torch.from_numpy(unit).view(-1, unit.shape[-1]))

    @staticmethod
    def keyframe_units(state: OnnxKeyframeState) -> torch.Tensor:
        """A keyframe's unit features as rows [h4*w4, r] (`TFCSegFormer.frame_units`)."""
        unit = state.tensors["unit"]
        return torch.from_numpy(unit).view(-1, unit.shape[-1])


def load_onnx_model(source: str | Path | None, device: torch.device | str | None = "cpu") -> OnnxRuntimeModel:
    """An `OnnxRuntimeModel` for any model source (`tfcseg.load_model`'s: a checkpoint folder
    or file, registry name, Hub id, None for the shipped default): an ONNX export runs as it
    is; any other model is exported once into tfcseg's cache (needs the onnx package)."""
    require_onnxruntime()
    from ..hub.resolve import resolve_model_source
    from ..models.checkpoint import build_from_checkpoint
    from .onnx_export import cached_export

    path = resolve_model_source(source)
    if path.is_dir() and onnx_entry(path) is not None:
        return OnnxRuntimeModel(path, device)
    return OnnxRuntimeModel(cached_export(build_from_checkpoint(path)), device)


def as_onnx_model(model, device: torch.device | str | None = None,
                  options: TFCOptions | None = None, threads: int | None = None) -> OnnxRuntimeModel:
    """`model` for the ONNX Runtime backend: an `OnnxRuntimeModel` as it is; a `TFCSegFormer`
    exported once into tfcseg's cache (with sparse MSDA when `options`, default its config's,
    turn it on and the module is trained), on `device` (default: the model's), with
    `threads` intra-op threads (default: PyTorch's count)."""
    if isinstance(model, OnnxRuntimeModel):
        other_device = device is not None and providers_for(device) != model.providers
        if other_device or (threads and threads != model.threads):
            return OnnxRuntimeModel(model.folder, device if other_device else model.provider_device, threads)
        return model
    from .onnx_export import cached_export

    require_onnxruntime()
    msda = (options or model.config.tfc).msda
    return OnnxRuntimeModel(cached_export(model, msda=msda), device if device is not None else model.device,
                            threads)
