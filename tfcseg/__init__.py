"""tfcseg: efficient and stable video semantic segmentation (TFC, AAAI 2024) on SegFormer.

The house, by layer (imports run downwards only):

    cli/                      the command line: parse, call, print
    segment, evaluate, benchmark   whole tasks
    segmenter                 VideoSegmenter: a streaming video session
    training/                 TrainConfig, Trainer
    backends/                 ONNX export, the ONNX Runtime backend (optional extra "onnx")
    hub/                      models by name: registry, Hub downloads, conversion, export
    data/                     VSPW-layout data, clips, synthetic data, mask files
    models/                   MiT encoder, decoder (plain and folded), TemporalFusion, TFCSegFormer
    ops/                      registered ops (sparse MSDA, attention) and their compiled kernels
    io/                       atomic files, video reading and writing, overlays
    metrics, postprocess, runtime, errors

`import tfcseg` loads nothing heavy: the names below are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "load_model": "tfcseg.hub.resolve",
    "resolve_model_source": "tfcseg.hub.resolve",
    "export_checkpoint": "tfcseg.hub.export",
    "push_to_hub": "tfcseg.hub.export",
    "MODEL_HELP": "tfcseg.hub.refs",
    "ModelEntry": "tfcseg.hub.registry",
    "list_models": "tfcseg.hub.registry",
    "register_model": "tfcseg.hub.registry",
    "save_checkpoint": "tfcseg.models.checkpoint",
    "convert_checkpoint": "tfcseg.models.checkpoint",
    "ModelConfig": "tfcseg.models.config",
    "TFCOptions": "tfcseg.models.config",
    "VARIANTS": "tfcseg.models.config",
    "TFCSegFormer": "tfcseg.models.segformer",
    "TfcsegError": "tfcseg.errors",
    "CheckpointError": "tfcseg.errors",
    "WriteError": "tfcseg.errors",
    "export_onnx": "tfcseg.backends.onnx_export",
    "load_onnx_model": "tfcseg.backends.ort",
    "OnnxRuntimeModel": "tfcseg.backends.ort",
    "VideoSegmenter": "tfcseg.segmenter",
    "FrameResult": "tfcseg.segmenter",
    "KeyframePolicy": "tfcseg.segmenter",
    "VSPWDataset": "tfcseg.data.vspw",
    "ClipDataset": "tfcseg.data.clips",
    "make_synthetic_vspw": "tfcseg.data.synthetic",
    "evaluate_model": "tfcseg.evaluate",
    "score_predictions": "tfcseg.evaluate",
    "segment_video": "tfcseg.segment",
    "segment_videos": "tfcseg.segment",
    "TrainConfig": "tfcseg.training.config",
    "Trainer": "tfcseg.training.loop",
    "train": "tfcseg.training.loop",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tfcseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
