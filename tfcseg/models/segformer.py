"""The TFC model: SegFormer (MiT encoder + all-MLP decoder) composed with TFC's temporal fusion.

    keyframe      all four encoder stages, the decoder (folded), the classifier; keeps a state
    non_keyframe  encoder stages 1-2, then TemporalFusion against the keyframe's state
    clip_forward  the differentiable training pass over a clip (keyframe + non-keyframes)

Adaptive keyframes split a frame's pass in two: `low_level` (encoder stages 1-2), then
`similarity` to the current keyframe, then either `non_keyframe_from_low_level` or, when the
frame is to be a keyframe after all, `keyframe_from_low_level` (stages 3-4, the decoder, a
new state: the same as `keyframe` on the frame, without running stages 1-2 again).

Parameters: `encoder.*` (mit.py), `decoder.*` (decoder.py), `temporal.msda.*` (temporal.py).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig, TFCOptions
from .decoder import AllMLPDecoder
from .folded import eval_head
from .layout import no_autocast, rows_to_image
from .mit import MixTransformer
from .state import ClipOutput, KeyframeState, NonKeyframeInfo
from .temporal import TemporalFusion, similarity_from_rows

# Pixel normalisation of every SegFormer checkpoint (ImageNet mean and std, RGB, 0..1 units).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TFCSegFormer(nn.Module):
    """SegFormer with TFC's temporal fusion."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = MixTransformer(config)
        self.decoder = AllMLPDecoder(config)
        # Always built (fixed checkpoint keys `temporal.msda.*`); sparse MSDA is used at
        # inference only when config.tfc_trained.
        self.temporal = TemporalFusion(config)

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

    # ---- TFC inference (eval mode) ----------------------------------------------------------
    def _require_eval(self) -> None:
        if self.training:
            raise RuntimeError("keyframe()/non_keyframe() are the inference path: call model.eval() "
                               "first (clip_forward() is the training path)")

    def keyframe(self, pixels: torch.Tensor) -> tuple[torch.Tensor, KeyframeState]:
        """Keyframe pass: logits [B, K, h4, w4] (identical to `image_logits`; a channels-last
        view) and the state its non-keyframes need."""
        self._require_eval()
        return self._keyframe_pass(tuple(pixels.shape[-2:]), self.encoder(pixels))

    def low_level(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder stages 1-2 of a frame (x1 [B, C_1, h4, w4], x2 [B, C_2, h8, w8]): all that a
        non-keyframe runs of the encoder, and what `similarity`, `non_keyframe_from_low_level`
        and `keyframe_from_low_level` start from."""
        self._require_eval()
        x1, x2 = self.encoder(pixels, stages=2)
        return x1, x2

    def keyframe_from_low_level(self, size: tuple[int, int], x1: torch.Tensor,
                                x2: torch.Tensor) -> tuple[torch.Tensor, KeyframeState]:
        """`keyframe` of a frame whose stages 1-2 (`low_level`) are already computed: runs
        stages 3-4, the decoder and the classifier only. `size`: the frame's pixel size
        (H, W), kept in the state. The same logits and state as `keyframe(pixels)`."""
        self._require_eval()
        x3, x4 = self.encoder(x2, stages=4, start=2)
        return self._keyframe_pass(tuple(size), [x1, x2, x3, x4])

    def _keyframe_pass(self, size: tuple[int, int],
                       feats: list[torch.Tensor]) -> tuple[torch.Tensor, KeyframeState]:
        rows, base = eval_head(self.decoder, feats)
        x1 = feats[0]
        state = KeyframeState(size=tuple(int(v) for v in size), x1=x1, x2=feats[1], x3=feats[2],
                              x4=feats[3], base=base, logits=rows)
        # a copy for the caller: editing the returned logits must not change what later
        # non-keyframes interpolate towards
        return rows_to_image(rows.clone(), x1.shape[0], *x1.shape[-2:]), state

    def similarity(self, x1: torch.Tensor, x2: torch.Tensor, state: KeyframeState,
                   options: TFCOptions | None = None) -> torch.Tensor:
        """TFC's similarity w_t [B, h4, w4] (raw cosine, exactly 1.0 where the features equal
        the keyframe's) of a frame's stages 1-2 to `state`'s keyframe, at
        `options.similarity_level`: what a non-keyframe computes first, and what adaptive
        keyframe selection reads."""
        self._require_eval()
        options = options or self.config.tfc
        options.validate()
        self._check_low_level(x1, x2, state)
        return self.temporal.similarity(self.decoder, x1, x2, state, options.similarity_level)

    def frame_units(self, x1: torch.Tensor, x2: torch.Tensor, options: TFCOptions | None = None,
                    state: KeyframeState | None = None) -> torch.Tensor:
        """The unit features u = x̂ / |x̂| of a frame at `options.similarity_level`, as rows
        [B*h4*w4, r] in the reduced basis (`TemporalFusion.unit_rows`): what the similarity
        compares. With `state` (the frame's own keyframe state), the rows its non-keyframes
        will use, computed once and cached there. Two frames' rows give their similarity with
        `units_similarity`."""
        self._require_eval()
        level = (options or self.config.tfc).similarity_level
        if state is not None:
            return self.temporal._keyframe_unit(self.decoder, state, level)
        with no_autocast(x1):
            return self.temporal.unit_rows(self.decoder, level, x1, x2)

    @staticmethod
    def units_similarity(a: torch.Tensor, b: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        """The cosine similarity per point of two frames' unit rows (`frame_units`) as a map of
        `shape` ([B, h4, w4]); exactly 1.0 where they are equal. Neither input is changed."""
        return similarity_from_rows(a, b.clone()).view(*shape)

    def non_keyframe(self, pixels: torch.Tensor, state: KeyframeState,
                     options: TFCOptions | None = None) -> tuple[torch.Tensor, NonKeyframeInfo]:
        """Non-keyframe pass against `state` (its keyframe's): logits [B, K, h4, w4] (a
        channels-last view) and info (similarity, msda_share). `options` default to
        `config.tfc` (the MSDA module's heads, points and levels are fixed when the model is
        built; here only similarity_level, interpolation, fixed_weight, msda and
        msda_threshold apply)."""
        self._require_eval()
        if tuple(pixels.shape[-2:]) != tuple(state.size) or pixels.shape[0] != state.batch:
            raise ValueError(f"frame batch/size {tuple(pixels.shape[:1]) + tuple(pixels.shape[-2:])} "
                             f"differs from its keyframe's {(state.batch, *state.size)}")
        x1, x2 = self.encoder(pixels, stages=2)
        return self.non_keyframe_from_low_level(x1, x2, state, options)

    def non_keyframe_from_low_level(self, x1: torch.Tensor, x2: torch.Tensor, state: KeyframeState,
                                    options: TFCOptions | None = None,
                                    similarity: torch.Tensor | None = None
                                    ) -> tuple[torch.Tensor, NonKeyframeInfo]:
        """`non_keyframe` of a frame whose stages 1-2 (`low_level`) are already computed;
        `similarity`: its `similarity(x1, x2, state, options)` if already computed (not
        computed again)."""
        self._require_eval()
        options = options or self.config.tfc
        options.validate()
        self._check_low_level(x1, x2, state)
        rows, info = self.temporal.non_keyframe(self.decoder, x1, x2, state, options, similarity)
        return rows_to_image(rows, x1.shape[0], *x1.shape[-2:]), info

    @staticmethod
    def _check_low_level(x1: torch.Tensor, x2: torch.Tensor, state: KeyframeState) -> None:
        if x1.shape != state.x1.shape or x2.shape != state.x2.shape:
            raise ValueError(f"stage-1/2 maps {tuple(x1.shape)}, {tuple(x2.shape)} differ from "
                             f"the keyframe's {tuple(state.x1.shape)}, {tuple(state.x2.shape)}")

    # ---- TFC training ---------------------------------------------------------------------------
    def clip_forward(self, clip: torch.Tensor, teacher: bool = False) -> ClipOutput:
        """Training pass over a clip [B, T, 3, H, W] (frame 0 the keyframe, frames 1..T-1
        non-keyframes against it): logits [B, T, K, h4, w4] and similarity [B, T-1, h4, w4];
        differentiable. `teacher`: also per-frame SegFormer's logits of frames 1..T-1 (stages
        3-4 run on each of them), without gradients; only for a frozen SegFormer in eval mode
        (training with `train_only` "tfc"), whose logits are then exactly the inference ones."""
        if clip.dim() != 5:
            raise ValueError(f"clip must be [B, T, 3, H, W], got {tuple(clip.shape)}")
        if teacher and (self.encoder.training or self.decoder.training):
            raise RuntimeError("clip_forward(teacher=True) needs the SegFormer in eval mode (a frozen "
                               "SegFormer): in training mode BatchNorm would learn from the teacher's pass")
        b, t = clip.shape[:2]
        x1, x2 = self.encoder(clip.flatten(0, 1), stages=2)  # [B*T, C, ...], index b*T + i
        x3, x4 = self.encoder(x2.view(b, t, *x2.shape[1:])[:, 0], stages=4, start=2)  # keyframes
        out = self.temporal.clip(self.decoder, x1, x2, x3, x4, b, self.config.tfc)
        if teacher and t > 1:
            with torch.no_grad():
                def rest(x: torch.Tensor) -> torch.Tensor:  # [B*T, ...] -> frames 1..T-1 [B*(T-1), ...]
                    return x.view(b, t, *x.shape[1:])[:, 1:].flatten(0, 1)
                n1, n2 = rest(x1), rest(x2)
                n3, n4 = self.encoder(n2, stages=4, start=2)
                logits = self.decoder([n1, n2, n3, n4]).contiguous()  # [B*(T-1), K, h4, w4]
            out.teacher = logits.view(b, t - 1, *logits.shape[1:])
        return out
