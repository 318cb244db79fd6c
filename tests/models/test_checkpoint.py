"""Checkpoints: round trips, foreign layouts, strict and safe loading, `tfcseg convert`."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file

from tfcseg import CheckpointError, TFCSegFormer, load_model, save_checkpoint
from tfcseg.models.checkpoint import convert_hf_state_dict, read_checkpoint
from tfcseg.cli import main

from conftest import tiny_config


def test_save_load_round_trip(tmp_path, tiny_model):
    tiny_model.config.class_names = ["a", "b", "c", "d", "e"]
    save_checkpoint(tiny_model, tmp_path / "ck")
    assert sorted(os.listdir(tmp_path / "ck")) == ["config.json", "model.safetensors"]
    loaded = load_model(tmp_path / "ck")
    assert not loaded.training
    assert loaded.config.class_names == ["a", "b", "c", "d", "e"]
    x = torch.randn(1, 3, 33, 41)
    with torch.no_grad():
        assert torch.equal(loaded.image_logits(x), tiny_model.image_logits(x))
    # a file path inside the folder works too
    assert load_model(tmp_path / "ck" / "model.safetensors").config.num_classes == 5


def _hf_to_mmseg(sd):
    """The NVlabs/mmseg layout written independently of tfcseg's converter."""
    out = {}
    for k, v in sd.items():
        if ".attention.self.value." in k:
            continue
        n = k
        for a, b in [("segformer.encoder.", "backbone."), (".layer_norm_1.", ".norm1."),
                     (".layer_norm_2.", ".norm2."), (".attention.self.query.", ".attn.q."),
                     (".attention.self.sr.", ".attn.sr."), (".attention.self.layer_norm.", ".attn.norm."),
                     (".attention.output.dense.", ".attn.proj."), (".mlp.dense1.", ".mlp.fc1."),
                     (".mlp.dense2.", ".mlp.fc2."), ("decode_head.linear_fuse.", "decode_head.linear_fuse.conv."),
                     ("decode_head.batch_norm.", "decode_head.linear_fuse.bn."),
                     ("decode_head.classifier.", "decode_head.linear_pred.")]:
            n = n.replace(a, b)
        parts = n.split(".")
        if n.startswith("backbone.patch_embeddings."):
            n = f"backbone.patch_embed{int(parts[2]) + 1}." + ".".join(parts[3:]).replace("layer_norm", "norm")
        elif n.startswith("backbone.block."):
            n = f"backbone.block{int(parts[2]) + 1}." + ".".join(parts[3:])
        elif n.startswith("backbone.layer_norm."):
            n = f"backbone.norm{int(parts[2]) + 1}." + ".".join(parts[3:])
        elif n.startswith("decode_head.linear_c."):
            n = f"decode_head.linear_c{int(parts[2]) + 1}." + ".".join(parts[3:])
        if ".attention.self.key." in k:
            vk = k.replace(".key.", ".value.")
            n = n.replace(".attention.self.key.", ".attn.kv.")
            v = torch.cat([v, sd[vk]], 0)
        out[n] = v
    out["decode_head.conv_seg.weight"] = torch.zeros(7, 256, 1, 1)  # mmseg's unused head
    return out


def test_mmseg_fused_kv_round_trip(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(num_labels=7))
    hf.save_pretrained(tmp_path / "hf")
    hf_sd = load_file(str(tmp_path / "hf" / "model.safetensors"))
    torch.save({"meta": {"epoch": 1}, "state_dict": _hf_to_mmseg(hf_sd)}, tmp_path / "segformer.b0.pth")
    cfg, sd, foreign = read_checkpoint(tmp_path / "segformer.b0.pth")
    assert foreign and cfg.variant == "b0" and cfg.num_classes == 7
    ref = convert_hf_state_dict(hf_sd)
    assert sorted(sd) == sorted(ref)
    assert all(torch.equal(sd[k], ref[k]) for k in ref)
    model = load_model(tmp_path / "segformer.b0.pth")
    assert isinstance(model, TFCSegFormer)


