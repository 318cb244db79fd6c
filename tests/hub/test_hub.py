"""Hub models: registry names, repo ids, revisions, the converted cache, offline errors,
`tfcseg models` and `tfcseg export`. Nothing here reaches the network: the Hugging Face
cache is built by hand in the layout huggingface_hub uses, with HF_HUB_OFFLINE set."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import huggingface_hub
import pytest
import torch
from huggingface_hub import constants as hf_constants
from safetensors.torch import load_file, save_file

import tfcseg.models.checkpoint
from tfcseg import TfcsegError, TFCSegFormer, load_model, save_checkpoint
from tfcseg.hub import convert as hub_convert
from tfcseg.hub import download as hub_download
from tfcseg.hub import export as hub_export
from tfcseg.hub import registry
from tfcseg.cli import main
from tfcseg.hub.refs import HubRef, parse_hub_id
from tfcseg.hub.resolve import resolve_model_source

from conftest import randomise_bn, tiny_config

COMMIT_A = "a" * 40
COMMIT_B = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hf_cache(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache in offline mode, and an empty tfcseg cache."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TFCSEG_CACHE", str(tmp_path / "tfcseg-cache"))
    # huggingface_hub reads its environment once, at import: set what it already read.
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_download, "_noticed", set())
    return cache


def cache_repo(cache: Path, repo_id: str, files: dict[str, Path], commit: str,
               refs: tuple[str, ...] = ("main",)) -> Path:
    """Put `files` into the cache the way huggingface_hub does: content-addressed blobs,
    a snapshot folder of relative symlinks per commit, refs naming commits."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for name, src in files.items():
        data = Path(src).read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snap / name).symlink_to(os.path.relpath(blob, snap))
    (repo / "refs").mkdir(exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    return snap


def tiny_checkpoint(folder: Path, seed: int) -> TFCSegFormer:
    torch.manual_seed(seed)
    model = TFCSegFormer(tiny_config(class_names=["road", "car", "sky", "tree", "person"]))
    randomise_bn(model)
    save_checkpoint(model.eval(), folder)
    return model


def tiny_hf_folder(folder: Path, num_labels: int = 4):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(3)
    cfg = transformers.SegformerConfig(
        num_labels=num_labels, depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32],
        num_attention_heads=[1, 2, 2, 4], decoder_hidden_size=32,
    )
    cfg.id2label = {i: f"label{i}" for i in range(num_labels)}
    cfg.label2id = {v: k for k, v in cfg.id2label.items()}
    hf = transformers.SegformerForSemanticSegmentation(cfg).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so that conversion is really tested
        bn = hf.decode_head.batch_norm
        bn.running_mean.uniform_(-0.3, 0.3)
        bn.running_var.uniform_(0.5, 1.5)
    hf.save_pretrained(folder)
    return hf


def files_of(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in folder.iterdir() if p.is_file()}


def same_weights(a: TFCSegFormer, b: TFCSegFormer, skip: tuple[str, ...] = ()) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa if not k.startswith(skip))


# ---- parsing and registry ---------------------------------------------------------------


def test_parse_hub_id():
    assert parse_hub_id("nvidia/segformer-b0-finetuned-ade-512-512") == HubRef(
        "nvidia/segformer-b0-finetuned-ade-512-512", None)
    assert parse_hub_id("user/repo@v1.0") == HubRef("user/repo", "v1.0")
    assert parse_hub_id("user/repo@refs/pr/3") == HubRef("user/repo", "refs/pr/3")
    assert str(parse_hub_id("user/repo@" + COMMIT_B)) == "user/repo@" + COMMIT_B
    for bad in ("repo", "a/b/c", "user/repo@", "/abs/path", "./x/y", "user/model.safetensors",
                "ck/model.pth", "user/re po", "user/a..b", "segformer-b0-ade"):
        assert parse_hub_id(bad) is None, bad


