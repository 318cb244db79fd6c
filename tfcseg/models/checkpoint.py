"""Checkpoints in and out: tfcseg folders, Hugging Face `transformers` folders, NVlabs/mmseg `.pth`.

A tfcseg checkpoint is a folder with `config.json` (a `ModelConfig`) and `model.safetensors`.
Loading is strict and never unpickles: `.bin`/`.pth` files are read with
`torch.load(weights_only=True)`. Foreign layouts are converted by key-renaming filters
(`convert_hf_state_dict`, `convert_mmseg_state_dict`), the way timm filters checkpoints.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import CheckpointError
from ..io.atomic import atomic_path, write_error
from .config import CONFIG_NAME, VARIANTS, WEIGHTS_NAME, ModelConfig
from .segformer import TFCSegFormer


# ---- raw tensor files ----------------------------------------------------------------


def read_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a `.safetensors`, `.bin` or `.pth` file; never executes pickled code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: not a valid safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe pickle"
        raise CheckpointError(
            f"{path}: refused to load: the pickle holds more than tensors ({first})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({exc})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]  # mmseg / NVlabs: {"meta": ..., "state_dict": ...}
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors")
    return obj


# ---- key-renaming filters --------------------------------------------------------------

_HF_RULES = [
    (r"^segformer\.encoder\.patch_embeddings\.(\d+)\.proj\.", r"encoder.stages.\1.patch_embed.proj."),
    (r"^segformer\.encoder\.patch_embeddings\.(\d+)\.layer_norm\.", r"encoder.stages.\1.patch_embed.norm."),
    (r"^segformer\.encoder\.block\.(\d+)\.(\d+)\.", r"encoder.stages.\1.blocks.\2."),
    (r"^segformer\.encoder\.layer_norm\.(\d+)\.", r"encoder.stages.\1.norm."),
    (r"\.layer_norm_1\.", ".norm1."),
    (r"\.layer_norm_2\.", ".norm2."),
    (r"\.attention\.self\.query\.", ".attn.q."),
    (r"\.attention\.self\.key\.", ".attn.k."),
    (r"\.attention\.self\.value\.", ".attn.v."),
    (r"\.attention\.self\.sr\.", ".attn.sr."),
    (r"\.attention\.self\.layer_norm\.", ".attn.sr_norm."),
    (r"\.attention\.output\.dense\.", ".attn.proj."),
    (r"\.mlp\.dense1\.", ".mlp.fc1."),
    (r"\.mlp\.dwconv\.dwconv\.", ".mlp.dwconv."),
    (r"\.mlp\.dense2\.", ".mlp.fc2."),
    (r"^decode_head\.linear_c\.(\d+)\.proj\.", r"decoder.linear_c.\1."),
    (r"^decode_head\.(linear_fuse|batch_norm|classifier)\.", r"decoder.\1."),
]

_MMSEG_RULES = [
    (r"^patch_embed(\d)\.(proj|norm)\.", lambda m: f"encoder.stages.{int(m[1]) - 1}.patch_embed.{m[2]}."),
    (r"^block(\d)\.(\d+)\.", lambda m: f"encoder.stages.{int(m[1]) - 1}.blocks.{m[2]}."),
    (r"^norm(\d)\.", lambda m: f"encoder.stages.{int(m[1]) - 1}.norm."),
    (r"\.attn\.norm\.", ".attn.sr_norm."),
    (r"\.mlp\.dwconv\.dwconv\.", ".mlp.dwconv."),
    (r"^decode_head\.linear_c(\d)\.proj\.", lambda m: f"decoder.linear_c.{int(m[1]) - 1}."),
    (r"^decode_head\.linear_fuse\.conv\.", "decoder.linear_fuse."),
    (r"^decode_head\.linear_fuse\.bn\.", "decoder.batch_norm."),
    (r"^decode_head\.linear_pred\.", "decoder.classifier."),
]
# Keys of foreign checkpoints that tfcseg has no use for (classification heads, mmseg's
# unused `conv_seg`, auxiliary heads).
_DROP = re.compile(r"^(classifier\.|head\.|decode_head\.conv_seg\.|auxiliary_head\.)")


# TFC's own parameters: absent from foreign SegFormer checkpoints (they keep their fresh
# initialisation there). tfcseg 0.1 files stored them as `msda.*`; `upgrade_state_dict` maps
# those to today's names.
TFC_PREFIX = "temporal."
_LEGACY_TFCSEG_RULES = [(r"^msda\.", "temporal.msda.")]


def upgrade_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A tfcseg state dict from an older release, in today's key names (a no-op on new ones)."""
    return {_rename(k, _LEGACY_TFCSEG_RULES): v for k, v in sd.items()}


