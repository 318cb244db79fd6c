"""tfcseg::attention: the compiled CPU kernel (tfcseg/ops/csrc/cpu/attention.cpp, bf16 and fp32
paths) against fp32 SDPA, and its use by SegFormer's attention in fp32 and under CPU bf16
autocast."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from tfcseg import TFCSegFormer
from tfcseg.ops import attention
from tfcseg.ops import build as msda_ext

from conftest import tiny_config

OP = torch.ops.tfcseg.attention


@pytest.fixture(scope="module")
def compiled():
    """The compiled CPU kernels loaded (built once per cache): skipped only without a compiler."""
    st = msda_ext.status()
    if not st.active:
        if msda_ext.find_compiler() is None:
            pytest.skip(f"no C++ compiler to build the CPU kernels ({msda_ext.load().reason})")
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv(msda_ext.ENV_SWITCH, raising=False)
            msda_ext._reset_for_tests()
            st = msda_ext.load()
    assert st.active, st.reason
    table = torch._C._dispatch_dump_table("tfcseg::attention")
    assert re.search(r"^CPU: registered at \S*csrc/cpu/attention\.cpp:", table, re.M), table
    return st


def _qkv(b, m, n, s, d, seed=0, transposed=True, dtype=torch.bfloat16):
    g = torch.Generator().manual_seed(seed)
    if transposed:  # SegFormer's layout: [B, N, M, d] memory viewed as [B, M, N, d]
        q = torch.randn(b, n, m, d, generator=g).transpose(1, 2)
        k = torch.randn(b, s, m, d, generator=g).transpose(1, 2)
        v = torch.randn(b, s, m, d, generator=g).transpose(1, 2)
    else:
        q, k, v = (torch.randn(b, m, x, d, generator=g) for x in (n, s, s))
    return q.to(dtype), k.to(dtype), v.to(dtype)


@pytest.mark.parametrize("m", [1, 2, 5, 8])
@pytest.mark.parametrize("s", [1, 7, 390, 1000])
@pytest.mark.parametrize("d", [32, 64])
def test_compiled_matches_fp32_sdpa(compiled, m, s, d):
    n = 75 if s < 1000 else 41  # not a multiple of the 32-query block
    q, k, v = _qkv(2, m, n, s, d, seed=s + m + d, transposed=(m % 2 == 0))
    with torch.no_grad():
        out = OP(q, k, v)
        ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
    assert out.dtype == torch.bfloat16 and out.shape == ref.shape
    err = (out.float() - ref).abs().max().item()
    assert err < 2e-2, err


@pytest.mark.parametrize("m", [1, 2, 5, 8])
@pytest.mark.parametrize("s", [1, 7, 390, 1000])
@pytest.mark.parametrize("d", [32, 64])
def test_compiled_fp32_matches_fp32_sdpa(compiled, m, s, d):
    # the fp32 path (or SDPA itself on CPUs without AVX-512F): exact up to float rounding
    n = 75 if s < 1000 else 41  # not a multiple of the 32-query block or the 8-query group
    q, k, v = _qkv(2, m, n, s, d, seed=s + m + d, transposed=(m % 2 == 1), dtype=torch.float32)
    with torch.no_grad():
        out = OP(q, k, v)
        ref = F.scaled_dot_product_attention(q, k, v)
    assert out.dtype == torch.float32 and out.shape == ref.shape
    err = (out - ref).abs().max().item()
    assert err < 1e-5, err


@pytest.mark.parametrize("shape", [(1, 2, 1, 3, 16), (1, 1, 9, 17, 128), (2, 3, 33, 4096, 48)])
def test_compiled_fp32_edge_shapes(compiled, shape):
    b, m, n, s, d = shape  # one query, S just over a 16-key block, S at the limit, d = 48 / 128
    q, k, v = _qkv(b, m, n, s, d, seed=11, dtype=torch.float32)
    with torch.no_grad():
        err = (OP(q, k, v) - F.scaled_dot_product_attention(q, k, v)).abs().max().item()
    assert err < 1e-5, err


def test_compiled_fp32_large_scores_stay_finite(compiled):
    # scores of magnitude ~100s: the max subtraction keeps exp2 finite; error ~ float rounding
    q, k, v = _qkv(1, 2, 33, 50, 32, seed=4, dtype=torch.float32)
    q, k = q * 10, k * 10
    with torch.no_grad():
        out = OP(q, k, v)
        ref64 = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    assert torch.isfinite(out).all()
    assert (out.double() - ref64).abs().max().item() < 1e-4


@pytest.mark.parametrize("shape", [(1, 3, 10, 20, 8), (2, 2, 9, 5000, 32), (1, 1, 5, 6, 24)])
def test_uncovered_shapes_and_dtypes_fall_back(compiled, shape):
    b, m, n, s, d = shape  # d not a multiple of 16, or S > 4096: PyTorch's SDPA runs
    q, k, v = _qkv(b, m, n, s, d, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(OP(q, k, v), F.scaled_dot_product_attention(q, k, v))
        qf, kf, vf = q.float(), k.float(), v.float()
        torch.testing.assert_close(OP(qf, kf, vf), F.scaled_dot_product_attention(qf, kf, vf))


def test_shape_mismatch_raises(compiled):
    q, k, v = _qkv(1, 2, 8, 6, 32)
    with pytest.raises(RuntimeError, match="do not match"):
        OP(q, k[:, :1], v[:, :1])


def _model():
    torch.manual_seed(0)
    # head dims 32 / 32 / 64 / 64: the compiled kernel's fast path in every stage
    cfg = tiny_config(hidden_sizes=[32, 64, 64, 128], num_heads=[1, 2, 1, 2])
    return TFCSegFormer(cfg).eval()


def _logits_on_and_off(monkeypatch, bf16: bool):
    """The tiny model's logits with the compiled op allowed and switched off, each with
    whether `tfcseg::attention` ran."""
    model = _model()
    x = torch.randn(1, 3, 67, 91, generator=torch.Generator().manual_seed(5))
    runs = []
    for switch in ("1", "0"):  # "1": also on CPUs with AMX, where bf16 would step aside
        monkeypatch.setenv(attention.ENV_SWITCH, switch)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            with torch.autograd.profiler.profile() as prof:
                logits = model.image_logits(x)
        runs.append((logits.float(), any(e.name == "tfcseg::attention" for e in prof.function_events)))
    return runs


def test_model_fp32_forward_fast_op_on_vs_off(compiled, monkeypatch):
    (fast, used_fast), (plain, used_plain) = _logits_on_and_off(monkeypatch, bf16=False)
    assert used_fast and not used_plain
    assert (fast - plain).abs().max().item() < 1e-5
    assert torch.equal(fast.argmax(1), plain.argmax(1))


def test_model_bf16_forward_fast_op_on_vs_off(compiled, monkeypatch):
    (fast, used_fast), (plain, used_plain) = _logits_on_and_off(monkeypatch, bf16=True)
    assert used_fast and not used_plain
    scale = plain.abs().max().item()
    assert (fast - plain).abs().max().item() < 0.05 * scale
    assert (fast.argmax(1) == plain.argmax(1)).float().mean().item() > 0.98


def test_used_for_bf16_and_fp32_inference_only(compiled):
    q, k, v = _qkv(1, 2, 8, 6, 32)
    assert attention.fast_cpu_attention(q, k, v) is None  # grad mode on
    assert attention.fast_cpu_attention(q.float(), k.float(), v.float()) is None
    with torch.no_grad():
        assert attention.fast_cpu_attention(q.half(), k.half(), v.half()) is None
        assert attention.fast_cpu_attention(q.float(), k, v) is None  # mixed dtypes
        assert attention.fast_cpu_attention(q.double(), k.double(), v.double()) is None
        out = attention.fast_cpu_attention(q, k, v)
        out32 = attention.fast_cpu_attention(q.float(), k.float(), v.float())
    assert out is not None and out.shape == q.shape
    assert out32 is not None and out32.dtype == torch.float32 and out32.shape == q.shape


def test_disabled_extension_falls_back_silently(monkeypatch):
    monkeypatch.setattr(msda_ext, "_status", None)
    monkeypatch.setenv(msda_ext.ENV_SWITCH, "0")
    q, k, v = _qkv(1, 2, 8, 6, 32)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with torch.no_grad():
            assert attention.fast_cpu_attention(q, k, v) is None
    assert not msda_ext.status().active


def test_bf16_steps_aside_on_amx_cpus_unless_forced(compiled, monkeypatch):
    q, k, v = (t.bfloat16() for t in _qkv(1, 2, 8, 6, 32))
    monkeypatch.delenv(attention.ENV_SWITCH, raising=False)
    for amx, bf16_kernel in ((False, True), (True, False)):
        monkeypatch.setattr(attention, "has_amx", lambda amx=amx: amx)
        with torch.no_grad():
            assert (attention.fast_cpu_attention(q, k, v) is not None) == bf16_kernel
            assert attention.fast_cpu_attention(q.float(), k.float(), v.float()) is not None  # fp32 kept
    monkeypatch.setenv(attention.ENV_SWITCH, "1")
    with torch.no_grad():
        assert attention.fast_cpu_attention(q, k, v) is not None
    monkeypatch.setenv(attention.ENV_SWITCH, "0")
    with torch.no_grad():
        assert attention.fast_cpu_attention(q.float(), k.float(), v.float()) is None