def test_registry_lists_the_official_checkpoints():
    # Expected ids written out by hand from NVIDIA's Hub naming (b5 on ADE20K is 640x640).
    expect = {
        "segformer-b0-ade": "nvidia/segformer-b0-finetuned-ade-512-512",
        "segformer-b4-ade": "nvidia/segformer-b4-finetuned-ade-512-512",
        "segformer-b5-ade": "nvidia/segformer-b5-finetuned-ade-640-640",
        "segformer-b0-cityscapes": "nvidia/segformer-b0-finetuned-cityscapes-1024-1024",
        "segformer-b5-cityscapes": "nvidia/segformer-b5-finetuned-cityscapes-1024-1024",
    }
    names = [e.name for e in registry.list_models()]
    assert len(names) == len(set(names)) == 13
    for name, repo in expect.items():
        entry = registry.get_model_entry(name)
        assert entry.source == repo and entry.format == "transformers"
        assert entry.licence.startswith("NVIDIA") and not entry.tfc_trained
    assert registry.get_model_entry("SegFormer-B2-Cityscapes").num_classes == 19
    assert registry.get_model_entry("segformer-b3-ade").num_classes == 150
    shipped = registry.get_model_entry(registry.DEFAULT_NAME)
    assert shipped.shipped and shipped.format == "tfcseg"
    with pytest.raises(ValueError, match="format"):
        registry.ModelEntry("x", "a/b", "onnx", "d", 1, "b0", "l")


# ---- resolution and loading --------------------------------------------------------------


def test_hub_id_and_registry_name_load_the_local_weights(hf_cache, tmp_path, monkeypatch):
    local = tiny_checkpoint(tmp_path / "local", seed=0)
    snap = cache_repo(hf_cache, "team/tfc-tiny-vspw", files_of(tmp_path / "local"), COMMIT_A)
    monkeypatch.setitem(registry.REGISTRY, "tfcseg-tiny-vspw", registry.ModelEntry(
        "tfcseg-tiny-vspw", "team/tfc-tiny-vspw", "tfcseg", "VSPW", 5, "custom", "Apache-2.0"))
    calls = []
    monkeypatch.setattr(tfcseg.models.checkpoint, "convert_checkpoint", lambda *a: calls.append(a))

    assert resolve_model_source("team/tfc-tiny-vspw") == snap  # a tfcseg repo: used in place
    by_id, by_name = load_model("team/tfc-tiny-vspw"), load_model("tfcseg-tiny-vspw")
    from_folder = load_model(tmp_path / "local")
    assert same_weights(by_id, from_folder) and same_weights(by_name, from_folder)
    assert same_weights(by_id, local.eval())
    assert by_id.config.class_names == ["road", "car", "sky", "tree", "person"]
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(by_name.image_logits(x), from_folder.image_logits(x))
    assert calls == []  # nothing converted


def test_revision_pin_picks_the_snapshot(hf_cache, tmp_path, monkeypatch):
    old = tiny_checkpoint(tmp_path / "v1", seed=1)
    new = tiny_checkpoint(tmp_path / "v2", seed=2)
    cache_repo(hf_cache, "team/tfc", files_of(tmp_path / "v1"), COMMIT_A, refs=("v1",))
    cache_repo(hf_cache, "team/tfc", files_of(tmp_path / "v2"), COMMIT_B, refs=("main",))
    assert same_weights(load_model("team/tfc"), new.eval())
    assert same_weights(load_model("team/tfc@main"), new.eval())
    assert same_weights(load_model("team/tfc@v1"), old.eval())
    assert same_weights(load_model(f"team/tfc@{COMMIT_A}"), old.eval())
    assert not same_weights(old, new)
    monkeypatch.setitem(registry.REGISTRY, "tfc-team", registry.ModelEntry(
        "tfc-team", "team/tfc", "tfcseg", "VSPW", 5, "custom", "Apache-2.0"))
    assert same_weights(load_model("tfc-team@v1"), old.eval())  # a name takes a revision too
    with pytest.raises(TfcsegError, match=r"team/tfc@v9.*not in the Hugging Face cache"):
        load_model("team/tfc@v9")
    with pytest.raises(TfcsegError, match=r"^tfc-team@v9: team/tfc@v9 is not in the Hugging Face cache"):
        load_model("tfc-team@v9")