def _rename(key: str, rules) -> str:
    for pattern, repl in rules:
        key = re.sub(pattern, repl, key)
    return key


def convert_hf_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face SegFormer keys (as stored on the Hub) -> tfcseg keys."""
    return {_rename(k, _HF_RULES): v for k, v in sd.items() if not _DROP.match(k)}


def convert_mmseg_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """NVlabs/mmseg SegFormer keys (fused `attn.kv`) -> tfcseg keys (separate k and v)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        key = key.removeprefix("module.").removeprefix("backbone.")
        if _DROP.match(key):
            continue
        key = _rename(key, _MMSEG_RULES)
        if ".attn.kv." in key:  # kv: [2C, C] rows = [key; value]
            k, v = value.chunk(2, dim=0)
            out[key.replace(".attn.kv.", ".attn.k.")] = k.clone()
            out[key.replace(".attn.kv.", ".attn.v.")] = v.clone()
        else:
            out[key] = value
    return out


_TO_HF_BLOCK = {
    "norm1": "layer_norm_1", "norm2": "layer_norm_2", "attn.q": "attention.self.query",
    "attn.k": "attention.self.key", "attn.v": "attention.self.value", "attn.sr": "attention.self.sr",
    "attn.sr_norm": "attention.self.layer_norm", "attn.proj": "attention.output.dense",
    "mlp.fc1": "mlp.dense1", "mlp.dwconv": "mlp.dwconv.dwconv", "mlp.fc2": "mlp.dense2",
}


