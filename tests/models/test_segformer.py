"""SegFormer core: parity with `transformers` on the same weights, all variants, folding."""

from __future__ import annotations

import pytest
import torch

from tfcseg import VARIANTS, ModelConfig, TFCSegFormer, load_model
from tfcseg.models.folded import level_rows
from tfcseg.models.layout import resize, rows_to_image as to_image, seq_to_image

from conftest import randomise_bn

transformers = pytest.importorskip("transformers")


def _hf_model(tmp_path, **cfg):
    torch.manual_seed(0)
    config = transformers.SegformerConfig(num_labels=7, **cfg)
    config.id2label = {i: f"thing{i}" for i in range(7)}
    config.label2id = {v: k for k, v in config.id2label.items()}
    model = transformers.SegformerForSemanticSegmentation(config).eval()
    randomise_bn(model)
    model.save_pretrained(tmp_path / "hf")
    return model


@pytest.mark.parametrize("cfg", [
    dict(),  # B0, the real configuration
    dict(hidden_sizes=[64, 128, 320, 512], depths=[1, 2, 2, 1], decoder_hidden_size=96),  # B2-like, shallow
], ids=["b0", "b2-reduced"])
@pytest.mark.parametrize("size", [(64, 64), (97, 131)])
def test_parity_with_transformers(tmp_path, cfg, size):
    hf = _hf_model(tmp_path, **cfg)
    model = load_model(tmp_path / "hf")
    assert model.config.class_names == [f"thing{i}" for i in range(7)]
    torch.manual_seed(1)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        ref = hf(pixel_values=x).logits
        ours = model.image_logits(x)  # eval: folded decoder
    h, w = size
    assert ours.shape == (1, 7, -(-h // 4), -(-w // 4)) == ref.shape
    assert (ours - ref).abs().max().item() < 1e-4
    # the plain decoder form (training's), with eval-mode BN
    with torch.no_grad():
        feats = model.encoder(x)
        dec = model.decoder
        size4 = feats[0].shape[-2:]
        z = dec.fuse([resize(dec.project(l + 1, f), size4) for l, f in enumerate(feats)])
        plain = dec.classify(z)
    assert (plain - ref).abs().max().item() < 1e-4


@pytest.mark.parametrize("size", [(45, 70), (64, 64), (97, 131), (33, 29)])
@pytest.mark.parametrize("chunk", [7, 2048])
def test_folded_equals_plain(tiny_model, size, chunk):
    """The folded token-row head (any chunking, odd sizes, batch 2) == the plain decoder."""
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        feats = tiny_model.encoder(x)
        dec = tiny_model.decoder
        size4 = tuple(feats[0].shape[-2:])
        plain_z = dec.fuse([resize(dec.project(l + 1, f), size4) for l, f in enumerate(feats)])
        plain = dec.classify(plain_z)
        head = dec.folded(torch.float32)
        base = head.base_rows(feats[2], feats[3], size4)
        x1, up2 = level_rows(feats[0], feats[1], torch.float32)
        z = to_image(head.features_rows(base, x1, up2), 2, *size4)
        logits = to_image(head.logits_rows(base, x1, up2, chunk=chunk), 2, *size4)
    assert torch.allclose(plain_z, z, atol=1e-5)
    assert (plain - logits).abs().max().item() < 1e-4
    assert torch.equal(plain.argmax(1), logits.argmax(1))
    if chunk == 2048:
        with torch.no_grad():
            assert torch.equal(logits, tiny_model.image_logits(x))  # the same head, bit for bit


def test_eval_forward_with_autograd_uses_the_plain_decoder(tiny_model):
    """Eval mode with autograd on (e.g. frozen-BN fine-tuning): gradients reach the decoder."""
    x = torch.randn(1, 3, 45, 70)
    with torch.no_grad():
        fast = tiny_model.image_logits(x)
    slow = tiny_model.image_logits(x)
    assert torch.allclose(fast, slow, atol=1e-5)
    slow.sum().backward()
    assert tiny_model.decoder.linear_fuse.weight.grad is not None


def test_encoder_runs_first_two_stages(tiny_model):
    x = torch.randn(1, 3, 50, 66)
    full = tiny_model.encoder(x)
    two = tiny_model.encoder(x, stages=2)
    assert [f.shape[-2:] for f in full] == [(13, 17), (7, 9), (4, 5), (2, 3)]
    assert len(two) == 2 and all(torch.equal(a, b) for a, b in zip(two, full[:2]))
    rest = tiny_model.encoder(two[-1], stages=4, start=2)
    assert torch.allclose(rest[-1], full[-1])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_builds_forward_backward(variant):
    cfg = ModelConfig(variant=variant, num_classes=3)
    assert cfg.hidden_sizes == VARIANTS[variant]["hidden_sizes"]
    # The real configuration builds; the forward/backward uses its widths at depth 1.
    full = TFCSegFormer(cfg)
    n_params = sum(p.numel() for p in full.parameters())
    assert n_params > 3e6
    model = TFCSegFormer(cfg.replace(depths=[1, 1, 1, 1])).train()
    x = torch.randn(2, 3, 64, 64)
    logits = model.image_logits(x)
    assert logits.shape == (2, 3, 16, 16)
    logits.mean().backward()
    assert model.encoder.stages[0].patch_embed.proj.weight.grad is not None
    assert model.decoder.linear_c[0].weight.grad is not None


def test_folded_cache_follows_weight_changes(tiny_model):
    """load_state_dict / optimizer steps change weights in place: the fold must follow."""
    x = torch.randn(1, 3, 40, 56)
    with torch.no_grad():
        before = tiny_model.image_logits(x)
        other = TFCSegFormer(tiny_model.config)
        randomise_bn(other)
        tiny_model.load_state_dict(other.state_dict())
        after = tiny_model.image_logits(x)
        assert torch.allclose(after, other.eval().image_logits(x), atol=1e-5)
    assert not torch.allclose(before, after)


def test_fold_built_under_autocast_stays_fp32(tiny_model):
    x = torch.randn(1, 3, 40, 56)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        tiny_model.image_logits(x)
    with torch.inference_mode():
        assert tiny_model.image_logits(x).dtype == torch.float32  # no bf16 weights left behind


def test_fused_dwconv_gelu_equals_plain(tiny_model):
    """Mix-FFN's depthwise conv + GELU as one oneDNN op (inference) == the two plain ops."""
    from tfcseg.models import mit

    ffn = tiny_model.encoder.stages[0].blocks[0].mlp
    x = torch.randn(2, 13 * 17, ffn.fc1.in_features)
    with torch.no_grad():
        image = seq_to_image(ffn.fc1(x), 13, 17)
        fused = mit._dwconv_gelu_fused(ffn.dwconv, image)
        if fused is None:
            pytest.skip("this torch build has no oneDNN pointwise convolution")
        plain = torch.nn.functional.gelu(ffn.dwconv(image))
        assert torch.allclose(fused, plain, atol=1e-6)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = mit._dwconv_gelu_fused(ffn.dwconv, image)
        assert low.dtype == torch.bfloat16 and torch.allclose(low.float(), plain, atol=0.05)