def test_transformers_repo_is_converted_once_and_reused(hf_cache, tmp_path, monkeypatch, capsys):
    hf = tiny_hf_folder(tmp_path / "hf", num_labels=150)
    repo = "nvidia/segformer-b0-finetuned-ade-512-512"  # the registry's own id, faked locally
    cache_repo(hf_cache, repo, files_of(tmp_path / "hf"), COMMIT_B)
    real_convert, calls = tfcseg.models.checkpoint.convert_checkpoint, []

    def counting_convert(src, dest):
        calls.append(Path(src))
        return real_convert(src, dest)

    monkeypatch.setattr(tfcseg.models.checkpoint, "convert_checkpoint", counting_convert)
    first = load_model("segformer-b0-ade")
    assert len(calls) == 1 and calls[0].name == COMMIT_B
    converted = hub_convert.converted_dir(repo, COMMIT_B)
    assert converted == tmp_path / "tfcseg-cache" / "converted" / f"models--nvidia--segformer-b0-finetuned-ade-512-512" / COMMIT_B
    assert resolve_model_source("segformer-b0-ade") == converted
    second = load_model(repo)  # the same repo by id: same conversion
    assert len(calls) == 1
    assert json.loads((converted / hub_convert.SOURCE_FILE).read_text())["commit"] == COMMIT_B
    from tfcseg.io.atomic import UMASK

    assert converted.stat().st_mode & 0o777 == 0o777 & ~UMASK  # not mkdtemp's owner-only mode

    # The weights are transformers' own: same logits as its forward pass.
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref = hf(pixel_values=x).logits
        assert torch.allclose(first.image_logits(x), ref, atol=1e-5)
        assert torch.equal(first.image_logits(x), second.image_logits(x))
    assert first.config.tfc_trained is False and first.config.class_names[149] == "label149"
    err = capsys.readouterr().err
    assert err.count("converted segformer-b0-ade to tfcseg format (once)") == 1
    assert err.count("NVIDIA Source Code License for SegFormer") == 1  # said once, not per load


def test_stale_conversion_is_redone(hf_cache, tmp_path, monkeypatch):
    tiny_hf_folder(tmp_path / "hf")
    cache_repo(hf_cache, "acme/segformer-tiny", files_of(tmp_path / "hf"), COMMIT_A)
    first = load_model("acme/segformer-tiny")
    weights = hub_convert.converted_dir("acme/segformer-tiny", COMMIT_A) / "model.safetensors"
    sd = load_file(str(weights))
    sd.pop("decoder.classifier.bias")  # as if written by a tfcseg whose model differs
    save_file(sd, str(weights))
    calls = []
    real_convert = tfcseg.models.checkpoint.convert_checkpoint
    monkeypatch.setattr(tfcseg.models.checkpoint, "convert_checkpoint",
                        lambda s, d: calls.append(s) or real_convert(s, d))
    again = load_model("acme/segformer-tiny")
    # TFC's modules of a foreign checkpoint are a fresh (unused) initialisation each time
    assert len(calls) == 1 and same_weights(first, again, skip=("temporal.",))


