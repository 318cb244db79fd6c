"""Softmax attention as a registered op, `tfcseg::attention(q, k, v)`, for SegFormer's encoder.

softmax(q k^T / sqrt(d)) v for q [B, M, N, d], k / v [B, M, S, d] -> [B, M, N, d]. The op has
a pure-PyTorch kernel (`F.scaled_dot_product_attention`, CompositeExplicitAutograd: every
device) and, on CPU, a compiled kernel (`tfcseg/ops/csrc/cpu/attention.cpp`) for bfloat16 inputs
on CPUs with AVX512-BF16 (dot products with vdpbf16ps, fp32 softmax and sums; about 2x
PyTorch's bf16 kernel at SegFormer's shapes) and for float32 inputs on CPUs with AVX-512F
(fp32 FMAs throughout, equal to PyTorch's fp32 SDPA up to float rounding, ~1e-6; about 1.35x
its flash kernel at SegFormer-B0's shapes); it is built and loaded together with the MSDA
kernels by `tfcseg.ops.build` (one library, one cache entry, the same switch
`TFCSEG_MSDA_EXT=0`). The compiled kernel runs PyTorch's SDPA itself for what it does not
cover (other dtypes, mixed dtypes, CPUs without the instructions, d not a multiple of 16 or
> 128, S > 4096). The result may be a non-contiguous view ([B, N, M, d] memory). On CPUs with
AMX, bfloat16 attention is left to PyTorch's SDPA by default (see `enabled`): chosen at run
time, so one install serves AVX512-BF16 and AMX machines.

`fast_cpu_attention(q, k, v)` is what `models.mit.EfficientSelfAttention` calls: the op when the
compiled kernel would run (no autograd, CPU bf16 or fp32 tensors of one dtype, kernel loaded,
not switched off by `TFCSEG_ATTN_EXT` or by AMX for bf16, not traced for export), else None (the caller keeps
F.scaled_dot_product_attention).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from ..runtime import has_amx
from . import build
from .library import LIB

ENV_SWITCH = "TFCSEG_ATTN_EXT"  # "0": always PyTorch's SDPA; "1": the compiled kernel wherever it runs


def attention_pytorch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The op's pure-PyTorch kernel."""
    return F.scaled_dot_product_attention(q, k, v)


LIB.impl("attention", attention_pytorch, "CompositeExplicitAutograd")


def enabled(dtype: torch.dtype = torch.float32) -> bool:
    """Whether `fast_cpu_attention` may use the compiled kernel for `dtype`. `TFCSEG_ATTN_EXT=0`
    switches it off, `=1` on; by default (unset) bfloat16 steps aside on CPUs with AMX, where
    PyTorch's SDPA reaches the AMX tiles through oneDNN's bf16 GEMMs and the kernel's
    AVX512-BF16 dot products (one 32-pair instruction at a time) cannot keep up."""
    switch = os.environ.get(ENV_SWITCH, "").strip()
    if switch in ("0", "1"):
        return switch == "1"
    return not (dtype == torch.bfloat16 and has_amx())


_DTYPES = (torch.bfloat16, torch.float32)  # what the compiled kernel has fast paths for


def fast_cpu_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor | None:
    """The compiled op's result for CPU bfloat16 / float32 inference, else None (use SDPA)."""
    if (q.dtype not in _DTYPES or q.device.type != "cpu" or torch.is_grad_enabled()
            or k.dtype != q.dtype or v.dtype != q.dtype or not enabled(q.dtype)
            or torch.compiler.is_compiling() or torch.jit.is_tracing()):  # export: plain SDPA
        return None
    if not build.tried():
        build.load()  # builds (once per cache) or loads the CPU kernels; never raises
    if not build.status().active:
        return None
    return torch.ops.tfcseg.attention(q, k, v)
