"""The MSDA op against an independent implementation of the formula; sparse == dense; the
compiled CPU kernels (tfcseg.msda_ext) against the PyTorch ones, and the fallback without them."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tfcseg.ops import build as msda_ext
from tfcseg.ops import msda as msda_mod
from tfcseg.ops.msda import (MSDeformAttn, level_layout, ms_deform_attn, ms_deform_attn_reference,
                         pixel_centres)
from tfcseg.models.temporal import dense_msda, flatten_levels, sparse_msda

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
    _assert_grads_match_formula(*_inputs())


def _assert_grads_match_formula(value, shapes, starts, loc, attn):
    """Gradients through the op == autograd through the direct formula."""
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
        with warnings.catch_warnings():  # it overrides the compiled CPU kernel, on purpose
            warnings.filterwarnings("ignore", "Warning only once for all operators")
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


# ---- the compiled CPU kernels (tfcseg/ops/csrc/cpu/msda.cpp, built by tfcseg.ops.build) ----------

OP, BACKWARD_OP = torch.ops.tfcseg.ms_deform_attn, torch.ops.tfcseg.ms_deform_attn_backward


@pytest.fixture(scope="module")
def compiled():
    """The compiled CPU kernels, loaded (built once per cache, ~10 s): skipped only where there
    is no C++ compiler; a failed build on a machine with one fails the tests."""
    st = msda_ext.status()
    if not st.active:
        if msda_ext.find_compiler() is None:
            pytest.skip(f"no C++ compiler to build the MSDA CPU kernel ({msda_ext.load().reason})")
        with pytest.MonkeyPatch.context() as mp:  # a run with TFCSEG_MSDA_EXT=0 still tests it
            mp.delenv(msda_ext.ENV_SWITCH, raising=False)
            msda_ext._reset_for_tests()
            st = msda_ext.load()
    assert st.active, st.reason
    # the op's CPU entry is the compiled kernel (not the CompositeExplicitAutograd one)
    for op in ("ms_deform_attn", "ms_deform_attn_backward"):
        table = torch._C._dispatch_dump_table(f"tfcseg::{op}")
        assert re.search(r"^CPU: registered at \S*csrc/cpu/msda\.cpp:", table, re.M), table
    return st


# (n, q, m, dh, p, level sizes): L = 1..4, odd sizes, M = 1 and 8, N = 1 and 2, a 1 x 1 level
SHAPES = [
    (2, 7, 2, 3, 3, SIZES),
    (1, 5, 1, 1, 1, [(5, 7)]),
    (2, 33, 8, 32, 4, [(9, 13), (5, 7), (3, 4)]),
    (1, 17, 8, 5, 2, [(1, 1), (4, 16)]),
]


def _with_edges(loc, sizes, seed=1, share=0.5):
    """A share of the coordinates moved to exact half-pixel positions k / (2 W) (pixel centres
    and pixel borders), from 1.5 pixels outside the map to 1.5 pixels past its far edge."""
    g = torch.Generator().manual_seed(seed)
    loc = loc.clone()
    for lvl, (h, w) in enumerate(sizes):
        for c, size in ((0, w), (1, h)):
            part = loc[:, :, :, lvl, :, c]
            k = torch.randint(-3, 2 * size + 4, part.shape, generator=g).to(loc.dtype)
            pick = torch.rand(part.shape, generator=g) < share
            loc[:, :, :, lvl, :, c] = torch.where(pick, k / (2 * size), part)
    return loc


def _shape_inputs(shape, dtype, seed=0, edges=True):
    """Random inputs of a SHAPES entry; with `edges`, half the coordinates on exact half-pixel
    positions. (Gradients jump where a pixel coordinate crosses an integer, and with sizes
    that are not powers of two the two kernels may round such a coordinate to either side:
    gradients are compared at edges only with power-of-two sizes.)"""
    n, q, m, dh, p, sizes = shape
    value, shapes, starts, loc, attn = _inputs(n=n, q=q, m=m, dh=dh, p=p, sizes=sizes,
                                               dtype=dtype, seed=seed)
    return value, shapes, starts, _with_edges(loc, sizes, seed) if edges else loc, attn


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"n{s[0]}m{s[2]}dh{s[3]}L{len(s[5])}")
def test_compiled_forward_matches_pytorch_and_formula(compiled, shape, dtype, tol):
    args = _shape_inputs(shape, dtype)
    out = OP(*args)
    assert out.dtype == dtype and out.shape == (shape[0], shape[1], shape[2] * shape[3])
    assert (out - msda_mod.ms_deform_attn_pytorch(*args)).abs().max().item() < tol
    assert (out - ms_deform_attn_reference(*args)).abs().max().item() < tol


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-5)])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"n{s[0]}m{s[2]}dh{s[3]}L{len(s[5])}")
def test_compiled_backward_matches_pytorch(compiled, shape, dtype, tol):
    args = _shape_inputs(shape, dtype, edges=False)
    grad = torch.randn(shape[0], shape[1], shape[2] * shape[3], dtype=dtype,
                       generator=torch.Generator().manual_seed(5))
    ours = BACKWARD_OP(*args, grad)
    theirs = msda_mod.ms_deform_attn_backward_pytorch(*args, grad)
    for name, a, b in zip(("value", "locations", "weights"), ours, theirs):
        assert a.dtype == dtype and a.shape == b.shape, name
        scale = max(1.0, b.abs().max().item())  # location gradients are scaled by W, H
        assert (a - b).abs().max().item() < tol * scale, name


def test_compiled_backward_matches_formula_autograd(compiled):
    """Gradients through the op (compiled both ways) == autograd through the direct formula."""
    _assert_grads_match_formula(*_shape_inputs(SHAPES[2], torch.float64, edges=False))


def test_compiled_gradcheck_float64(compiled):
    value, shapes, starts, loc, attn = _inputs(n=2, q=4, m=3, dh=3, p=2, sizes=[(3, 5), (2, 3)], seed=4)
    inputs = tuple(t.clone().requires_grad_() for t in (value, loc, attn))
    assert torch.autograd.gradcheck(
        lambda v, l, a: ms_deform_attn(v, shapes, starts, l, a), inputs, eps=1e-6, atol=1e-5)


def test_compiled_at_exact_edges_and_kinks(compiled):
    """Locations exactly on pixel centres, pixel borders and the map's edges (power-of-two
    sizes, so both kernels compute the same pixel coordinates): equal values and gradients."""
    sizes = [(4, 8), (2, 4), (1, 2)]
    value, shapes, starts, loc, attn = _inputs(n=2, q=40, m=2, dh=4, p=3, sizes=sizes)
    loc = _with_edges(loc, sizes, share=1.0)
    out = OP(value, shapes, starts, loc, attn)
    assert torch.allclose(out, msda_mod.ms_deform_attn_pytorch(value, shapes, starts, loc, attn), atol=1e-12)
    assert torch.allclose(out, ms_deform_attn_reference(value, shapes, starts, loc, attn), atol=1e-12)
    grad = torch.randn_like(out)
    for a, b in zip(BACKWARD_OP(value, shapes, starts, loc, attn, grad),
                    msda_mod.ms_deform_attn_backward_pytorch(value, shapes, starts, loc, attn, grad)):
        assert torch.allclose(a, b, atol=1e-12)


def test_compiled_non_contiguous_inputs(compiled):
    value, shapes, starts, loc, attn = _shape_inputs(SHAPES[0], torch.float32)
    n, s, m, dh = value.shape
    v_nc = value.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)  # [N, S, M, Dh] view
    loc_nc = torch.cat([loc, torch.zeros_like(loc)], -1)[..., :2]
    attn_nc = attn.transpose(0, 1).contiguous().transpose(0, 1)
    shapes_nc = shapes.t().contiguous().t()
    assert not any(t.is_contiguous() for t in (v_nc, loc_nc, attn_nc, shapes_nc))
    out = OP(v_nc, shapes_nc, starts, loc_nc, attn_nc)
    assert torch.equal(out, OP(value, shapes, starts, loc, attn))
    grad = torch.randn(2 * out.numel()).view(*out.shape, 2)[..., 0]  # a strided grad_output
    for a, b in zip(BACKWARD_OP(v_nc, shapes_nc, starts, loc_nc, attn_nc, grad),
                    BACKWARD_OP(value, shapes, starts, loc, attn, grad.contiguous())):
        assert torch.equal(a, b)


def test_compiled_empty_queries(compiled):
    value, shapes, starts, loc, attn = _inputs()
    ins = [t.clone().requires_grad_() for t in (value, loc[:, :0], attn[:, :0])]
    out = ms_deform_attn(ins[0], shapes, starts, ins[1], ins[2])
    assert out.shape == (2, 0, 6)
    out.sum().backward()
    assert torch.equal(ins[0].grad, torch.zeros_like(value))
    assert ins[1].grad.shape == (2, 0, 2, 4, 3, 2) and ins[2].grad.shape == (2, 0, 2, 4, 3)


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 2e-2), (torch.float16, 3e-3)])
def test_compiled_reduced_precision(compiled, dtype, tol):
    """bfloat16 / float16 inputs, float accumulation: close to the float64 formula on the same
    (rounded) inputs, forward and backward."""
    args32 = _shape_inputs(SHAPES[2], torch.float32)
    args = [t.to(dtype) if t.is_floating_point() else t for t in args32]
    exact = [t.double() if t.is_floating_point() else t for t in args]
    out = OP(*args)
    assert out.dtype == dtype
    assert (out.double() - ms_deform_attn_reference(*exact)).abs().max().item() < tol
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(dtype)
    ours = BACKWARD_OP(*args, grad)
    ref = msda_mod.ms_deform_attn_backward_pytorch(*exact, grad.double())
    for a, b in zip(ours, ref):
        assert a.dtype == dtype
        assert (a.double() - b).abs().max().item() < 2 * tol * max(1.0, b.abs().max().item())


def test_compiled_deterministic_across_thread_counts(compiled):
    """Each output (grad_value included: one task per (n, head, level)) is written by one
    thread in a fixed order: bitwise the same on 1 and 2 threads."""
    args = _shape_inputs(SHAPES[2], torch.float32)
    grad = torch.randn(2, 33, 256, generator=torch.Generator().manual_seed(3))
    threads = torch.get_num_threads()
    results = []
    try:
        for t in (1, 2):
            torch.set_num_threads(t)
            results.append([OP(*args), *BACKWARD_OP(*args, grad)])
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_compiled_propagates_non_finite_locations_and_weights(compiled):
    """A NaN / inf location or weight gives a NaN output row, as the PyTorch kernel does,
    even for a point outside the map (a NaN must not become a silent 0); gradients likewise."""
    value, shapes, starts, loc, attn = _inputs(n=1, q=6, m=2, dh=3, p=2, sizes=[(3, 4)])
    nan, inf = float("nan"), float("inf")
    loc[0, 0, 0, 0, 1, 0] = nan  # x NaN
    loc[0, 1, 1, 0, 0, 1] = inf  # y inf
    loc[0, 2, 0, 0, 0] = torch.tensor([5.0, nan], dtype=loc.dtype)  # far outside, y NaN
    loc[0, 3, 1, 0, 1, 0] = 7.0  # outside with a NaN weight
    attn[0, 3, 1, 0, 1] = nan
    attn[0, 4, 0, 0, 0] = nan  # inside with a NaN weight
    out = OP(value, shapes, starts, loc, attn)
    theirs = msda_mod.ms_deform_attn_pytorch(value, shapes, starts, loc, attn)
    assert torch.equal(out.isnan(), theirs.isnan()) and out.isnan().any(dim=-1).sum() == 5
    assert torch.allclose(out[~out.isnan()], theirs[~theirs.isnan()], atol=1e-12)
    grad = torch.randn_like(out)
    gv, gl, ga = BACKWARD_OP(value, shapes, starts, loc, attn, grad)
    tv, tl, ta = msda_mod.ms_deform_attn_backward_pytorch(value, shapes, starts, loc, attn, grad)
    assert torch.equal(gv.isnan(), tv.isnan()) and torch.equal(ga.isnan(), ta.isnan())
    # where the PyTorch kernel gives a NaN location gradient, ours too (for both coordinates)
    assert torch.equal(gl.isnan().any(-1), tl.isnan().any(-1))
    fine = ~gl.isnan().any(-1, keepdim=True).expand_as(gl)
    assert torch.allclose(gl[fine], tl[fine], atol=1e-12)
    assert torch.allclose(gv.nan_to_num(), tv.nan_to_num(), atol=1e-12)
    assert torch.allclose(ga.nan_to_num(), ta.nan_to_num(), atol=1e-12)


def test_compiled_rejects_bad_arguments(compiled):
    value, shapes, starts, loc, attn = _inputs(dtype=torch.float32)
    with pytest.raises(RuntimeError, match="value's dtype"):
        OP(value, shapes, starts, loc.double(), attn)
    with pytest.raises(RuntimeError, match="does not fit"):  # a level past the end of value
        OP(value, shapes, starts + 1, loc, attn)
    with pytest.raises(RuntimeError, match=r"\[N, Q, M, L, P\]"):
        OP(value, shapes, starts, loc, attn[..., :1])


_PROBE = """
import json, warnings
import torch
from tfcseg.ops import build as msda_ext
from tfcseg.ops import msda
from tfcseg.ops.msda import level_layout
before = msda_ext.status()
shapes, starts = level_layout([(5, 7), (3, 4)])
g = torch.Generator().manual_seed(0)
value = torch.randn(2, 47, 2, 3, dtype=torch.float64, generator=g).requires_grad_()
loc = (torch.rand(2, 6, 2, 2, 3, 2, dtype=torch.float64, generator=g) * 1.2 - 0.1).requires_grad_()
attn = torch.rand(2, 6, 2, 2, 3, dtype=torch.float64, generator=g).requires_grad_()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(2):
        out = msda.ms_deform_attn(value, shapes, starts, loc, attn)
        out.square().sum().backward()