def test_local_path_wins_over_names(hf_cache, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny_checkpoint(tmp_path / "segformer-b0-ade", seed=4)
    assert resolve_model_source("segformer-b0-ade") == Path("segformer-b0-ade")
    (tmp_path / "team").mkdir()
    tiny_checkpoint(tmp_path / "team" / "tfc", seed=4)
    assert resolve_model_source("team/tfc") == Path("team/tfc")
    with pytest.raises(TfcsegError, match="^team/tfc2: no such checkpoint file or folder$"):
        resolve_model_source(Path("team/tfc2"))  # a Path is never looked up on the Hub
    with pytest.raises(TfcsegError, match=r"no local file or folder team/tfc2 exists either\)$"):
        resolve_model_source("team/tfc2")  # a mistyped path? the error says both


# ---- errors ------------------------------------------------------------------------------


def test_offline_and_missing_is_one_clear_line(hf_cache, tmp_path, capsys):
    with pytest.raises(TfcsegError) as info:
        load_model("segformer-b2-cityscapes")
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("segformer-b2-cityscapes: nvidia/segformer-b2-finetuned-cityscapes-1024-1024")
    assert "HF_HUB_OFFLINE" in msg and "local checkpoint" in msg and str(hf_cache) in msg
    # the CLI prints it as one line, exit status 2
    assert main(["export", "someone/missing-model", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "someone/missing-model" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_unknown_name_and_bad_revision(hf_cache):
    with pytest.raises(TfcsegError, match="did you mean segformer-b0-ade"):
        load_model("segformer-b0-ad")
    with pytest.raises(TfcsegError, match="not a registry name or Hub repo id"):
        load_model("no-such-thing")
    with pytest.raises(TfcsegError, match="shipped model has no revisions"):
        load_model("tfcseg-camvid-b0@v2")


def test_hub_unreachable_without_offline_mode(hf_cache, monkeypatch):
    import socket

    with socket.socket() as s:  # a local port with nothing listening: refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hf_constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(TfcsegError) as info:
        load_model("acme/never-downloaded")
    msg = str(info.value)
    assert "\n" not in msg and "could not reach the Hugging Face Hub" in msg
    assert "acme/never-downloaded" in msg and "HF_HUB_OFFLINE=1" in msg


def test_cached_snapshot_without_weights(hf_cache, tmp_path):
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.json").write_text(json.dumps({"model_type": "segformer"}))
    cache_repo(hf_cache, "acme/config-only", files_of(tmp_path / "cfg"), COMMIT_A)
    with pytest.raises(TfcsegError, match="no model.safetensors or pytorch_model.bin"):
        load_model("acme/config-only")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    save_file({"w": torch.zeros(1)}, str(tmp_path / "bert" / "model.safetensors"))
    cache_repo(hf_cache, "acme/bert", files_of(tmp_path / "bert"), COMMIT_A)
    with pytest.raises(TfcsegError, match="not a SegFormer checkpoint.*'bert'"):
        load_model("acme/bert")


# ---- tfcseg models --------------------------------------------------------------------------


def test_models_command_shows_what_is_cached(hf_cache, tmp_path, capsys):
    tiny_hf_folder(tmp_path / "hf", num_labels=19)
    cache_repo(hf_cache, "nvidia/segformer-b1-finetuned-cityscapes-1024-1024",
               files_of(tmp_path / "hf"), COMMIT_A)
    assert main(["models", "--json", str(tmp_path / "models.json")]) == 0
    out = capsys.readouterr().out
    assert "segformer-b5-ade" in out and "NVIDIA (non-commercial)" in out
    rows = {r["name"]: r for r in json.loads((tmp_path / "models.json").read_text())}
    assert rows["segformer-b1-cityscapes"]["cached"] is True
    assert rows["segformer-b1-cityscapes"]["converted"] is False
    assert rows["segformer-b0-cityscapes"]["cached"] is False
    assert main(["models", "--download", "segformer-b1-cityscapes", "--json", "-"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["segformer-b1-cityscapes"]["converted"] is True
    assert rows["segformer-b1-cityscapes"]["path"].endswith(COMMIT_A)
    assert main(["models", "--download", "segformer-b0-cityscapes"]) == 2  # offline, not cached
    err = capsys.readouterr().err
    assert "nvidia/segformer-b0-finetuned-cityscapes-1024-1024" in err and "HF_HUB_OFFLINE" in err
    assert main(["models", "--download", "segformer-b9"]) == 2
    assert "segformer-b9: not a registry name" in capsys.readouterr().err


def test_environment_variables_are_respected(tmp_path):
    """A fresh process configured only by HF_HOME / HF_HUB_OFFLINE / TFCSEG_CACHE."""
    tiny_hf_folder(tmp_path / "hf", num_labels=3)
    cache_repo(tmp_path / "home" / "hub", "acme/segformer-tiny", files_of(tmp_path / "hf"), COMMIT_A)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TFCSEG_"))}
    env.update(HF_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1",
               TFCSEG_CACHE=str(tmp_path / "tc"), PYTHONPATH=str(Path(__file__).parent.parent))
    code = ("import tfcseg; m = tfcseg.load_model('acme/segformer-tiny'); "
            "print(m.config.num_classes, tfcseg.resolve_model_source('acme/segformer-tiny'))")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["3", str(tmp_path / "tc" / "converted" / "models--acme--segformer-tiny" / COMMIT_A)]
    assert "converted acme/segformer-tiny to tfcseg format" in res.stderr
    assert "NVIDIA" not in res.stderr  # not NVIDIA's weights: no licence notice


# ---- export and publishing ------------------------------------------------------------------


METRICS = {"miou": 0.329, "wiou": 0.5, "mvc8": 0.853, "mvc16": 0.8, "frames": 40, "videos": 2,
           "per_class_iou": {"road": 0.9, "car": 0.25}}


def test_export_writes_a_publishable_folder(tmp_path, capsys):
    model = tiny_checkpoint(tmp_path / "run", seed=5)
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(METRICS))
    (tmp_path / "run" / "train_args.json").write_text(json.dumps(
        {"command": ["tfcseg", "train", "--data-root", "data/vspw", "--variant", "b0"]}))
    (tmp_path / "run" / "optimizer.pt").write_bytes(b"not for publishing")
    assert main(["export", str(tmp_path / "run"), "-o", str(tmp_path / "pub"),
                 "--dataset", "VSPW"]) == 0
    assert sorted(os.listdir(tmp_path / "pub")) == ["README.md", "config.json", "metrics.json",
                                                    "model.safetensors"]
    assert same_weights(load_model(tmp_path / "pub"), model.eval())
    card = (tmp_path / "pub" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: tfcseg\nlicense: apache-2.0\n")
    assert 'datasets:\n- "VSPW"' in card and "Trained on **VSPW**" in card
    assert "tfcseg train --data-root data/vspw --variant b0" in card
    for shown in ("| mIoU | 32.9% |", "| mVC8 | 85.3% |", "| frames | 40 |", "| car | 25.0% |"):
        assert shown in card, shown
    assert "custom MiT (MiT hidden sizes 8-16-24-32" in card and "- 2: sky" in card
    assert "MSDA off" in card  # tfc_trained is False in the tiny config
    assert "| label hysteresis | off |" in card
    from tfcseg.hub.modelcard import _hysteresis_line

    cfg = model.config.replace(label_hysteresis=1.0, label_hysteresis_power=4.0)
    assert _hysteresis_line(cfg) == ("1 (a new label needs that lead in logits, times the similarity to the "
                                     "previous frame ^ 4)")
    assert _hysteresis_line(cfg.replace(label_hysteresis_power=0.0)) == "1 (a new label needs that lead in logits)"
    assert "| non-keyframe settings | similarity at level 2; interpolation weight clamp(w, 0, 1) |" in card
    # an existing folder is not replaced without --overwrite
    assert main(["export", str(tmp_path / "run"), "-o", str(tmp_path / "pub")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "run"), "-o", str(tmp_path / "pub"), "--overwrite",
                 "--metrics", str(tmp_path / "nope.json")]) == 2
    assert "nope.json: no such metrics file" in capsys.readouterr().err
    assert (tmp_path / "pub" / "README.md").is_file()  # the failed export left it alone


def test_export_of_a_training_run(tmp_path):
    """`tfcseg train`'s layout: <run>/best/{config.json, model.safetensors, best.json} and
    <run>/train_config.json (no command in it): metrics from best.json, the config on the card."""
    tiny_checkpoint(tmp_path / "run" / "best", seed=7)
    (tmp_path / "run" / "best" / "best.json").write_text(json.dumps({"iter": 2000, "miou": 0.5,
                                                                       "mvc8": None}))
    (tmp_path / "run" / "train_config.json").write_text(json.dumps({"data_root": "data/camvid",
                                                                    "iters": 4000}))
    result = hub_export.export_checkpoint(tmp_path / "run" / "best", tmp_path / "pub")
    assert result.metrics_from == tmp_path / "run" / "best" / "best.json"
    assert result.train_command is None and result.train_config
    card = (tmp_path / "pub" / "README.md").read_text()
    assert "| mIoU | 50.0% |" in card and "| training iteration | 2000 |" in card
    assert "mVC8" not in card  # null metrics are left out
    assert '"data_root": "data/camvid"' in card and "exact command was not recorded" in card
    assert sorted(os.listdir(tmp_path / "pub")) == ["README.md", "config.json", "metrics.json",
                                                    "model.safetensors"]


def test_export_overwrite_replaces_only_its_files_and_refuses_its_source(tmp_path, monkeypatch, capsys):
    from tfcseg.io.atomic import UMASK

    tiny_checkpoint(tmp_path / "runs" / "a" / "last", seed=5)
    (tmp_path / "runs" / "a" / "last" / "train_state.pt").write_bytes(b"resume me")
    (tmp_path / "runs" / "b").mkdir()
    (tmp_path / "runs" / "b" / "metrics.jsonl").write_text("{}\n")
    ckpt = str(tmp_path / "runs" / "a" / "last")
    (tmp_path / "runs" / "a" / "last" / "metrics.json").write_text(json.dumps(METRICS))
    assert main(["export", ckpt, "-o", str(tmp_path / "pub")]) == 0
    assert (tmp_path / "pub").stat().st_mode & 0o777 == 0o777 & ~UMASK  # not owner-only
    assert (tmp_path / "pub" / "metrics.json").is_file()
    (tmp_path / "pub" / "notes.txt").write_text("mine")
    (tmp_path / "pub" / "sub").mkdir()
    (tmp_path / "pub" / "sub" / "x").write_text("mine too")
    (tmp_path / "runs" / "a" / "last" / "metrics.json").unlink()
    capsys.readouterr()
    result = hub_export.export_checkpoint(ckpt, tmp_path / "pub", overwrite=True)
    assert result.files == ["README.md", "config.json", "model.safetensors"]
    # the user's files survive; the metrics.json of the earlier export (it would contradict
    # the new card) goes
    assert sorted(os.listdir(tmp_path / "pub")) == ["README.md", "config.json", "model.safetensors",
                                                    "notes.txt", "sub"]
    assert (tmp_path / "pub" / "sub" / "x").read_text() == "mine too"
    # a user's metrics.json in a folder that holds no export of ours is never removed
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "metrics.json").write_text("user data")
    hub_export.export_checkpoint(ckpt, tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "metrics.json").read_text() == "user data"

    before = {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()}
    work = tmp_path / "runs" / "a" / "work"
    work.mkdir()
    for cwd, dest, says in ((tmp_path, ckpt, "is the checkpoint's own folder"),
                            (tmp_path, ckpt + "/inner", "is inside the checkpoint's folder"),
                            (tmp_path / "mine", str(tmp_path / "runs"), "holds the checkpoint"),
                            (work, str(tmp_path / "runs" / "a"), "current folder or holds it"),
                            (work, ".", "is the current folder")):
        monkeypatch.chdir(cwd)
        assert main(["export", ckpt, "-o", dest, "--overwrite"]) == 2, dest
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1, err
    (tmp_path / "afile").write_text("x")
    assert main(["export", ckpt, "-o", str(tmp_path / "afile"), "--overwrite"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()} == before
    assert sorted(os.listdir(work)) == [] and not (tmp_path / "runs" / "a" / "last" / "inner").exists()
    assert not [p for p in tmp_path.rglob(".*tmp*")]  # no temporaries left anywhere


class FakeApi:
    def __init__(self, fail: Exception | None = None):
        self.calls, self.fail = [], fail

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", repo_id, kw))
        if self.fail:
            raise self.fail

    def upload_folder(self, **kw):
        self.calls.append(("upload_folder", kw))
        return type("CommitInfo", (), {"commit_url": f"https://hf.test/{kw['repo_id']}/commit/1"})()


def test_push_to_hub_uses_hfapi(tmp_path, monkeypatch, capsys):
    tiny_checkpoint(tmp_path / "run", seed=6)
    fake = FakeApi()
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda **kw: fake)
    assert main(["export", str(tmp_path / "run"), "-o", str(tmp_path / "pub"),
                 "--push-to-hub", "me/tfc-b0-vspw", "--private"]) == 0
    assert fake.calls[0] == ("create_repo", "me/tfc-b0-vspw",
                             {"repo_type": "model", "private": True, "exist_ok": True})
    upload = fake.calls[1][1]
    assert upload["repo_id"] == "me/tfc-b0-vspw" and Path(upload["folder_path"]) == tmp_path / "pub"
    assert upload["allow_patterns"] == ["config.json", "model.safetensors", "README.md", "metrics.json"]
    assert "https://hf.test/me/tfc-b0-vspw/commit/1" in capsys.readouterr().out
    assert 'tfcseg.load_model("me/tfc-b0-vspw")' in (tmp_path / "pub" / "README.md").read_text()

    from huggingface_hub.errors import LocalTokenNotFoundError

    with pytest.raises(TfcsegError, match="me/x: not allowed.*hf auth login"):
        hub_export.push_to_hub(tmp_path / "pub", "me/x", api=FakeApi(LocalTokenNotFoundError("no token")))
    with pytest.raises(TfcsegError, match="no README.md"):
        hub_export.push_to_hub(tmp_path / "run", "me/x", api=FakeApi())
    with pytest.raises(TfcsegError, match="not a Hub repo id"):
        hub_export.push_to_hub(tmp_path / "pub", "not-a-repo", api=FakeApi())


def test_rich_progress_bar_rows():
    bar_cls = hub_download.rich_tqdm_class()
    a = bar_cls(total=100, desc="Downloading", unit="B", disable=False)
    b = bar_cls(total=3, desc="Fetching 3 files", disable=False)
    a.update(40)
    a.refresh()
    live = bar_cls._live
    tasks = {t.description: t for t in live.tasks}
    assert tasks["Downloading"].completed == 40 and tasks["Downloading"].total == 100
    a.total = 200  # huggingface_hub grows totals as files are announced
    a.refresh()
    assert tasks["Downloading"].total == 200
    a.close()
    assert bar_cls._live is live  # one row still open
    b.update(3)
    b.close()
    assert bar_cls._live is None
    # bars huggingface_hub leaves open end with the download (finish), and stay quiet after
    c = bar_cls(total=2, desc="left open", disable=False)
    assert bar_cls._live is not None
    bar_cls.finish()
    assert bar_cls._live is None
    d = bar_cls(total=1, desc="next download", disable=False)
    c.update(2)
    c.close()  # a row of the finished display: must not end the new one
    assert bar_cls._live is not None and [t.description for t in bar_cls._live.tasks] == ["next download"]
    d.close()
    assert bar_cls._live is None
    quiet = bar_cls(total=5)  # stderr is not a terminal under pytest: tqdm's rule, no bar
    assert quiet.disable
    quiet.close()


# ---- a stand-in Hub on 127.0.0.1 ------------------------------------------------------------


class FakeHub:
    """The few Hub endpoints `snapshot_download` uses, serving repos from memory:
    repo info by revision, the file tree of a commit, and file HEAD/GET by commit."""

    def __init__(self, repos: dict[str, dict[str, Any]]):
        # repos: repo_id -> {"refs": {name: commit}, "files": {commit: {name: bytes}}}
        import http.server
        import threading

        self.repos, self.requests = repos, []
        hub_ = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _send(self, status, body=b"", headers=None, head=False):
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def _route(self, head):
                from urllib.parse import urlparse

                path = urlparse(self.path).path
                hub_.requests.append((self.command, path))
                m = re.match(r"^/api/models/([^/]+/[^/]+)/(revision|tree)/(.+)$", path)
                if m:
                    repo = hub_.repos.get(m[1])
                    if repo is None:
                        return self._send(404, b'{"error": "Repository not found"}',
                                          {"X-Error-Code": "RepoNotFound"})
                    commit = repo["refs"].get(m[3], m[3] if m[3] in repo["files"] else None)
                    if commit is None:
                        return self._send(404, b'{"error": "Invalid rev id"}',
                                          {"X-Error-Code": "RevisionNotFound"})
                    files = repo["files"][commit]
                    if m[2] == "revision":
                        body = {"id": m[1], "sha": commit,
                                "siblings": [{"rfilename": n} for n in files]}
                    else:
                        body = [{"type": "file", "path": n, "size": len(d),
                                 "oid": hashlib.sha1(d).hexdigest()} for n, d in files.items()]
                    return self._send(200, json.dumps(body).encode(),
                                      {"Content-Type": "application/json"})
                m = re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
                if m and m[1] in hub_.repos and m[3] in hub_.repos[m[1]]["files"].get(m[2], {}):
                    data = hub_.repos[m[1]]["files"][m[2]][m[3]]
                    return self._send(200, data, {"X-Repo-Commit": m[2],
                                                  "ETag": f'"{hashlib.sha256(data).hexdigest()}"'},
                                      head=head)
                return self._send(404, b"{}", {"X-Error-Code": "EntryNotFound"})

            def do_GET(self):
                self._route(head=False)

            def do_HEAD(self):
                self._route(head=True)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_download_from_a_local_hub_then_offline(hf_cache, tmp_path, monkeypatch):
    """The online path end to end in a fresh process (HF_ENDPOINT = a local server): the
    download, the conversion, the Hub's not-found answers; then the same cache offline."""
    hf = tiny_hf_folder(tmp_path / "hf", num_labels=3)
    files = {n: p.read_bytes() for n, p in files_of(tmp_path / "hf").items()}
    torch.save(load_file(str(tmp_path / "hf" / "model.safetensors")), tmp_path / "pytorch_model.bin")
    bin_only = {"config.json": files["config.json"],
                "pytorch_model.bin": (tmp_path / "pytorch_model.bin").read_bytes()}
    fake = FakeHub({
        "acme/segformer-tiny": {"refs": {"main": COMMIT_B}, "files": {COMMIT_B: {
            **files, "pytorch_model.bin": b"never fetched", "tf_model.h5": b"never fetched"}}},
        "acme/bin-only": {"refs": {"main": COMMIT_A}, "files": {COMMIT_A: bin_only}},
    })
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TFCSEG_"))}
    env.update(HF_ENDPOINT=fake.url, HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1",
               TFCSEG_CACHE=str(tmp_path / "tfcseg-cache"), PYTHONPATH=str(Path(__file__).parent.parent))
    code = (
        "import json, tfcseg\n"
        "out = {'classes': tfcseg.load_model('acme/segformer-tiny').config.num_classes,\n"
        "       'bin': tfcseg.load_model('acme/bin-only').config.num_classes}\n"
        "for src in ('acme/missing', 'acme/segformer-tiny@nope'):\n"
        "    try:\n"
        "        tfcseg.load_model(src)\n"
        "    except tfcseg.TfcsegError as exc:\n"
        "        out[src] = str(exc)\n"
        "print(json.dumps(out))\n"
    )
    try:
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=120)
    finally:
        fake.close()
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["classes"] == out["bin"] == 3
    assert out["acme/missing"].startswith("acme/missing: no Hub model repo acme/missing")
    assert "revision 'nope' does not exist in the Hub repo acme/segformer-tiny" in out["acme/segformer-tiny@nope"]
    fetched = {p.split("/resolve/")[0] + ":" + p.rsplit("/", 1)[-1] for m, p in fake.requests
               if "/resolve/" in p and m == "GET"}
    # only what a checkpoint needs; safetensors preferred, the .bin when it is all there is
    assert fetched == {"/acme/segformer-tiny:config.json", "/acme/segformer-tiny:model.safetensors",
                       "/acme/bin-only:config.json", "/acme/bin-only:pytorch_model.bin"}

    # The same caches, now offline in this process: no download, no second conversion.
    snap = hf_cache / "models--acme--segformer-tiny" / "snapshots" / COMMIT_B
    assert (snap / "model.safetensors").is_file()
    monkeypatch.setattr(tfcseg.models.checkpoint, "convert_checkpoint", lambda *a: pytest.fail("converted again"))
    model = load_model("acme/segformer-tiny")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model.image_logits(x), hf(pixel_values=x).logits, atol=1e-5)
