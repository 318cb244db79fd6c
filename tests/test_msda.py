"""The MSDA op against an independent implementation of the formula; sparse == dense."""

from __future__ import annotations

import math

import pytest
import torch

from tfcseg import msda as msda_mod
from tfcseg.msda import (MSDeformAttn, level_layout, ms_deform_attn, ms_deform_attn_reference,
                         pixel_centres)
from tfcseg.tfc import dense_msda, flatten_levels, sparse_msda

SIZES = [(6, 9), (3, 5), (2, 3), (1, 2)]


def _inputs(n=2, q=7, m=2, dh=3, p=3, sizes=SIZES, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes, starts = level_layout(sizes)
    s = sum(h * w for h, w in sizes)
    value = torch.randn(n, s, m, dh, generator=g, dtype=dtype)
    # locations partly outside [0, 1] so the zero padding is exercised too
    loc = torch.rand(n, q, m, len(sizes), p, 2, generator=g, dtype=dtype) * 1.3 - 0.15
    attn = torch.rand(n, q, m, len(sizes) * p, generator=g, dtype=dtype).softmax(-1)
    return value, shapes, starts, loc, attn.view(n, q, m, len(sizes), p)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_op_matches_formula(dtype, tol):
    args = _inputs(dtype=dtype)
    out = ms_deform_attn(*args)
    ref = ms_deform_attn_reference(*args)
    assert out.shape == (2, 7, 6) and out.dtype == dtype
    assert (out - ref).abs().max().item() < tol


def test_reference_hand_checked():
    """One level, one head, one point: bilinear at a known location, and zero outside."""
    value = torch.arange(6.0, dtype=torch.float64).view(1, 6, 1, 1)  # 2 x 3 map: [[0,1,2],[3,4,5]]
    shapes, starts = level_layout([(2, 3)])
    attn = torch.ones(1, 3, 1, 1, 1, dtype=torch.float64)
    # pixel centre (1, 0) -> value 1; halfway between (0,0) and (1,1) centres -> 2; far outside -> 0
    loc = torch.tensor([[1.5 / 3, 0.5 / 2], [1.0 / 3, 1.0 / 2], [5.0, 5.0]], dtype=torch.float64)
    loc = loc.view(1, 3, 1, 1, 1, 2)
    for fn in (ms_deform_attn, ms_deform_attn_reference):
        assert fn(value, shapes, starts, loc, attn).flatten().tolist() == pytest.approx([1.0, 2.0, 0.0])


def test_gradcheck_float64():
    value, shapes, starts, loc, attn = _inputs(n=1, q=3, m=2, dh=2, p=2, sizes=[(3, 4), (2, 2)])
    inputs = tuple(t.clone().requires_grad_() for t in (value, loc, attn))
    assert torch.autograd.gradcheck(
        lambda v, l, a: ms_deform_attn(v, shapes, starts, l, a), inputs, eps=1e-6, atol=1e-5)


def test_backward_matches_reference_autograd():
    value, shapes, starts, loc, attn = _inputs()
    grads = []
    for fn in (ms_deform_attn, ms_deform_attn_reference):
        ins = [t.clone().requires_grad_() for t in (value, loc, attn)]
        out = fn(ins[0], shapes, starts, ins[1], ins[2])
        out.backward(torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out))
        grads.append([t.grad for t in ins])
    for ours, ref in zip(*grads):
        assert torch.allclose(ours, ref, atol=1e-10)


def test_registered_custom_op():
    args = _inputs(n=1, q=4, sizes=[(3, 4), (2, 2)])
    args = (args[0].requires_grad_(), args[1], args[2], args[3].requires_grad_(), args[4].requires_grad_())
    result = torch.library.opcheck(torch.ops.tfcseg.ms_deform_attn.default, args)
    assert all(v == "SUCCESS" for v in result.values()), result
    # no query is a valid (empty) call
    value, shapes, starts, loc, attn = _inputs()
    assert ms_deform_attn(value, shapes, starts, loc[:, :0], attn[:, :0]).shape == (2, 0, 6)


def test_locations_and_weights_cast_to_value_dtype():
    value, shapes, starts, loc, attn = _inputs(dtype=torch.float32)
    out = ms_deform_attn(value.bfloat16(), shapes, starts, loc.double(), attn.double())
    assert out.dtype == torch.bfloat16