ref = msda.ms_deform_attn_reference(value, shapes, starts, loc, attn)
st = msda_ext.status()
print(json.dumps(dict(
    before=before.reason, active=st.active, reason=st.reason, build_s=st.build_s,
    cpu_kernel=torch._C._dispatch_has_kernel_for_dispatch_key("tfcseg::ms_deform_attn", "CPU"),
    err=(out - ref).abs().max().item(), grad=value.grad.abs().sum().item(),
    warnings=[str(w.message) for w in caught if issubclass(w.category, msda_ext.MSDAExtensionWarning)])))
"""


def _probe(**env_update):
    """The op run twice (forward and backward) in a fresh process with these variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFCSEG_") and k != "CXX"}
    env.update(PYTHONPATH=str(Path(__file__).parent.parent), **env_update)
    res = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_fresh_process_loads_the_cached_kernel_on_first_use(compiled):
    """Importing builds nothing; the first CPU call loads the file built before (no compile)."""
    r = _probe(TFCSEG_CACHE=str(Path(compiled.path).parent.parent))
    assert r["before"].startswith("not loaded yet")
    assert r["active"] and r["reason"] == "cached" and r["build_s"] is None and r["cpu_kernel"]
    assert r["err"] < 1e-12 and r["grad"] > 0 and r["warnings"] == []


