"""The TFC model: SegFormer (MiT encoder + all-MLP decoder) plus TFC's non-keyframe path.

Keyframe pass  = plain SegFormer: all four encoder stages, the decoder, the classifier.
The non-keyframe pass (stages 1-2, similarity, sparse MSDA, interpolation) lives in
`tfc.py` and uses the pieces this class exposes.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .decoder import AllMLPDecoder
from .mit import MixTransformer

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TFCSegFormer(nn.Module):
    """SegFormer with TFC's modules. Parameters: `encoder.*`, `decoder.*`, `msda.*`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = MixTransformer(config)
        self.decoder = AllMLPDecoder(config)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def image_logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """SegFormer's logits [B, K, ceil(H/4), ceil(W/4)] for ImageNet-normalised pixels
        [B, 3, H, W] of any size (the keyframe path)."""
        return self.decoder(self.encoder(pixels))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image_logits(pixels)