def test_convert_command(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.SegformerConfig(num_labels=3, depths=[1, 1, 1, 1])
    cfg.id2label = {0: "road", 1: "car", 2: "sky"}
    transformers.SegformerForSemanticSegmentation(cfg).save_pretrained(tmp_path / "hf")
    assert main(["convert", str(tmp_path / "hf"), "-o", str(tmp_path / "out")]) == 0
    data = json.loads((tmp_path / "out" / "config.json").read_text())
    assert data["class_names"] == ["road", "car", "sky"] and data["format"] == "tfcseg"
    assert main(["convert", str(tmp_path / "hf"), "-o", str(tmp_path / "out")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    # never over the source (it would replace the transformers files), nor around it
    before = {p.name: p.read_bytes() for p in (tmp_path / "hf").iterdir()}
    for dest, says in ((tmp_path / "hf", "is the checkpoint's own folder"), (tmp_path, "holds the checkpoint")):
        assert main(["convert", str(tmp_path / "hf"), "-o", str(dest), "--overwrite"]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1
    assert {p.name: p.read_bytes() for p in (tmp_path / "hf").iterdir()} == before


def _bad(tmp_path, tiny_model, mutate):
    save_checkpoint(tiny_model, tmp_path / "ck")
    sd = load_file(str(tmp_path / "ck" / "model.safetensors"))
    mutate(sd)
    save_file(sd, str(tmp_path / "ck" / "model.safetensors"))
    with pytest.raises(CheckpointError) as info:
        load_model(tmp_path / "ck")
    return str(info.value)


def test_non_finite_weights_are_refused(tmp_path, tiny_model):
    def poison(sd):
        sd["decoder.classifier.weight"][0, 0] = float("nan")
        sd["encoder.stages.0.norm.bias"][1] = float("inf")

    msg = _bad(tmp_path, tiny_model, poison)
    assert "non-finite weights (NaN or Inf) in 2 tensor(s): decoder.classifier.weight, encoder.stages.0.norm.bias" in msg


def test_missing_key_is_named(tmp_path, tiny_model):
    msg = _bad(tmp_path, tiny_model, lambda sd: sd.pop("decoder.linear_fuse.weight"))
    assert "missing keys: decoder.linear_fuse.weight" in msg


def test_unexpected_key_is_named(tmp_path, tiny_model):
    msg = _bad(tmp_path, tiny_model, lambda sd: sd.__setitem__("extra.weight", torch.zeros(1)))
    assert "unexpected keys: extra.weight" in msg


def test_shape_mismatch_is_named(tmp_path, tiny_model):
    msg = _bad(tmp_path, tiny_model, lambda sd: sd.__setitem__("decoder.linear_c.0.bias", torch.zeros(3)))
    assert "decoder.linear_c.0.bias" in msg and "shape" in msg


def test_class_count_mismatch(tmp_path, tiny_model):
    save_checkpoint(tiny_model, tmp_path / "ck")
    data = json.loads((tmp_path / "ck" / "config.json").read_text())
    data["num_classes"], data["class_names"], data["palette"] = 6, [str(i) for i in range(6)], None
    (tmp_path / "ck" / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="5 classes but its config says 6"):
        load_model(tmp_path / "ck")


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_malicious_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"state_dict": _Evil()}, f)
    torch.save({"state_dict": {"w": _Evil()}}, tmp_path / "evil2.pth")
    for name in ("evil.pth", "evil2.pth"):
        with pytest.raises(CheckpointError, match="evil"):
            load_model(tmp_path / name)
    assert not (tmp_path / "PWNED").exists()


def test_empty_and_garbage_files(tmp_path):
    (tmp_path / "empty.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_model(tmp_path / "empty.safetensors")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pth"):
        load_model(tmp_path / "junk.pth")
    with pytest.raises(Exception, match="no such"):
        load_model(tmp_path / "nothing-here")


def test_cli_error_is_one_line(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "missing"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing" in err and "Traceback" not in err


def test_config_rejects_unknown_fields(tmp_path):
    model = TFCSegFormer(tiny_config())
    save_checkpoint(model, tmp_path / "ck")
    data = json.loads((tmp_path / "ck" / "config.json").read_text())
    data["num_clases"] = 3
    (tmp_path / "ck" / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="num_clases"):
        load_model(tmp_path / "ck")


def test_export_to_hf_layout_round_trips(tmp_path):
    transformers = pytest.importorskip("transformers")
    from tfcseg.models.checkpoint import export_hf_state_dict

    torch.manual_seed(0)
    hf = transformers.SegformerForSemanticSegmentation(transformers.SegformerConfig(num_labels=4, depths=[1, 2, 1, 1]))
    hf.save_pretrained(tmp_path / "hf")
    stored = load_file(str(tmp_path / "hf" / "model.safetensors"))
    back = export_hf_state_dict(convert_hf_state_dict(stored))
    assert sorted(back) == sorted(stored)
    assert all(torch.equal(back[k], stored[k]) for k in stored)


@pytest.mark.parametrize("change,word", [
    ({"num_heads": [1, 2, 5, 8]}, "divisible"),  # 24 is not divisible by 5 heads
    ({"depths": [1, 1, 1]}, "depths"),
    ({"tfc": {"msda_heads": 3}}, "msda_heads"),
    ({"tfc": {"fixed_weight": 1.5}}, "fixed_weight"),
    ({"tfc": {"msda_gate": -0.5}}, "msda_gate"),
    ({"tfc": {"msda_gate": True}}, "msda_gate"),
    ({"tfc": {"interpolation_power": 0.5}}, "interpolation_power"),
    ({"label_hysteresis": True}, "label_hysteresis"),
    ({"label_hysteresis": "0.5"}, "label_hysteresis"),
    ({"label_hysteresis_power": -2}, "label_hysteresis_power"),
])
def test_invalid_architecture_in_config_is_one_clear_error(tmp_path, change, word):
    save_checkpoint(TFCSegFormer(tiny_config()), tmp_path / "ck")
    data = json.loads((tmp_path / "ck" / "config.json").read_text())
    for key, value in change.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) else value
    (tmp_path / "ck" / "config.json").write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match=word):
        load_model(tmp_path / "ck")