def test_fallback_without_a_compiler_warns_once(tmp_path):
    r = _probe(TFCSEG_CACHE=str(tmp_path), CXX=str(tmp_path / "no-such-c++"))
    assert not r["active"] and not r["cpu_kernel"]  # the PyTorch kernels ran
    assert r["err"] < 1e-12 and r["grad"] > 0
    assert len(r["warnings"]) == 1 and "\n" not in r["warnings"][0]
    assert "no C++ compiler found" in r["warnings"][0] and "TFCSEG_MSDA_EXT=0" in r["warnings"][0]
    assert not (tmp_path / "ext").exists()


def test_fallback_when_disabled_is_silent(tmp_path):
    r = _probe(TFCSEG_CACHE=str(tmp_path), TFCSEG_MSDA_EXT="0")
    assert not r["active"] and r["reason"] == "disabled by TFCSEG_MSDA_EXT=0" and not r["cpu_kernel"]
    assert r["err"] < 1e-12 and r["grad"] > 0 and r["warnings"] == []


def _fake_compiler(tmp_path, body):
    cxx = tmp_path / "fake-c++"
    cxx.write_text("#!/bin/sh\n" + body)
    cxx.chmod(0o755)
    return cxx


def test_failed_build_warns_once_in_one_line_and_leaves_no_files(tmp_path, monkeypatch):
    monkeypatch.setattr(msda_ext, "_status", None)  # restored afterwards
    monkeypatch.delenv(msda_ext.ENV_SWITCH, raising=False)
    monkeypatch.setenv("TFCSEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CXX", str(_fake_compiler(
        tmp_path, 'echo "msda_cpu.cpp:1:1: note: something"\n'
                  'echo "msda_cpu.cpp:3:7: error: simulated failure" >&2\nexit 1\n')))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first, second = msda_ext.load(), msda_ext.load()
    messages = [str(w.message) for w in caught if issubclass(w.category, msda_ext.MSDAExtensionWarning)]
    assert first is second and not first.active
    assert first.reason == "fake-c++ failed: msda_cpu.cpp:3:7: error: simulated failure"
    assert len(messages) == 1 and first.reason in messages[0] and "\n" not in messages[0]
    assert list((tmp_path / "cache" / "ext").iterdir()) == []  # no temporary file left


def test_unloadable_library_is_reported(tmp_path, monkeypatch):
    """A compiler that 'succeeds' with a broken file: the file is renamed into place (whole),
    loading it fails, and that is reported (no exception)."""
    monkeypatch.setattr(msda_ext, "_status", None)
    monkeypatch.delenv(msda_ext.ENV_SWITCH, raising=False)
    monkeypatch.setenv("TFCSEG_CACHE", str(tmp_path / "cache"))
    # the output file is the argument after -o
    monkeypatch.setenv("CXX", str(_fake_compiler(
        tmp_path, 'while [ $# -gt 1 ] && [ "$1" != "-o" ]; do shift; done\n'
                  '[ "$1" = "-o" ] && echo "not a library" > "$2"\nexit 0\n')))
    with pytest.warns(msda_ext.MSDAExtensionWarning, match="OSError"):
        st = msda_ext.load()
    assert not st.active
    assert [p.suffix for p in (tmp_path / "cache" / "ext").iterdir()] == [".so"]
