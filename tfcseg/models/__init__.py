"""The model: SegFormer's MiT encoder and all-MLP decoder, TFC's temporal fusion, configs and
checkpoints.

config.py     ModelConfig / TFCOptions (JSON data) and the variant table
layout.py     image / sequence / rows layouts of a feature map
mit.py        the MiT encoder
decoder.py    the all-MLP decoder (plain form)
folded.py     the decoder folded for inference (exact, cheaper)
temporal.py   TemporalFusion: similarity, interpolation, sparse MSDA
state.py      what a keyframe leaves for its non-keyframes; what the passes return
segformer.py  TFCSegFormer: the composition
checkpoint.py local checkpoint files in and out (tfcseg, transformers, NVlabs/mmseg)
"""

from .config import CONFIG_NAME, VARIANTS, WEIGHTS_NAME, ModelConfig, TFCOptions
from .segformer import IMAGENET_MEAN, IMAGENET_STD, TFCSegFormer
from .state import ClipOutput, KeyframeState, NonKeyframeInfo

__all__ = ["ModelConfig", "TFCOptions", "VARIANTS", "CONFIG_NAME", "WEIGHTS_NAME", "TFCSegFormer",
           "IMAGENET_MEAN", "IMAGENET_STD", "KeyframeState", "NonKeyframeInfo", "ClipOutput"]
