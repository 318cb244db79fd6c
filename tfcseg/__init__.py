"""tfcseg: efficient and stable video semantic segmentation (TFC, AAAI 2024) on SegFormer."""

from __future__ import annotations

__version__ = "0.1.0"

from .checkpoint import convert_checkpoint, load_model, save_checkpoint  # noqa: E402
from .config import VARIANTS, ModelConfig, TFCOptions  # noqa: E402
from .data import ClipDataset, VSPWDataset, make_synthetic_vspw  # noqa: E402
from .errors import CheckpointError, TfcsegError  # noqa: E402
from .hub import MODEL_HELP, export_checkpoint, push_to_hub, resolve_model_source  # noqa: E402
from .evaluate import evaluate_model, score_predictions  # noqa: E402
from .model import TFCSegFormer  # noqa: E402
from .video import FrameResult, VideoSegmenter  # noqa: E402
from .registry import ModelEntry, list_models, register_model  # noqa: E402
from .segment import segment_video  # noqa: E402
from .train import TrainConfig, Trainer  # noqa: E402  (tfcseg.train.train(cfg) runs one)

__all__ = [
    "__version__", "load_model", "save_checkpoint", "convert_checkpoint", "ModelConfig",
    "TFCOptions", "VARIANTS", "TFCSegFormer", "TfcsegError", "CheckpointError",
    "VideoSegmenter", "FrameResult",
    "VSPWDataset", "ClipDataset", "make_synthetic_vspw", "evaluate_model", "score_predictions",
    "resolve_model_source", "list_models", "register_model", "ModelEntry", "export_checkpoint",
    "push_to_hub", "MODEL_HELP",
    "segment_video",
    "TrainConfig", "Trainer",
]
