"""What TFC carries between frames, and what its passes return.

A keyframe leaves a `KeyframeState`; each non-keyframe reads it (and fills its lazy cache) and
returns logits with a `NonKeyframeInfo`; the training pass over a clip returns `ClipOutput`.
Nothing else persists between frames: a video session holds one state, never the video.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class KeyframeState:
    """What a non-keyframe needs from its keyframe (and only that). B = batch, D = decoder
    width, K = classes, (h4, w4) = the 1/4 map; rows = one per point of the 1/4 map,
    batch-major (see layout.py)."""

    size: tuple[int, int]  # (H, W) of the keyframe's input pixels
    x1: torch.Tensor  # [B, C_1, h4, w4]   encoder stage 1 (for the level-1 similarity)
    x2: torch.Tensor  # [B, C_2, h8, w8]   encoder stage 2 (for the level-2 similarity)
    x3: torch.Tensor  # [B, C_3, h16, w16] encoder stage 3 (reused; MSDA values)
    x4: torch.Tensor  # [B, C_4, h32, w32] encoder stage 4 (reused; MSDA values)
    base: torch.Tensor  # [B*h4*w4, D] the folded level-3/4 share of z (+ bias), reused
    logits: torch.Tensor  # [B*h4*w4, K] the keyframe's logits rows (for interpolation)
    # lazily filled by TemporalFusion: "unit1"/"unit2" -> [B*h4*w4, r] unit features in the
    # reduced basis; "class_values" -> per reused level (3, 4) [B, h_l*w_l, M, K], sparse
    # MSDA's values mapped to class space per head (SparseLogitUpdate)
    cache: dict[str, torch.Tensor | list[torch.Tensor]] = field(default_factory=dict, repr=False)

    @property
    def batch(self) -> int:
        return self.x1.shape[0]


@dataclass
class NonKeyframeInfo:
    similarity: torch.Tensor  # [B, h4, w4] raw cosine w_t (before any clamp)
    msda_share: float  # fraction of the points that sparse MSDA updated (0.0 when off)
    # the frame's unit features as rows [B*h4*w4, r] (`TFCSegFormer.frame_units`), where the
    # pass returns them (the ONNX Runtime backend's; None otherwise)
    units: torch.Tensor | None = None


@dataclass
class ClipOutput:
    logits: torch.Tensor  # [B, T, K, h4, w4]; frame 0 is the keyframe
    similarity: torch.Tensor  # [B, T-1, h4, w4] raw cosine of frames 1..T-1 vs frame 0
    msda_share: float  # fraction of non-keyframe points that MSDA updated
    # only when asked for (`clip_forward(clip, teacher=True)`): per-frame SegFormer's logits of
    # frames 1..T-1 [B, T-1, K, h4, w4], without gradients (the distillation target)
    teacher: torch.Tensor | None = None