def test_module_initialisation():
    torch.manual_seed(0)
    m = MSDeformAttn(d_model=16, n_levels=3, n_heads=4, n_points=2)
    assert torch.count_nonzero(m.sampling_offsets.weight) == 0
    bias = m.sampling_offsets.bias.view(4, 3, 2, 2)  # [heads, levels, points, xy]
    # head h points along angle 2*pi*h/M (scaled so the larger coordinate is 1), point p at p+1
    for h in range(4):
        direction = torch.tensor([math.cos(2 * math.pi * h / 4), math.sin(2 * math.pi * h / 4)])
        direction = direction / direction.abs().max()
        for p in range(2):
            assert torch.allclose(bias[h, :, p], (p + 1) * direction.expand(3, 2), atol=1e-6)
    assert torch.count_nonzero(m.attention_weights.weight) == 0
    assert torch.count_nonzero(m.attention_weights.bias) == 0
    assert torch.count_nonzero(m.value_proj.bias) == 0 and torch.count_nonzero(m.output_proj.bias) == 0
    bound = math.sqrt(6 / 32)  # Xavier uniform for 16 -> 16
    assert m.value_proj.weight.abs().max() <= bound and m.value_proj.weight.std() > bound / 4


def _setup(b=2, d=16, levels=4, seed=0):
    torch.manual_seed(seed)
    m = MSDeformAttn(d_model=d, n_levels=levels, n_heads=4, n_points=2).double()
    with torch.no_grad():  # move away from the symmetric init so every part matters
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    z = torch.randn(b, d, 6, 9, dtype=torch.float64)
    maps = [torch.randn(b, d, h, w, dtype=torch.float64) for h, w in SIZES[:levels]]
    shapes, starts = level_layout(SIZES[:levels])
    return m, z, flatten_levels(maps), shapes, starts


def test_sparse_all_equals_dense():
    m, z, value, shapes, starts = _setup()
    dense = dense_msda(m, z, value, shapes, starts)
    sparse = sparse_msda(m, z, torch.ones(2, 6, 9, dtype=torch.bool), value, shapes, starts)
    assert torch.allclose(sparse, dense, atol=1e-12)
    assert not torch.allclose(dense, z)


def test_sparse_subset_equals_dense_restricted():
    m, z, value, shapes, starts = _setup()
    g = torch.Generator().manual_seed(3)
    select = torch.rand(2, 6, 9, generator=g) < 0.3
    select[1, :2] = True  # different counts per batch element (padding is exercised)
    assert select[0].sum() != select[1].sum()
    dense = dense_msda(m, z, value, shapes, starts)
    sparse = sparse_msda(m, z, select, value, shapes, starts)
    sel = select[:, None].expand_as(z)
    assert torch.allclose(sparse[sel], dense[sel], atol=1e-12)
    assert torch.equal(sparse[~sel], z[~sel])  # unselected points untouched
    none = sparse_msda(m, z, torch.zeros_like(select), value, shapes, starts)
    assert torch.equal(none, z)


def test_dense_matches_formula(monkeypatch):
    """The module through the op == the module through the direct implementation."""
    m, z, value, shapes, starts = _setup()
    dense = dense_msda(m, z, value, shapes, starts)
    monkeypatch.setattr(msda_mod, "ms_deform_attn", ms_deform_attn_reference)
    ref = dense_msda(m, z, value, shapes, starts)
    assert torch.allclose(dense, ref, atol=1e-12)


def test_sparse_is_differentiable():
    m, z, value, shapes, starts = _setup()
    z.requires_grad_()
    value.requires_grad_()
    select = torch.zeros(2, 6, 9, dtype=torch.bool)
    select[:, 2:4, 3:7] = True
    out = sparse_msda(m, z, select, value, shapes, starts)
    out.pow(2).sum().backward()
    assert value.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_pixel_centres_and_layout():
    ref = pixel_centres(2, 4)
    assert ref[0].tolist() == [0.125, 0.25] and ref[5].tolist() == [0.375, 0.75]
    shapes, starts = level_layout([(4, 6), (2, 3), (1, 2)])
    assert shapes.tolist() == [[4, 6], [2, 3], [1, 2]] and starts.tolist() == [0, 24, 30]


def test_autocast_bfloat16_cpu():
    m, z, value, shapes, starts = _setup()
    m, z, value = m.float(), z.float(), value.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dense_msda(m, z, value, shapes, starts)
    assert torch.isfinite(out).all()


def test_a_device_kernel_can_be_added_behind_the_op():
    """A faster kernel registered for a device is used by every caller, autograd included."""
    value, shapes, starts, loc, attn = _inputs(dtype=torch.float32)
    calls = []

    def fast(*args):
        calls.append(1)
        return msda_mod.ms_deform_attn_pytorch(*args)

    lib = torch.library.Library("tfcseg", "IMPL")
    try:
        lib.impl("ms_deform_attn", fast, "CPU")
        value.requires_grad_()
        m, z, v, s, st = _setup()
        dense_msda(m, z, v, s, st)
        ms_deform_attn(value, shapes, starts, loc, attn).sum().backward()
        assert len(calls) == 2 and value.grad is not None
    finally:
        lib._destroy()
    ms_deform_attn(value, shapes, starts, loc, attn)
    assert len(calls) == 2
