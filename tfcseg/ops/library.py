"""The `tfcseg` torch.library: every op schema, defined once, before any kernel registers.

    tfcseg::ms_deform_attn            multi-scale deformable attention (ops/msda.py)
    tfcseg::ms_deform_attn_backward   its gradient, itself an op
    tfcseg::attention                 softmax attention for SegFormer's encoder (ops/attention.py)

Kernels: each op has a pure-PyTorch kernel registered by its module (CompositeExplicitAutograd,
so every device has one); `ops/build.py` compiles and loads CPU kernels for the same schemas
from `ops/csrc/cpu/*.cpp`. A CUDA kernel would be registered the same way from `csrc/cuda/`.
"""

from __future__ import annotations

import torch

LIB = torch.library.Library("tfcseg", "DEF")  # kept alive: registrations live as long as it
LIB.define("ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
           "Tensor sampling_locations, Tensor attention_weights) -> Tensor")
LIB.define("ms_deform_attn_backward(Tensor value, Tensor spatial_shapes, "
           "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights, "
           "Tensor grad_output) -> (Tensor, Tensor, Tensor)")
LIB.define("attention(Tensor q, Tensor k, Tensor v) -> Tensor")
