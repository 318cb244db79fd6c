"""The TFC model: SegFormer (MiT encoder + all-MLP decoder) plus TFC's non-keyframe path.

Keyframe pass  = plain SegFormer: all four encoder stages, the decoder, the classifier.
The non-keyframe pass (stages 1-2, similarity, sparse MSDA, interpolation) and the training
pass over a clip live in `tfc.py`; this class exposes them as `keyframe`, `non_keyframe`
and `clip_forward`.
"""

from __future__ import annotations

import torch
from torch import nn

from . import tfc
from .config import ModelConfig, TFCOptions
from .decoder import AllMLPDecoder
from .mit import MixTransformer
from .msda import MSDeformAttn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TFCSegFormer(nn.Module):
    """SegFormer with TFC's modules. Parameters: `encoder.*`, `decoder.*`, `msda.*`."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = MixTransformer(config)
        self.decoder = AllMLPDecoder(config)
        # Always built (fixed checkpoint keys `msda.*`); used at inference only when
        # config.tfc_trained. Queries: z_t (D channels); values: the decoder's projections.
        self.msda = MSDeformAttn(config.decoder_dim, config.tfc.msda_levels,
                                 config.tfc.msda_heads, config.tfc.msda_points)

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def image_logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """SegFormer's logits [B, K, ceil(H/4), ceil(W/4)] for ImageNet-normalised pixels
        [B, 3, H, W] of any size (the keyframe path). In eval mode without autograd they are
        a channels-last tensor (the folded head's layout): `.contiguous()` before `.view()`."""
        return self.decoder(self.encoder(pixels))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image_logits(pixels)

    # ---- TFC (see tfc.py) ---------------------------------------------------------------
    def keyframe(self, pixels: torch.Tensor) -> tuple[torch.Tensor, tfc.KeyframeState]:
        """Keyframe pass (eval): logits [B, K, h4, w4], identical to `image_logits`, and the
        state its non-keyframes need."""
        return tfc.keyframe(self, pixels)

    def non_keyframe(self, pixels: torch.Tensor, state: tfc.KeyframeState,
                     options: TFCOptions | None = None) -> tuple[torch.Tensor, tfc.NonKeyframeInfo]:
        """Non-keyframe pass (eval): logits [B, K, h4, w4] and info (similarity, msda_share).
        `options` default to `config.tfc`."""
        return tfc.non_keyframe(self, pixels, state, options)

    def clip_forward(self, clip: torch.Tensor) -> tfc.ClipOutput:
        """Training pass over a clip [B, T, 3, H, W] (frame 0 the keyframe): logits
        [B, T, K, h4, w4] and similarity [B, T-1, h4, w4]; differentiable."""
        return tfc.clip_forward(self, clip)
