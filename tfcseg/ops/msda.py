"""Multi-scale deformable attention (MSDA, Deformable DETR) as a registered custom op.

The core `ms_deform_attn` runs the `torch.library` op `tfcseg::ms_deform_attn`, with:
- a pure-PyTorch implementation (F.grid_sample, bilinear, zero padding,
  align_corners=False, grid = 2 * loc - 1) that runs on every device;
- a fake (meta) kernel, so `torch.compile` / `torch.export` trace through it;
- autograd via `torch.library.register_autograd`, whose backward is itself the op
  `tfcseg::ms_deform_attn_backward` (pure PyTorch: `aten.grid_sampler_2d_backward`).

On CPU both ops have compiled kernels too (`tfcseg/ops/csrc/cpu/msda.cpp`, registered for the
CPU dispatch key), built and loaded by `tfcseg.ops.build` on the first CPU call of
`ms_deform_attn` (cached; without a compiler, or with `TFCSEG_MSDA_EXT=0`, the PyTorch
kernels run; `tfcseg.ops.build.status()` says which). A faster kernel for another device is
added with `torch.library.register_kernel("tfcseg::ms_deform_attn", "cuda", fn)` (and the
same for the backward op) without touching callers.

Sparse MSDA is not a different op: the caller gathers the selected points' queries, runs the
op on them and scatters the result back (`models.temporal.sparse_msda`); dense MSDA is the same with
every point selected.

`ms_deform_attn_reference` is an independent direct implementation of the formula
(explicit bilinear weights and gathers), used only by the tests.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import build
from .library import LIB

_BILINEAR, _ZEROS = 0, 0  # aten's enums for grid sampling: interpolation / padding mode


def _shapes(spatial_shapes: torch.Tensor) -> list[tuple[int, int]]:
    return [(int(h), int(w)) for h, w in spatial_shapes.tolist()]


def _level_value(value: torch.Tensor, start: int, h: int, w: int) -> torch.Tensor:
    """Level slice of value [N, S, M, Dh] as grid_sample's input [N*M, Dh, h, w]."""
    n, _, m, dh = value.shape
    return value.narrow(1, start, h * w).permute(0, 2, 3, 1).reshape(n * m, dh, h, w)


def _level_grid(sampling_locations: torch.Tensor, level: int) -> torch.Tensor:
    """Level l's locations [N, Q, M, L, P, 2] in [0, 1] as a grid [N*M, Q, P, 2] in [-1, 1]."""
    loc = sampling_locations[:, :, :, level]  # [N, Q, M, P, 2]
    return (2 * loc - 1).transpose(1, 2).flatten(0, 1)


# ---- the op (schemas in library.py) ----------------------------------------------------
# Kernels are plain functions registered with the low-level `torch.library.Library` API as
# CompositeExplicitAutograd (every device), so the first call does not pay for importing
# torch._dynamo the way `torch.library.custom_op` kernels do (~2 s). A device-specific
# kernel registered later for "cuda" takes precedence over it.


def ms_deform_attn_pytorch(value: torch.Tensor, spatial_shapes: torch.Tensor,
                           level_start_index: torch.Tensor, sampling_locations: torch.Tensor,
                           attention_weights: torch.Tensor) -> torch.Tensor:
    """The op's pure-PyTorch kernel (all tensors of one dtype; see `ms_deform_attn`)."""
    n, _, m, dh = value.shape
    q = sampling_locations.shape[1]
    out = value.new_zeros(n * m, dh, q)
    starts = level_start_index.tolist()
    for l, (h, w) in enumerate(_shapes(spatial_shapes)):
        sampled = F.grid_sample(_level_value(value, int(starts[l]), h, w),
                                _level_grid(sampling_locations, l), mode="bilinear",
                                padding_mode="zeros", align_corners=False)  # [N*M, Dh, Q, P]
        attn = attention_weights[:, :, :, l].transpose(1, 2).flatten(0, 1)  # [N*M, Q, P]
        out = out + (sampled * attn[:, None]).sum(-1)
    return out.view(n, m * dh, q).transpose(1, 2).contiguous()  # [N, Q, M*Dh]