def export_hf_state_dict(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """tfcseg keys -> Hugging Face SegFormer keys (the inverse of `convert_hf_state_dict`).

    TFC's own modules (`msda.*`) have no place in a `transformers` model and are dropped.
    """
    out = {}
    for key, value in sd.items():
        if m := re.match(r"encoder\.stages\.(\d+)\.blocks\.(\d+)\.(.+)\.(weight|bias)$", key):
            new = f"segformer.encoder.block.{m[1]}.{m[2]}.{_TO_HF_BLOCK[m[3]]}.{m[4]}"
        elif m := re.match(r"encoder\.stages\.(\d+)\.patch_embed\.(proj|norm)\.(.+)$", key):
            new = f"segformer.encoder.patch_embeddings.{m[1]}.{'proj' if m[2] == 'proj' else 'layer_norm'}.{m[3]}"
        elif m := re.match(r"encoder\.stages\.(\d+)\.norm\.(.+)$", key):
            new = f"segformer.encoder.layer_norm.{m[1]}.{m[2]}"
        elif m := re.match(r"decoder\.linear_c\.(\d+)\.(.+)$", key):
            new = f"decode_head.linear_c.{m[1]}.proj.{m[2]}"
        elif key.startswith("decoder."):
            new = "decode_head." + key.removeprefix("decoder.")
        else:
            continue
        out[new] = value
    return out


# ---- configs of foreign checkpoints -----------------------------------------------------


def _guess_variant(hidden_sizes: list[int], depths: list[int]) -> str:
    for name, spec in VARIANTS.items():
        if spec["hidden_sizes"] == hidden_sizes and spec["depths"] == depths:
            return name
    return "custom"


def config_from_hf(hf: dict[str, Any], source: str | Path) -> ModelConfig:
    """A ModelConfig from a `transformers` SegformerConfig dict (config.json)."""
    try:
        num_classes = int(hf.get("num_labels") or len(hf["id2label"]))
        id2label = hf.get("id2label") or {}
        names = [str(id2label.get(str(i), id2label.get(i, f"class_{i}"))) for i in range(num_classes)]
        return ModelConfig(
            variant=_guess_variant(list(hf["hidden_sizes"]), list(hf["depths"])),
            num_classes=num_classes, class_names=names,
            hidden_sizes=list(hf["hidden_sizes"]), depths=list(hf["depths"]),
            num_heads=list(hf.get("num_attention_heads", [1, 2, 5, 8])),
            sr_ratios=list(hf.get("sr_ratios", [8, 4, 2, 1])),
            patch_sizes=list(hf.get("patch_sizes", [7, 3, 3, 3])),
            strides=list(hf.get("strides", [4, 2, 2, 2])),
            mlp_ratio=int(hf.get("mlp_ratios", [4])[0]),
            decoder_dim=int(hf.get("decoder_hidden_size", 256)),
            layer_norm_eps=1e-5,  # what transformers computes with (nn.LayerNorm default)
            drop_path_rate=float(hf.get("drop_path_rate", 0.1)),
            classifier_dropout=float(hf.get("classifier_dropout_prob", 0.1)),
            tfc_trained=False,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: not a usable SegFormer config ({exc})") from None


def config_from_state_dict(sd: dict[str, torch.Tensor], source: str | Path) -> ModelConfig:
    """Infer the architecture of a tfcseg-keyed state dict (for configless .pth files)."""
    try:
        hidden = [sd[f"encoder.stages.{i}.patch_embed.proj.weight"].shape[0] for i in range(4)]
        depths = [1 + max(int(m[1]) for k in sd if (m := re.match(rf"encoder\.stages\.{i}\.blocks\.(\d+)\.", k)))
                  for i in range(4)]
        decoder_dim = sd["decoder.linear_c.0.weight"].shape[0]
        num_classes = sd["decoder.classifier.weight"].shape[0]
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{source}: cannot infer the SegFormer architecture ({exc})") from None
    srs = []
    for i in range(4):
        w = sd.get(f"encoder.stages.{i}.blocks.0.attn.sr.weight")
        srs.append(int(w.shape[-1]) if w is not None else 1)
    return ModelConfig(
        variant=_guess_variant(hidden, depths), num_classes=num_classes, hidden_sizes=hidden,
        depths=depths, sr_ratios=srs, decoder_dim=decoder_dim,
    )


# ---- strict state-dict loading ---------------------------------------------------------


def _names(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_dict_strict(model: TFCSegFormer, sd: dict[str, torch.Tensor], source: str | Path,
                           allow_missing_prefixes: tuple[str, ...] = ()) -> None:
    """Load `sd` into `model`, raising a CheckpointError that names any bad keys.

    `allow_missing_prefixes`: parameter groups a foreign checkpoint cannot have (TFC's own
    modules in an official SegFormer checkpoint); they keep their fresh initialisation.
    """
    own = model.state_dict()
    cls = sd.get("decoder.classifier.weight")
    if cls is not None and cls.shape[0] != model.config.num_classes:
        raise CheckpointError(
            f"{source}: the checkpoint has {cls.shape[0]} classes but its config says "
            f"{model.config.num_classes} (decoder.classifier.weight)"
        )
    missing = sorted(k for k in own if k not in sd and not k.startswith(allow_missing_prefixes))
    unexpected = sorted(k for k in sd if k not in own)
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_names(unexpected)}")
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
              for k in sorted(own) if k in sd and sd[k].shape != own[k].shape]
    if shapes:
        problems.append(f"shape mismatch (checkpoint vs model): {_names(shapes, 4)}")
    if problems:
        raise CheckpointError(f"{source}: " + "; ".join(problems))
    # NaN weights would label every pixel as class 0 without a word
    broken = sorted(k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all()))
    if broken:
        raise CheckpointError(f"{source}: non-finite weights (NaN or Inf) in {len(broken)} tensor(s): "
                              f"{_names(broken)}; the checkpoint is broken (saved from a diverged run?)")
    model.load_state_dict(sd, strict=False)


# ---- folders -------------------------------------------------------------------------


