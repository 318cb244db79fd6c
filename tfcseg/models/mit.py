"""Mix Transformer (MiT) encoder of SegFormer, variants B0..B5.

Stage i (0-based) turns [B, C_{i-1}, H_{i-1}, W_{i-1}] into [B, C_i, H_i, W_i] with
H_0 = ceil(H/4) and H_i = ceil(H_{i-1}/2) after. `forward(x, stages=2)` runs only the first
two stages, which is all a TFC non-keyframe needs.

Memory layout: token maps [B, N, C] are NHWC memory, so every conv here (patch embedding,
the attention's spatial reduction, Mix-FFN's depthwise conv) takes the NCHW *view*
`tokens.view(B, h, w, C).permute(0, 3, 1, 2)`, which is channels-last: no transposing
copies between the token and the image form, and oneDNN's channels-last kernels. Stage
outputs are channels-last [B, C, h, w] views of the final tokens too: the next stage's patch
embedding and the decoder's folded head (`decoder.tokens`) read them without a copy.

Module names follow the original MiT (`patch_embed`, `blocks`, `attn.q`, ...); the checkpoint
converters in `checkpoint.py` map the Hugging Face and NVlabs/mmseg names onto them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.attention import fast_cpu_attention
from .config import ModelConfig
from .layout import image_to_seq, seq_to_image


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per sample while training."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class OverlapPatchEmbed(nn.Module):
    """Strided conv with overlap (kernel 7/3, stride 4/2) then LayerNorm: [B,C,H,W] -> [B,N,D]."""

    def __init__(self, in_ch: int, dim: int, patch: int, stride: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_ch, dim, patch, stride, padding=patch // 2)
        self.norm = nn.LayerNorm(dim)  # eps 1e-5 in every known implementation

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x.contiguous(memory_format=torch.channels_last))  # [B, D, h, w] channels-last
        h, w = x.shape[-2:]
        return self.norm(image_to_seq(x)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head self-attention whose keys/values come from a map reduced by `sr` (conv)."""

    def __init__(self, dim: int, heads: int, sr: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr
        if sr > 1:
            self.sr = nn.Conv2d(dim, dim, sr, sr)
            self.sr_norm = nn.LayerNorm(dim)  # eps 1e-5, as in the original

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape  # x: [B, N=h*w, C]
        kv = x
        if self.sr_ratio > 1:
            kv = self.sr_norm(image_to_seq(self.sr(seq_to_image(x, h, w))))  # [B, N/sr^2, C]
        dh = c // self.heads
        q = self.q(x).view(b, n, self.heads, dh).transpose(1, 2)  # [B, M, N, dh]
        k = self.k(kv).view(b, -1, self.heads, dh).transpose(1, 2)  # [B, M, N', dh]
        v = self.v(kv).view(b, -1, self.heads, dh).transpose(1, 2)
        out = fast_cpu_attention(q, k, v)  # CPU bf16 / fp32 inference: the compiled kernel
        if out is None:
            out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class MixFFN(nn.Module):
    """fc1 -> 3x3 depthwise conv (positional information) -> GELU -> fc2."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        image = seq_to_image(self.fc1(x), h, w)  # [B, hidden, h, w], channels-last
        fused = _dwconv_gelu_fused(self.dwconv, image)
        x = image_to_seq(fused if fused is not None else F.gelu(self.dwconv(image)))
        return self.fc2(x)


_FUSED_OK = [torch.backends.mkldnn.is_available()
             and hasattr(torch.ops.mkldnn, "_convolution_pointwise")]


def _dwconv_gelu_fused(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor | None:
    """GELU(conv(x)) as one oneDNN convolution with a GELU (erf) post-op: the hidden map is
    written once instead of twice. Inference on the CPU only; None where it does not apply
    (autograd on, another device, no oneDNN, traced for export), and the caller runs the
    plain ops."""
    if (not _FUSED_OK[0] or not torch.backends.mkldnn.enabled or torch.is_grad_enabled()
            or x.device.type != "cpu" or torch.jit.is_tracing()):  # export: the plain ops
        return None
    dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
    if dtype not in (torch.float32, torch.bfloat16):
        return None
    try:
        return torch.ops.mkldnn._convolution_pointwise(
            x.to(dtype), conv.weight.to(dtype), conv.bias.to(dtype), list(conv.padding),
            list(conv.stride), list(conv.dilation), conv.groups, "gelu", [None], "none")
    except RuntimeError:  # a private op: if this torch build lacks it, use the plain path
        _FUSED_OK[0] = False
        return None


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, sr: int, mlp_ratio: int, drop_path: float, eps: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = EfficientSelfAttention(dim, heads, sr, eps)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = MixFFN(dim, dim * mlp_ratio)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), h, w))
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class Stage(nn.Module):
    """Patch embedding, `depth` transformer blocks, LayerNorm; returns [B, C, H, W] (channels-last)."""

    def __init__(self, in_ch: int, dim: int, depth: int, heads: int, sr: int, patch: int,
                 stride: int, mlp_ratio: int, drop_paths: list[float], eps: float) -> None:
        super().__init__()
        self.patch_embed = OverlapPatchEmbed(in_ch, dim, patch, stride)
        self.blocks = nn.ModuleList(
            Block(dim, heads, sr, mlp_ratio, drop_paths[j], eps) for j in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, h, w = self.patch_embed(x)
        for block in self.blocks:
            x = block(x, h, w)
        return seq_to_image(self.norm(x), h, w)  # [B, C, h, w], channels-last


class MixTransformer(nn.Module):
    """The four-stage hierarchical encoder; outputs maps at 1/4, 1/8, 1/16, 1/32."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        total = sum(cfg.depths)
        rates = [cfg.drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.stages = nn.ModuleList()
        start = 0
        for i in range(4):
            self.stages.append(Stage(
                3 if i == 0 else cfg.hidden_sizes[i - 1], cfg.hidden_sizes[i], cfg.depths[i],
                cfg.num_heads[i], cfg.sr_ratios[i], cfg.patch_sizes[i], cfg.strides[i],
                cfg.mlp_ratio, rates[start:start + cfg.depths[i]], cfg.layer_norm_eps,
            ))
            start += cfg.depths[i]
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor, stages: int = 4,
                start: int = 0) -> list[torch.Tensor]:
        """Run stages `start`..`stages-1` on `x` (the pixels if start == 0, else the
        previous stage's map). Returns the per-stage maps [B, C_i, H_i, W_i]."""
        feats = []
        for stage in self.stages[start:stages]:
            x = stage(x)
            feats.append(x)
        return feats


def _init_weights(m: nn.Module) -> None:
    """The MiT initialisation: truncated normal linears, fan-out normal convs."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