def ms_deform_attn_backward_pytorch(
        value: torch.Tensor, spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
        sampling_locations: torch.Tensor, attention_weights: torch.Tensor,
        grad_output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The backward op's pure-PyTorch kernel: gradients w.r.t. (value, sampling_locations,
    attention_weights), computed directly (no autograd graph)."""
    n, _, m, dh = value.shape
    q = sampling_locations.shape[1]
    # grad_output [N, Q, M*Dh] -> [N*M, Dh, Q, 1]
    g = grad_output.reshape(n, q, m, dh).permute(0, 2, 3, 1).reshape(n * m, dh, q, 1)
    grad_value = torch.zeros_like(value)
    grad_loc = torch.zeros_like(sampling_locations)
    grad_attn = torch.zeros_like(attention_weights)
    starts = level_start_index.tolist()
    for l, (h, w) in enumerate(_shapes(spatial_shapes)):
        start = int(starts[l])
        v = _level_value(value, start, h, w)
        grid = _level_grid(sampling_locations, l)
        attn = attention_weights[:, :, :, l].transpose(1, 2).flatten(0, 1)  # [N*M, Q, P]
        sampled = F.grid_sample(v, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        p = sampled.shape[-1]
        # d out / d attn = sampled value; d out / d sampled = attn
        grad_attn[:, :, :, l] = (g * sampled).sum(1).view(n, m, q, p).transpose(1, 2)
        gv, gg = torch.ops.aten.grid_sampler_2d_backward(
            g * attn[:, None], v, grid, _BILINEAR, _ZEROS, False, [True, True])
        grad_value[:, start:start + h * w] = gv.view(n, m, dh, h * w).permute(0, 3, 1, 2)
        # grid = 2 * loc - 1  =>  d loc = 2 d grid; [N*M, Q, P, 2] -> [N, Q, M, P, 2]
        grad_loc[:, :, :, l] = (2 * gg).view(n, m, q, p, 2).transpose(1, 2)
    return grad_value, grad_loc, grad_attn


LIB.impl("ms_deform_attn", ms_deform_attn_pytorch, "CompositeExplicitAutograd")
LIB.impl("ms_deform_attn_backward", ms_deform_attn_backward_pytorch, "CompositeExplicitAutograd")


@torch.library.register_fake("tfcseg::ms_deform_attn", lib=LIB)
def _(value, spatial_shapes, level_start_index, sampling_locations, attention_weights):
    n, _, m, dh = value.shape
    return value.new_empty(n, sampling_locations.shape[1], m * dh)


@torch.library.register_fake("tfcseg::ms_deform_attn_backward", lib=LIB)
def _(value, spatial_shapes, level_start_index, sampling_locations, attention_weights, grad_output):
    return (torch.empty_like(value), torch.empty_like(sampling_locations),
            torch.empty_like(attention_weights))


def _setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad_output):
    value, shapes, starts, loc, attn = ctx.saved_tensors
    gv, gl, ga = torch.ops.tfcseg.ms_deform_attn_backward(
        value, shapes, starts, loc, attn, grad_output.contiguous().to(value.dtype))  # autocast: may differ
    return gv, None, None, gl, ga


torch.library.register_autograd("tfcseg::ms_deform_attn", _backward,
                                setup_context=_setup_context, lib=LIB)


def ms_deform_attn(value: torch.Tensor, spatial_shapes: torch.Tensor,
                   level_start_index: torch.Tensor, sampling_locations: torch.Tensor,
                   attention_weights: torch.Tensor) -> torch.Tensor:
    """Deformable DETR's multi-scale deformable attention core.

    value [N, S, M, Dh] (levels concatenated, S = sum_l H_l * W_l), spatial_shapes long
    [L, 2] as (H_l, W_l), level_start_index long [L], sampling_locations
    [N, Q, M, L, P, 2] in [0, 1] as (x, y), attention_weights [N, Q, M, L, P] (already
    softmaxed over L*P) -> [N, Q, M*Dh]. Locations and weights are cast to value's dtype
    (the autocast rule). Runs the registered op `tfcseg::ms_deform_attn`; its first call on
    CPU loads the compiled CPU kernels (`tfcseg.ops.build.load`, built once per cache).
    """
    if not build.tried() and value.device.type == "cpu" and not torch.compiler.is_compiling():
        _load_cpu_kernels()
    if sampling_locations.dtype != value.dtype:
        sampling_locations = sampling_locations.to(value.dtype)
    if attention_weights.dtype != value.dtype:
        attention_weights = attention_weights.to(value.dtype)
    return torch.ops.tfcseg.ms_deform_attn(value, spatial_shapes, level_start_index,
                                           sampling_locations, attention_weights)


def _load_cpu_kernels() -> None:
    # a CPU kernel registered by someone else (e.g. a test's) is left in charge: loading ours
    # now would override it; we try again on a later call
    if not torch._C._dispatch_has_kernel_for_dispatch_key("tfcseg::ms_deform_attn", "CPU"):
        build.load()


def ms_deform_attn_reference(value: torch.Tensor, spatial_shapes: torch.Tensor,
                             level_start_index: torch.Tensor, sampling_locations: torch.Tensor,
                             attention_weights: torch.Tensor) -> torch.Tensor:
    """The formula written out, for tests: sum over levels and points of
    attention_weight * bilinear(value_l, loc * (W_l, H_l) - 0.5), corners outside the map
    contributing zero. Same arguments and result as `ms_deform_attn`."""
    n, _, m, dh = value.shape
    q, p = sampling_locations.shape[1], sampling_locations.shape[4]
    out = value.new_zeros(n, q, m, dh)
    batch = torch.arange(n, device=value.device)[:, None, None, None]  # [N, 1, 1, 1]
    head = torch.arange(m, device=value.device)[None, None, :, None]  # [1, 1, M, 1]
    for l, (h, w) in enumerate(spatial_shapes.tolist()):
        start = int(level_start_index[l])
        # pixel coordinates (align_corners=False: pixel i covers [i, i+1), its centre i + 0.5)
        x = sampling_locations[:, :, :, l, :, 0] * w - 0.5  # [N, Q, M, P]
        y = sampling_locations[:, :, :, l, :, 1] * h - 0.5
        x0, y0 = torch.floor(x), torch.floor(y)
        fx, fy = x - x0, y - y0
        for dx, dy, wt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                           (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            cx, cy = (x0 + dx).long(), (y0 + dy).long()
            inside = (cx >= 0) & (cx < w) & (cy >= 0) & (cy < h)
            idx = start + cy.clamp(0, h - 1) * w + cx.clamp(0, w - 1)  # [N, Q, M, P]
            corner = value[batch, idx, head]  # [N, Q, M, P, Dh]
            weight = wt * inside * attention_weights[:, :, :, l]  # [N, Q, M, P]
            out = out + (corner * weight[..., None]).sum(3)
    return out.reshape(n, q, m * dh)


# ---- the module -----------------------------------------------------------------------


class MSDeformAttn(nn.Module):
    """Deformable DETR's multi-scale deformable attention module (d_model, L, M, P).

    Each query predicts, per head, level and point, an offset from its reference point and
    an attention weight; the output is the weighted sum of the bilinearly sampled values,
    projected. Parameters: `value_proj`, `sampling_offsets`, `attention_weights`,
    `output_proj` (Deformable DETR's names and initialisation).
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8,
                 n_points: int = 4) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Offsets start on a ring: head h points in direction 2*pi*h/M, point p at distance
        p + 1 (in the level's pixels); attention starts uniform; projections Xavier."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        thetas = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = grid / grid.abs().max(-1, keepdim=True)[0]
        grid = grid.view(self.n_heads, 1, 1, 2).repeat(1, self.n_levels, self.n_points, 1)
        grid = grid * torch.arange(1, self.n_points + 1, dtype=torch.float32)[None, None, :, None]
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def project_value(self, x: torch.Tensor) -> torch.Tensor:
        """value_proj of the flattened pyramid: [N, S, D] -> [N, S, D]."""
        return self.value_proj(x)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, value: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                value_projected: bool = False) -> torch.Tensor:
        """query [N, Q, D]; reference_points [N, Q, 2] or [N, Q, L, 2] in [0, 1] as (x, y);
        value [N, S, D] (the flattened pyramid; already through `project_value` if
        `value_projected`); spatial_shapes [L, 2] (H_l, W_l); level_start_index [L].
        Returns [N, Q, D] (after output_proj)."""
        n, q, _ = query.shape
        m, l, p = self.n_heads, self.n_levels, self.n_points
        if not value_projected:
            value = self.project_value(value)
        value = value.view(n, value.shape[1], m, self.d_model // m)
        offsets = self.sampling_offsets(query).view(n, q, m, l, p, 2)
        weights = self.attention_weights(query).view(n, q, m, l * p).softmax(-1).view(n, q, m, l, p)
        normalizer = torch.stack([spatial_shapes[:, 1], spatial_shapes[:, 0]], -1).to(offsets.dtype)
        if reference_points.dim() == 3:
            reference_points = reference_points[:, :, None, :].expand(n, q, l, 2)
        locations = (reference_points[:, :, None, :, None, :]
                     + offsets / normalizer[None, None, None, :, None, :])  # [N, Q, M, L, P, 2]
        out = ms_deform_attn(value, spatial_shapes, level_start_index, locations, weights)
        return self.output_proj(out)


def pixel_centres(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Reference points of an h x w map: pixel centres in [0, 1] as (x, y), row-major [h*w, 2]."""
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w
    return torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)], -1).reshape(h * w, 2)


def level_layout(sizes: list[tuple[int, int]], device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(spatial_shapes [L, 2], level_start_index [L]) for levels of the given (H, W)."""
    shapes = torch.tensor(sizes, dtype=torch.long, device=device).view(-1, 2)
    starts = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
    return shapes, starts