def save_checkpoint(model: TFCSegFormer, folder: str | Path, durable: bool = False) -> Path:
    """Write `config.json` + `model.safetensors` into `folder`.

    Both files are written completely under temporary names first and then renamed into
    place one right after the other, so a failure while writing leaves any previous
    checkpoint in `folder` untouched (and never a half-written file); a full disk or another
    OS error is a one-line `WriteError`. `durable`: flush both to the disk before renaming."""
    folder = Path(folder)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(folder / WEIGHTS_NAME, durable=durable) as weights_tmp, \
            atomic_path(folder / CONFIG_NAME, durable=durable) as config_tmp:
        try:
            save_file(tensors, str(weights_tmp), metadata={"format": "pt", "producer": "tfcseg"})
        except SafetensorError as exc:
            raise write_error(folder / WEIGHTS_NAME, _os_error(exc)) from None
        config_tmp.write_text(model.config.dumps())
    return folder


def _os_error(exc: Exception) -> OSError:
    """The OSError inside a safetensors error ("... I/O error: No space left on device (os
    error 28)"); the error itself when it holds none."""
    m = re.search(r"os error (\d+)", str(exc))
    if m is None:
        raise exc
    code = int(m[1])
    return OSError(code, os.strerror(code))


def _is_hf_config(data: dict[str, Any]) -> bool:
    return data.get("model_type") == "segformer" or "decoder_hidden_size" in data


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def _hf_weights(folder: Path) -> Path:
    for name in (WEIGHTS_NAME, "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise CheckpointError(f"{folder}: no model.safetensors or pytorch_model.bin in the folder")


def read_checkpoint(source: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor], bool]:
    """(config, tfcseg-keyed state dict, is_foreign) from a local folder or file.

    Understands tfcseg folders, `transformers` SegFormer folders, a `model.safetensors`
    with its `config.json` beside it, and NVlabs/mmseg `.pth` files.
    """
    path = Path(source).expanduser()
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    if path.is_file() and path.name == CONFIG_NAME:
        path = path.parent
    if path.is_dir():
        cfg_path = path / CONFIG_NAME
        if not cfg_path.is_file():
            raise CheckpointError(f"{path}: no config.json in the folder (not a checkpoint folder)")
        data = _read_json(cfg_path)
        if _is_hf_config(data):
            sd = convert_hf_state_dict(read_tensors(_hf_weights(path)))
            return config_from_hf(data, cfg_path), sd, True
        return ModelConfig.from_dict(data, source=cfg_path), upgrade_state_dict(read_tensors(path / WEIGHTS_NAME)), False
    if path.suffix == ".safetensors" and (path.parent / CONFIG_NAME).is_file():
        data = _read_json(path.parent / CONFIG_NAME)
        if _is_hf_config(data):
            return config_from_hf(data, path.parent / CONFIG_NAME), convert_hf_state_dict(read_tensors(path)), True
        return ModelConfig.from_dict(data, source=path.parent / CONFIG_NAME), upgrade_state_dict(read_tensors(path)), False
    if path.suffix in (".pth", ".pt", ".bin", ".safetensors"):
        raw = read_tensors(path)
        if any(k.startswith("segformer.") for k in raw):
            raise CheckpointError(f"{path}: a transformers checkpoint needs its config.json beside it")
        sd = convert_mmseg_state_dict(raw)
        return config_from_state_dict(sd, path), sd, True
    raise CheckpointError(f"{path}: unknown checkpoint format (expected a folder, .safetensors, .pth or .bin)")


def build_from_checkpoint(source: str | Path, device: str | torch.device = "cpu") -> TFCSegFormer:
    """Build and strictly load a model from a local checkpoint; eval mode."""
    config, sd, foreign = read_checkpoint(source)
    model = TFCSegFormer(config)
    # Foreign SegFormer checkpoints carry no TFC modules: those stay freshly initialised
    # (and unused: config.tfc_trained is False, so MSDA is off at inference).
    load_state_dict_strict(model, sd, source, allow_missing_prefixes=(TFC_PREFIX,) if foreign else ())
    return model.to(device).eval()


def convert_checkpoint(source: str | Path, dest: str | Path) -> ModelConfig:
    """Convert any supported checkpoint into a tfcseg folder at `dest` (not the source's own
    folder, nor one inside or around it: see `check_destination`)."""
    from ..io.folders import check_destination

    check_destination(dest, source)
    model = build_from_checkpoint(source)
    save_checkpoint(model, dest)
    return model.config
