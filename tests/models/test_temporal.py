"""TFC's keyframe / non-keyframe passes, the ablation variants and the training pass."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
import torch.nn.functional as F

from tfcseg import TFCOptions, TFCSegFormer, load_model, save_checkpoint
from tfcseg.models.layout import resize, rows_to_image

from conftest import randomise_bn, tiny_config

SIZE = (45, 70)  # -> 1/4 map 12 x 18


def _model(trained: bool = True, **tfc) -> TFCSegFormer:
    torch.manual_seed(0)
    model = TFCSegFormer(tiny_config(tfc_trained=trained, tfc=TFCOptions(**tfc)))
    randomise_bn(model)
    return model.eval()


def _frames():
    g = torch.Generator().manual_seed(5)
    # a smooth scene (so that features are locally similar)
    key = 1.5 * F.interpolate(torch.randn(1, 3, 6, 9, generator=g), size=SIZE, mode="bilinear",
                              align_corners=False)
    # frame t: the keyframe moved by a pixel plus a changed patch (motion + new content)
    moved = torch.roll(key, shifts=(1, 1), dims=(2, 3))
    moved[:, :, 10:30, 20:50] = torch.randn(1, 3, 20, 30, generator=g)
    return key, moved


def _opts(model, **kw) -> TFCOptions:
    return dataclasses.replace(model.config.tfc, **kw)


@torch.no_grad()
def test_keyframe_equals_image_logits():
    model = _model()
    x = torch.randn(2, 3, 61, 83)
    logits, state = model.keyframe(x)
    assert torch.equal(logits, model.image_logits(x))
    assert logits.shape == (2, 5, 16, 21)
    assert state.base.shape == (2 * 16 * 21, 32) and state.logits.shape == (2 * 16 * 21, 5)


@pytest.mark.parametrize("interpolation", ["soft", "hard", "fixed", "none"])
@torch.no_grad()
def test_static_video_is_stable(interpolation):
    """The same frame again: w = 1 exactly, no MSDA point even at threshold 1.0, same labels."""
    model = _model(interpolation=interpolation, msda_threshold=1.0)
    x = _frames()[0]
    logits, state = model.keyframe(x)
    for level in (1, 2):
        out, info = model.non_keyframe(x, state, _opts(model, similarity_level=level))
        assert torch.equal(info.similarity, torch.ones_like(info.similarity))
        assert info.msda_share == 0.0
        if interpolation == "fixed":  # 0.1 z_k + 0.9 z_t with z_t == z_k: equal up to rounding
            assert torch.allclose(out, logits, atol=1e-5)
        else:
            assert torch.equal(out, logits)
        assert torch.equal(out.argmax(1), logits.argmax(1))


@torch.no_grad()
def test_similarity_is_the_cosine_of_projected_features():
    model = _model()
    key, moved = _frames()
    _, state = model.keyframe(key)
    dec = model.decoder
    fk, ft = model.encoder(key), model.encoder(moved)
    size = fk[0].shape[-2:]
    for level in (1, 2):
        _, info = model.non_keyframe(moved, state, _opts(model, similarity_level=level))
        ref = F.cosine_similarity(resize(dec.project(level, fk[level - 1]), size),
                                  resize(dec.project(level, ft[level - 1]), size), dim=1)
        assert info.similarity.shape == (1, 12, 18)
        assert torch.allclose(info.similarity, ref, atol=1e-5)
        assert info.similarity.min() < 0.8  # the changed patch is dissimilar


def _z_t(model, pixels, state):
    """z_t computed by hand: stages 1-2 of frame t, levels 3-4 of the keyframe, plain decoder."""
    dec = model.decoder
    x1, x2 = model.encoder(pixels, stages=2)
    size = x1.shape[-2:]
    return dec.fuse([resize(dec.project(1, x1), size), resize(dec.project(2, x2), size),
                     resize(dec.project(3, state.x3), size), resize(dec.project(4, state.x4), size)])


@torch.no_grad()
def test_variants_differ_where_they_should():
    model = _model()
    key, moved = _frames()
    _, state = model.keyframe(key)
    z_t = _z_t(model, moved, state)
    out = {}
    for name, kw in {
        "soft": {}, "hard": dict(interpolation="hard"), "fixed": dict(interpolation="fixed"),
        "none": dict(interpolation="none"), "soft-nomsda": dict(msda=False),
        "none-nomsda": dict(interpolation="none", msda=False), "level1": dict(similarity_level=1),
    }.items():
        out[name] = model.non_keyframe(moved, state, _opts(model, **kw))
    sim = out["soft"][1].similarity
    select = sim < 0.8
    assert 0 < select.float().mean() < 1
    assert out["soft"][1].msda_share == pytest.approx(select.float().mean().item())
    # feature reuse: z'_t = z_t unmodified
    assert torch.allclose(out["none-nomsda"][0], model.decoder.classify(z_t), atol=1e-5)
    # MSDA changes exactly the selected points (the classifier is per point)
    changed = (out["none"][0] - out["none-nomsda"][0]).abs().amax(1) > 1e-6
    assert torch.equal(changed, select)
    # soft interpolation by hand
    w = sim.clamp(0, 1)[:, None]
    z_k = _z_t(model, key, state)  # the keyframe's own z (its stages 1-2 and 3-4)
    soft = model.decoder.classify(w * z_k + (1 - w) * z_t)
    assert torch.allclose(out["soft-nomsda"][0], soft, atol=1e-5)
    # hard: ŵ in {0, 1}: keyframe features where w >= 0.8
    keep = (~select)[:, None].expand_as(out["hard"][0])
    assert torch.allclose(out["hard"][0][keep], model.decoder.classify(z_k)[keep], atol=1e-6)
    names = list(out)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not torch.allclose(out[a][0], out[b][0]), (a, b)
    assert out["soft-nomsda"][1].msda_share == 0.0


@torch.no_grad()
def test_msda_threshold_sets_the_share():
    model = _model()
    key, moved = _frames()
    _, state = model.keyframe(key)
    shares = [model.non_keyframe(moved, state, _opts(model, msda_threshold=t))[1].msda_share
              for t in (0.5, 0.8, 1.0)]
    assert shares[0] <= shares[1] <= shares[2] and shares[1] > 0
    assert shares[2] == 1.0  # every point of a changed frame is below 1


@torch.no_grad()
def test_interpolation_power_sharpens_the_soft_weight():
    """ŵ = clamp(w, 0, 1)^p by hand; on a frame, p = 1 is the paper's weight and a larger p
    moves every point's logits away from the keyframe's by exactly that weight."""
    from tfcseg.models.temporal import interpolation_weight

    w = torch.tensor([-0.2, 0.0, 0.5, 0.9, 1.0])
    assert torch.equal(interpolation_weight(w, TFCOptions()), w.clamp(0, 1))
    assert torch.allclose(interpolation_weight(w, TFCOptions(interpolation_power=4.0)),
                          torch.tensor([0.0, 0.0, 0.0625, 0.6561, 1.0]))
    assert torch.equal(interpolation_weight(w, TFCOptions(interpolation="hard", interpolation_power=4.0,
                                                          msda_threshold=0.6)),
                       torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0]))  # only the soft weight has a power
    model = _model(msda=False)
    key, moved = _frames()
    key_logits, state = model.keyframe(key)
    plain, info = model.non_keyframe(moved, state, _opts(model, interpolation="none"))
    for p in (1.0, 3.0):
        out, _ = model.non_keyframe(moved, state, _opts(model, interpolation_power=p))
        weight = info.similarity.clamp(0, 1).pow(p)[:, None]
        assert torch.allclose(out, plain + weight * (key_logits - plain), atol=1e-5)
    with pytest.raises(ValueError, match="interpolation_power"):
        _opts(model, interpolation_power=-1.0).validate()


def test_gate_msda_by_hand():
    from tfcseg.models.temporal import gate_msda

    plain = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 0.0, 0.0]])
    repaired = torch.tensor([[0.0, 3.0, 0.5],  # label changed, leads by 2.5: kept
                             [0.0, 1.0, 0.5],  # label changed, leads by 0.5: undecided -> plain
                             [0.0, 5.0, 4.9],  # label unchanged (1): kept however close
                             [0.0, 0.0, 1.0]])  # changed, leads by exactly 1.0 = gate: kept
    out = gate_msda(repaired, plain, 1.0)
    assert torch.equal(out, torch.stack([repaired[0], plain[1], repaired[2], repaired[3]]))
    assert torch.equal(gate_msda(repaired, plain, 0.0), repaired)


@torch.no_grad()
def test_msda_gate_keeps_only_decided_label_changes():
    """Each point of a gated frame carries the ungated MSDA result or the no-MSDA result:
    the no-MSDA one exactly where MSDA changed the label by less than the gate."""
    model = _model()
    key, moved = _frames()
    _, state = model.keyframe(key)
    on, _ = model.non_keyframe(moved, state, _opts(model, msda_threshold=0.9))
    off, _ = model.non_keyframe(moved, state, _opts(model, msda=False))
    margin = on.topk(2, dim=1).values
    margin = margin[:, 0] - margin[:, 1]  # [1, h, w]
    changed = on.argmax(1) != off.argmax(1)
    assert changed.sum() >= 4, "the test needs points whose label MSDA changes"
    gate = float(margin[changed].median())  # gates about half of them
    gated, info = model.non_keyframe(moved, state, _opts(model, msda_threshold=0.9, msda_gate=gate))
    undecided = changed & (margin < gate)
    assert 0 < undecided.sum() < changed.sum()
    expect = torch.where(undecided[:, None], off, on)
    assert torch.allclose(gated, expect, atol=1e-5)
    assert info.msda_share == model.non_keyframe(moved, state, _opts(model, msda_threshold=0.9))[1].msda_share
    with pytest.raises(ValueError, match="msda_gate"):
        _opts(model, msda_gate=-1.0).validate()


@pytest.mark.parametrize("levels", [1, 2, 3])
@torch.no_grad()
def test_fewer_msda_levels(levels):
    model = _model(msda_levels=levels)
    key, moved = _frames()
    _, state = model.keyframe(key)
    out, info = model.non_keyframe(moved, state)
    assert out.shape == (1, 5, 12, 18) and info.msda_share > 0


@pytest.mark.parametrize("levels", [4, 3, 2, 1])
@torch.no_grad()
def test_sparse_logit_update_equals_msda_on_z(levels):
    """Inference's sparse MSDA (features of the selected rows only, output projection and
    classifier folded, levels 1-2 sampled before their projection with a ones channel,
    levels 3-4 in class space) == the plain form (value pyramid, MSDA on z, classifier),
    in float64 with random MSDA weights whose samples fall far outside the maps; batch 3
    of different keyframes, the middle one static (no point selected)."""
    model = _model(msda_levels=levels, msda_threshold=0.9).double()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in model.temporal.msda.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * (3.0 if p.ndim == 1 else 0.3))
    key, moved = (f.double() for f in _frames())
    key2 = torch.flip(key, dims=(3,))
    moved2 = torch.roll(key2, shifts=(-2, 1), dims=(2, 3))
    key, moved = torch.cat([key, key, key2]), torch.cat([moved, key, moved2])
    out = model.clip_forward(torch.stack([key, moved], 1))
    k_logits, state = model.keyframe(key)
    n_logits, info = model.non_keyframe(moved, state)
    selected = (info.similarity < 0.9).flatten(1).sum(1)
    assert selected[0] > 0 and selected[1] == 0 and selected[2] > 0
    assert (out.logits[:, 1] - n_logits).abs().max().item() < 1e-9
    # and MSDA really changed them
    off, _ = model.non_keyframe(moved, state, _opts(model, msda=False))
    assert (off - n_logits).abs().max().item() > 1e-2
    # the folded maps follow any weight they are made from, e.g. a bias changed in place
    with torch.no_grad():
        model.temporal.msda.sampling_offsets.bias.add_(0.5)
    _, state = model.keyframe(key)
    again, _ = model.non_keyframe(moved, state)
    ref = model.clip_forward(torch.stack([key, moved], 1)).logits[:, 1]
    assert (ref - again).abs().max().item() < 1e-9 and (again - n_logits).abs().max().item() > 1e-3


@torch.no_grad()
def test_untrained_tfc_modules_run_without_msda():
    model = _model(trained=False)
    key, moved = _frames()
    _, state = model.keyframe(key)
    with pytest.warns(UserWarning, match="untrained"):
        out, info = model.non_keyframe(moved, state)
    assert info.msda_share == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        again, _ = model.non_keyframe(moved, state)
    assert torch.equal(out, again)
    ref, _ = model.non_keyframe(moved, state, _opts(model, msda=False))
    assert torch.equal(out, ref)


@torch.no_grad()
def test_batch_equals_one_by_one():
    """Sparse MSDA pads per-sample selections to one call: results equal single runs."""
    model = _model()
    key, moved = _frames()
    keys = torch.cat([key, moved])
    frames = torch.cat([moved, torch.roll(moved, 7, 3)])
    _, state = model.keyframe(keys)
    out, info = model.non_keyframe(frames, state)
    for i in range(2):
        _, s = model.keyframe(keys[i:i + 1])
        o, inf = model.non_keyframe(frames[i:i + 1], s)
        assert torch.allclose(out[i:i + 1], o, atol=1e-5)
        assert torch.allclose(info.similarity[i:i + 1], inf.similarity, atol=1e-6)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@torch.no_grad()
def test_keyframe_from_low_level_equals_keyframe(precision):
    """A frame promoted to keyframe after its stages 1-2 ran (adaptive keyframes) gets exactly
    what `keyframe` gives it: logits and every tensor of the state, and so the same next
    non-keyframe."""
    model = _model()
    key, moved = _frames()
    key = torch.cat([key, torch.roll(key, 3, 3)])  # batch 2
    moved = torch.cat([moved, moved])
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        logits, state = model.keyframe(key)
        x1, x2 = model.low_level(key)
        logits_ll, state_ll = model.keyframe_from_low_level(key.shape[-2:], x1, x2)
        assert torch.equal(logits_ll, logits)
        assert state_ll.size == state.size == SIZE
        for name in ("x1", "x2", "x3", "x4", "base", "logits"):
            a, b = getattr(state_ll, name), getattr(state, name)
            assert a.dtype == b.dtype and torch.equal(a, b), name
        out, info = model.non_keyframe(moved, state)
        out_ll, info_ll = model.non_keyframe(moved, state_ll)
    assert torch.equal(out_ll, out) and torch.equal(info_ll.similarity, info.similarity)


@torch.no_grad()
def test_sparse_msda_query_linear_follows_autocast():
    """Under bf16 autocast the query linear of sparse MSDA (offsets, attention logits) runs in
    bf16 and the rest in fp32: on the same inputs, the update is close to the fp32 one and not
    identical to it."""
    model = _model(msda_threshold=0.9)
    key, moved = _frames()
    _, state = model.keyframe(key)
    calls = []
    plain = model.temporal.sparse_update

    def spy(*args, query_dtype=None):
        calls.append((args, query_dtype))
        return plain(*args, query_dtype=query_dtype)

    model.temporal.sparse_update = spy
    _, info = model.non_keyframe(moved, state)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model.non_keyframe(moved, state)
    assert [dtype for _, dtype in calls] == [None, torch.bfloat16] and info.msda_share > 0
    args = calls[0][0]  # the fp32 frame's inputs, both ways
    fp32, bf16 = plain(*args), plain(*args, query_dtype=torch.bfloat16)
    assert fp32.dtype == bf16.dtype == torch.float32
    assert not torch.equal(bf16, fp32)
    assert float((bf16 - fp32).abs().max()) < 0.05 * float(fp32.abs().max())


@torch.no_grad()
def test_non_keyframe_in_two_steps_equals_one():
    """low_level -> similarity -> non_keyframe_from_low_level (the adaptive path, which decides
    between the last two) is `non_keyframe`, and it does not compute the similarity again."""
    model = _model()
    key, moved = _frames()
    _, state = model.keyframe(key)
    for level in (1, 2):
        opts = _opts(model, similarity_level=level)
        out, info = model.non_keyframe(moved, state, opts)
        x1, x2 = model.low_level(moved)
        sim = model.similarity(x1, x2, state, opts)
        assert torch.equal(sim, info.similarity)
        out2, info2 = model.non_keyframe_from_low_level(x1, x2, state, opts, similarity=sim)
        assert torch.equal(out2, out) and info2.msda_share == info.msda_share
        assert info2.similarity is sim
    # a given similarity is used as given: all ones keeps the keyframe's logits (soft)
    ones = torch.ones_like(sim)
    out3, _ = model.non_keyframe_from_low_level(x1, x2, state, _opts(model, msda=False), similarity=ones)
    assert torch.equal(out3, rows_to_image(state.logits, 1, *x1.shape[-2:]))
    with pytest.raises(ValueError, match="one value per point"):
        model.non_keyframe_from_low_level(x1, x2, state, similarity=ones[:, :3])
    with pytest.raises(ValueError, match="differ from the keyframe's"):
        model.similarity(x1[..., :-1], x2, state)


def test_inference_path_guards():
    model = _model()
    x = torch.randn(1, 3, *SIZE)
    with torch.no_grad():
        _, state = model.keyframe(x)
        with pytest.raises(ValueError, match="differs from its keyframe"):
            model.non_keyframe(torch.randn(1, 3, 50, 70), state)
    model.train()
    with pytest.raises(RuntimeError, match="eval"):
        model.keyframe(x)


def test_clip_forward_train_and_backward():
    model = _model(trained=False).train()  # training starts from untrained TFC modules
    key, moved = _frames()
    clip = torch.stack([key[0], moved[0], torch.roll(moved[0], 2, 2)])[None].repeat(2, 1, 1, 1, 1)
    out = model.clip_forward(clip)
    assert out.logits.shape == (2, 3, 5, 12, 18)
    assert out.similarity.shape == (2, 2, 12, 18)
    assert 0 < out.msda_share < 1
    loss = F.cross_entropy(out.logits.flatten(0, 1), torch.randint(0, 5, (6, 12, 18)))
    loss = loss + F.binary_cross_entropy(out.similarity.clamp(0, 1), torch.ones_like(out.similarity))
    loss.backward()
    for name in ("encoder.stages.0.patch_embed.proj.weight", "encoder.stages.3.norm.weight",
                 "decoder.linear_c.1.weight", "decoder.linear_fuse.weight",
                 "temporal.msda.value_proj.weight", "temporal.msda.sampling_offsets.weight",
                 "temporal.msda.attention_weights.weight", "temporal.msda.output_proj.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name


@torch.no_grad()
def test_clip_forward_in_eval_matches_inference():
    model = _model()
    key, moved = _frames()
    clip = torch.stack([key[0], moved[0]])[None]
    out = model.clip_forward(clip)
    k_logits, state = model.keyframe(key)
    n_logits, info = model.non_keyframe(moved, state)
    assert torch.allclose(out.logits[:, 0], k_logits, atol=1e-4)
    assert torch.allclose(out.similarity[:, 0], info.similarity, atol=1e-5)
    assert torch.allclose(out.logits[:, 1], n_logits, atol=1e-4)
    assert out.msda_share == pytest.approx(info.msda_share)
    single = model.clip_forward(clip[:, :1])
    assert single.logits.shape == (1, 1, 5, 12, 18) and single.similarity.shape == (1, 0, 12, 18)


@pytest.mark.parametrize("size", [(45, 70), (61, 83), (33, 47)])
@pytest.mark.parametrize("tfc", [
    dict(), dict(msda=False), dict(interpolation="hard"), dict(interpolation="none", msda=False),
    dict(similarity_level=1, interpolation="fixed"),
], ids=["soft-msda", "soft", "hard-msda", "reuse", "level1-fixed"])
@torch.no_grad()
def test_fast_inference_equals_the_plain_path(size, tfc):
    """keyframe/non_keyframe (folded head on token rows, reduced similarity basis, logit
    interpolation) == clip_forward in eval (the plain decoder and the formulas as written),
    batch 2, odd sizes: logits to 1e-4, similarity to 1e-5, identical labels."""
    model = _model(**tfc)
    g = torch.Generator().manual_seed(sum(size))
    key = 1.5 * F.interpolate(torch.randn(2, 3, 6, 9, generator=g), size=size, mode="bilinear",
                              align_corners=False)
    moved = torch.roll(key, shifts=(1, 2), dims=(2, 3))
    moved[:, :, 5:20, 10:30] = torch.randn(2, 3, 15, 20, generator=g)
    out = model.clip_forward(torch.stack([key, moved], 1))
    k_logits, state = model.keyframe(key)
    n_logits, info = model.non_keyframe(moved, state)
    assert torch.allclose(out.similarity[:, 0], info.similarity, atol=1e-5)
    for ref, fast in ((out.logits[:, 0], k_logits), (out.logits[:, 1], n_logits)):
        assert (ref - fast).abs().max().item() < 1e-4
        assert torch.equal(ref.argmax(1), fast.argmax(1))


def test_checkpoint_keeps_msda(tmp_path):
    model = _model()
    save_checkpoint(model, tmp_path / "ck")
    loaded = load_model(tmp_path / "ck")
    assert loaded.config.tfc_trained
    assert torch.equal(loaded.temporal.msda.sampling_offsets.bias, model.temporal.msda.sampling_offsets.bias)
    key, moved = _frames()
    with torch.no_grad():
        a = model.non_keyframe(moved, model.keyframe(key)[1])[0]
        b = loaded.non_keyframe(moved, loaded.keyframe(key)[1])[0]
    assert torch.equal(a, b)


def test_training_with_no_selected_point_gives_zero_msda_gradients():
    model = _model(msda_threshold=-2.0).train()  # w >= -1 > threshold: nothing selected
    key, moved = _frames()
    out = model.clip_forward(torch.stack([key[0], moved[0]])[None])
    assert out.msda_share == 0.0
    out.logits.sum().backward()
    for name, p in model.temporal.msda.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) == 0, name


def test_inference_path_is_differentiable():
    """keyframe/non_keyframe with autograd on (e.g. for saliency): backward reaches the encoder."""
    model = _model()
    key, moved = _frames()
    for level in (1, 2):
        _, state = model.keyframe(key)
        logits, info = model.non_keyframe(moved, state, _opts(model, similarity_level=level))
        (logits.sum() + info.similarity.sum()).backward()
        grad = model.encoder.stages[0].patch_embed.proj.weight.grad
        assert grad is not None and grad.abs().sum() > 0
        model.zero_grad()


@torch.no_grad()
def test_cached_bases_follow_dtype_changes():
    """.double() keeps the Parameter objects: the folded head and the similarity basis must
    still be rebuilt, in float64, matching the plain path to float64 precision."""
    model = _model()
    key, moved = _frames()
    _, state = model.keyframe(key)
    model.non_keyframe(moved, state)  # caches built in float32
    model.double()
    key, moved = key.double(), moved.double()
    out = model.clip_forward(torch.stack([key, moved], 1))
    k_logits, state = model.keyframe(key)
    n_logits, info = model.non_keyframe(moved, state)
    assert info.similarity.dtype == k_logits.dtype == torch.float64
    assert (out.similarity[:, 0] - info.similarity).abs().max() < 1e-10
    assert (out.logits[:, 1] - n_logits).abs().max() < 1e-10


@torch.no_grad()
def test_keyframe_logits_do_not_alias_the_state():
    model = _model(msda=False)
    key, moved = _frames()
    logits, state = model.keyframe(key)
    before, _ = model.non_keyframe(moved, state)
    logits.mul_(0.0)  # the caller edits its copy
    after, _ = model.non_keyframe(moved, state)
    assert torch.equal(before, after)


def test_autograd_after_an_inference_mode_run():
    """Caches first built under inference_mode (a VideoSegmenter run) serve autograd later."""
    model = _model()
    key, moved = _frames()
    with torch.inference_mode():
        _, state = model.keyframe(key)
        model.non_keyframe(moved, state)
    _, state = model.keyframe(key)
    logits, info = model.non_keyframe(moved, state)
    (logits.sum() + info.similarity.sum()).backward()
    assert model.encoder.stages[0].patch_embed.proj.weight.grad is not None


@torch.no_grad()
def test_keyframe_and_non_keyframe_may_differ_in_precision():
    """A keyframe under bf16 autocast, a non-keyframe without (and the reverse), MSDA on."""
    model = _model()
    key, moved = _frames()
    ref, _ = model.non_keyframe(moved, model.keyframe(key)[1])
    for key_amp, frame_amp in ((True, False), (False, True)):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=key_amp):
            _, state = model.keyframe(key)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=frame_amp):
            out, info = model.non_keyframe(moved, state)
        assert info.msda_share > 0
        assert (out.float().argmax(1) == ref.argmax(1)).float().mean() > 0.9
