"""The export-friendly passes (models/portable.py) compute what keyframe() / non_keyframe() do."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from tfcseg import TFCOptions, TFCSegFormer
from tfcseg.models.portable import INTERPOLATION_CODES, PortableKeyframe, PortableNonKeyframe

from conftest import randomise_bn, tiny_config


def _model(**tfc) -> TFCSegFormer:
    torch.manual_seed(0)
    model = TFCSegFormer(tiny_config(tfc_trained=True, tfc=TFCOptions(**tfc)))
    randomise_bn(model)
    return model.eval()


def _frames(size=(45, 70)):
    g = torch.Generator().manual_seed(3)
    key = 1.5 * F.interpolate(torch.randn(1, 3, 6, 9, generator=g), size=size, mode="bilinear",
                              align_corners=False)
    moved = torch.roll(key, shifts=(1, 2), dims=(2, 3))
    h, w = size
    moved[:, :, h // 4:h // 2, w // 4:w // 2] = torch.randn(1, 3, h // 2 - h // 4, w // 2 - w // 4, generator=g)
    return key, moved


def _run(model, msda, key, moved, options):
    kf, nk = PortableKeyframe(model, msda).eval(), PortableNonKeyframe(model, msda).eval()
    state = kf(key)
    inputs = (torch.tensor(options.msda_threshold), torch.tensor(int(options.msda)),
              torch.tensor(INTERPOLATION_CODES[options.interpolation]), torch.tensor(options.fixed_weight),
              torch.tensor(options.msda_gate), torch.tensor(options.interpolation_power))
    return state, nk(moved, *state[:3], *inputs, *state[3:])


@pytest.mark.parametrize("size", [(45, 70), (64, 33)])
@torch.no_grad()
def test_keyframe_state_equals_the_pytorch_path(size):
    model = _model(msda_levels=4)
    key, moved = _frames(size)
    logits, state = model.keyframe(key)
    model.non_keyframe(moved, state)  # fills the state's lazy cache (unit features)
    out, _ = _run(model, True, key, moved, model.config.tfc)
    names = PortableKeyframe(model, True).state_names
    assert names == ("logits", "base", "unit", "value3", "value4")
    k, base, unit, v3, v4 = out
    h4, w4 = logits.shape[-2:]
    assert k.shape == (1, h4, w4, 5) and base.shape == (1, h4, w4, 32)
    assert torch.allclose(k.permute(0, 3, 1, 2), logits, atol=1e-5)
    assert torch.allclose(base.reshape(-1, 32), state.base, atol=1e-5)
    assert torch.allclose(unit.reshape(h4 * w4, -1), state.cache["unit2"], atol=1e-5)
    for v, x, level in ((v3, state.x3, 3), (v4, state.x4, 4)):  # MSDA's values: value_proj(P_l x + b_l)
        rows = x.flatten(2).transpose(1, 2)
        ref = model.temporal.msda.value_proj(model.decoder.projection(level)(rows))
        assert torch.allclose(v.flatten(2).transpose(1, 2), ref, atol=1e-5)


@pytest.mark.parametrize("tfc", [
    dict(), dict(msda=False), dict(interpolation="hard"), dict(interpolation="fixed", similarity_level=1),
    dict(interpolation="none", msda=False), dict(msda_levels=2), dict(interpolation_power=4.0),
], ids=["soft-msda", "soft", "hard-msda", "fixed-level1", "reuse", "msda-2-levels", "soft-power-4"])
@torch.no_grad()
def test_non_keyframe_equals_the_pytorch_path(tfc):
    model = _model(**tfc)
    key, moved = _frames()
    logits, state = model.keyframe(key)
    _, info = model.non_keyframe(moved, state)
    # a threshold that selects about half of the points, so that sparse MSDA really is sparse
    options = dataclasses.replace(model.config.tfc, msda_threshold=float(info.similarity.median()))
    ref, ref_info = model.non_keyframe(moved, state, options)
    _, (out, similarity, share, unit) = _run(model, model.config.tfc.msda, key, moved, options)
    assert torch.allclose(similarity, ref_info.similarity, atol=1e-5)
    # the frame's own unit features (motion-aware hysteresis compares consecutive frames')
    x1, x2 = model.low_level(moved)
    units = model.frame_units(x1, x2, options)
    assert torch.allclose(unit.reshape(units.shape), units, atol=1e-5)
    assert torch.allclose(out.permute(0, 3, 1, 2), ref, atol=1e-4)
    assert torch.equal(out.permute(0, 3, 1, 2).argmax(1), ref.argmax(1))
    assert float(share) == pytest.approx(ref_info.msda_share)
    if options.msda:
        assert 0.3 < ref_info.msda_share < 0.7


@torch.no_grad()
def test_msda_gate_equals_the_pytorch_path():
    """At a gate that keeps some of MSDA's label changes and reverts others, the graph gives
    the PyTorch path's logits; a one-class model (no label can change) runs too."""
    model = _model()
    key, moved = _frames()
    _, state = model.keyframe(key)
    _, info = model.non_keyframe(moved, state)
    options = dataclasses.replace(model.config.tfc, msda_threshold=float(info.similarity.median()))
    on, _ = model.non_keyframe(moved, state, options)
    off, _ = model.non_keyframe(moved, state, dataclasses.replace(options, msda=False))
    top2 = on.topk(2, dim=1).values
    margin, changed = top2[:, 0] - top2[:, 1], on.argmax(1) != off.argmax(1)
    m = margin[changed].sort().values
    k = max(range(1, len(m)), key=lambda i: float(m[i] - m[i - 1]))  # the widest gap: no borderline point
    gate = float(m[k - 1] + m[k]) / 2
    options = dataclasses.replace(options, msda_gate=gate)
    ref, _ = model.non_keyframe(moved, state, options)
    assert 0 < int((changed & (margin < gate)).sum()) < int(changed.sum())  # some reverted, some kept
    _, (out, _, _, _) = _run(model, True, key, moved, options)
    assert torch.allclose(out.permute(0, 3, 1, 2), ref, atol=1e-4)
    assert torch.equal(out.permute(0, 3, 1, 2).argmax(1), ref.argmax(1))

    torch.manual_seed(0)
    one = TFCSegFormer(tiny_config(num_classes=1, tfc_trained=True)).eval()
    _, (out, _, _, _) = _run(one, True, key, moved, dataclasses.replace(one.config.tfc, msda_threshold=2.0, msda_gate=1.0))
    assert out.shape[-1] == 1


@torch.no_grad()
def test_run_time_options_switch_msda_and_interpolation():
    """One graph serves every mode: MSDA off (reuse) and no interpolation give the plain head."""
    model = _model()
    key, moved = _frames()
    _, state = model.keyframe(key)
    reuse = dataclasses.replace(model.config.tfc, interpolation="none", msda=False)
    ref, _ = model.non_keyframe(moved, state, reuse)
    _, (out, _, share, _) = _run(model, True, key, moved, reuse)
    assert float(share) == 0.0
    assert torch.allclose(out.permute(0, 3, 1, 2), ref, atol=1e-5)
    # nothing selected (threshold below any cosine) and everything selected
    for threshold, expected in ((-2.0, 0.0), (2.0, 1.0)):
        options = dataclasses.replace(model.config.tfc, msda_threshold=threshold)
        ref, info = model.non_keyframe(moved, state, options)
        _, (out, _, share, _) = _run(model, True, key, moved, options)
        assert float(share) == info.msda_share == expected
        assert torch.allclose(out.permute(0, 3, 1, 2), ref, atol=1e-4)


def test_training_mode_is_refused():
    with pytest.raises(RuntimeError, match="eval"):
        PortableKeyframe(_model().train(), True)
