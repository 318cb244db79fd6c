"""ONNX export of a `TFCSegFormer`: a folder that ONNX Runtime (and PyTorch) can run.

    keyframe.onnx      pixels -> logits, base, unit[, value3[, value4]]        (the state)
    non_keyframe.onnx  pixels, key_logits, key_base, key_unit, msda_threshold, msda,
                       interpolation, fixed_weight, msda_gate, interpolation_power[, key_value3[, key_value4]]
                       -> logits, similarity, msda_share, unit (the frame's own unit features,
                          for motion-aware label hysteresis; exports before it lack this output)
    config.json        the model's config, with an "onnx" entry describing the graphs
    model.safetensors  the weights, so that the PyTorch backend loads the same folder

Each keyframe output X is fed to the non-keyframe graph as input `key_X`. Both graphs take
any height and width (batch 1; the layouts are in `models/portable.py`), are traced from the
plain-op modules there with `torch.onnx.export` (TorchScript exporter, opset 17) and are
checked with `onnx.checker`. Sparse MSDA is in the non-keyframe graph when the model's MSDA
is trained and on (NonZero, Gather, GridSample, ScatterND: standard ONNX ops only).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
import warnings
from pathlib import Path

import torch

from .. import __version__
from ..errors import TfcsegError, WriteError
from ..io.atomic import make_temp, sweep_stale, write_error
from ..io.folders import check_export_folder, move_into
from ..models.checkpoint import save_checkpoint
from ..models.config import CONFIG_NAME, WEIGHTS_NAME, smallest_input
from ..models.portable import (INTERPOLATION_CODES, OPTION_NAMES, PortableKeyframe,
                               PortableNonKeyframe)
from ..models.segformer import TFCSegFormer

log = logging.getLogger("tfcseg")

OPSET = 17  # LayerNormalization (17), GridSample (16)
KEYFRAME_FILE = "keyframe.onnx"
NON_KEYFRAME_FILE = "non_keyframe.onnx"
ONNX_FORMAT = 1  # the version of the "onnx" entry's layout
KEY_PREFIX = "key_"  # keyframe output X is non-keyframe input key_X
EXTRA_HINT = 'pip install "tfcseg[onnx]"'


def require_onnx():
    """The `onnx` module, or a one-line error naming the extra that installs it."""
    try:
        import onnx
    except ImportError:
        raise TfcsegError(f"ONNX export needs the onnx package: {EXTRA_HINT}") from None
    return onnx


def graph_msda(model: TFCSegFormer, msda: bool | None = None) -> bool:
    """Whether sparse MSDA goes into the non-keyframe graph: asked for (default: the
    config's `tfc.msda`) and the module trained (as at inference in PyTorch)."""
    cfg = model.config
    return bool(cfg.tfc_trained and (cfg.tfc.msda if msda is None else msda))


def _example_pixels(model: TFCSegFormer) -> tuple[torch.Tensor, torch.Tensor]:
    """Two tracing inputs: a keyframe and a moved frame of an odd, non-square size."""
    side = max(smallest_input(model.config), 45)
    g = torch.Generator().manual_seed(0)
    key = torch.randn(1, 3, side, side + 25, generator=g)
    return key, torch.roll(key, shifts=(2, 3), dims=(2, 3))


def _dynamic_axes(state: tuple[str, ...]) -> dict[str, dict[int, str]]:
    """Every height and width axis of both graphs, named (h4 = the 1/4 map's height ...)."""
    quarter = {1: "h4", 2: "w4"}
    axes: dict[str, dict[int, str]] = {"pixels": {2: "height", 3: "width"}, "similarity": quarter}
    for name in state:
        if name.startswith("value"):  # value3: the 1/16 map, value4: the 1/32 map
            scale = 2 ** (int(name[-1]) + 1)
            axis = {2: f"h{scale}", 3: f"w{scale}"}
        else:
            axis = quarter
        axes[name] = axes[KEY_PREFIX + name] = axis
    return axes


def export_onnx(model: TFCSegFormer, out: str | Path, *, msda: bool | None = None,
                overwrite: bool = False) -> Path:
    """Write the ONNX folder of `model` (see the module docstring) to `out`; returns it.

    `msda`: put sparse MSDA into the non-keyframe graph (default: the config's `tfc.msda`;
    only a trained MSDA module is exported). The folder appears complete or not at all."""
    onnx = require_onnx()
    out = Path(out).expanduser()
    check_export_folder(out, overwrite)
    with_msda = graph_msda(model, msda)
    net = model
    if model.training or model.device.type != "cpu" or next(model.parameters()).dtype != torch.float32:
        net = copy.deepcopy(model).to("cpu", torch.float32).eval()  # the caller's model is left as it is
    config = net.config
    if config.tfc_trained and config.tfc.msda != with_msda:
        config = config.replace(tfc={"msda": with_msda})  # what the graphs do is what the config says
    keyframe, non_keyframe = PortableKeyframe(net, with_msda).eval(), PortableNonKeyframe(net, with_msda).eval()
    state = keyframe.state_names
    key_pixels, pixels = _example_pixels(net)
    axes = _dynamic_axes(state)

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(out.parent, out.name)  # what a killed earlier export left
        tmp = make_temp(out, suffix="", folder=True)
    except OSError as exc:
        raise write_error(out, exc, "cannot write here") from None
    try:
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the exporter's notes on traced shapes and deprecation
            key_out = keyframe(key_pixels)
            options = (torch.tensor(1.5), torch.tensor(1), torch.tensor(1), torch.tensor(0.1),  # every point selected,
                       torch.tensor(0.5), torch.tensor(2.0))  # msda_gate, interpolation_power
            torch.onnx.export(keyframe, (key_pixels,), str(tmp / KEYFRAME_FILE), dynamo=False,
                              opset_version=OPSET, input_names=["pixels"], output_names=list(state),
                              dynamic_axes={k: v for k, v in axes.items() if k in ("pixels", *state)})
            inputs = ["pixels", *(KEY_PREFIX + n for n in state[:3]), *OPTION_NAMES,
                      *(KEY_PREFIX + n for n in state[3:])]
            outputs = ["logits", "similarity", "msda_share", "unit"]
            torch.onnx.export(non_keyframe, (pixels, *key_out[:3], *options, *key_out[3:]),
                              str(tmp / NON_KEYFRAME_FILE), dynamo=False, opset_version=OPSET,
                              input_names=inputs, output_names=outputs,
                              dynamic_axes={k: v for k, v in axes.items() if k in (*inputs, *outputs)})
        for name in (KEYFRAME_FILE, NON_KEYFRAME_FILE):
            onnx.checker.check_model(str(tmp / name), full_check=True)
        save_checkpoint(net, tmp)
        data = json.loads((tmp / CONFIG_NAME).read_text())
        data.update(config.to_dict())
        data["onnx"] = {
            "format": ONNX_FORMAT, "opset": OPSET, "batch": 1,
            "keyframe": KEYFRAME_FILE, "non_keyframe": NON_KEYFRAME_FILE,
            "state": list(state), "key_prefix": KEY_PREFIX, "options": list(OPTION_NAMES),
            "interpolation_codes": dict(INTERPOLATION_CODES),
            "similarity_level": config.tfc.similarity_level,
            "msda": with_msda, "msda_levels": keyframe.msda_levels,
            "torch_version": torch.__version__, "onnx_version": onnx.__version__,
        }
        (tmp / CONFIG_NAME).write_text(json.dumps(data, indent=2) + "\n")
        move_into(tmp, out)  # an existing folder keeps every file but ours
    except OSError as exc:
        raise write_error(out, exc, "could not export") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def export_key(model: TFCSegFormer, msda: bool) -> str:
    """A name for the export of `model` (weights, config, MSDA in the graph, versions): the
    ONNX Runtime backend's cache entry for an in-memory model or a PyTorch checkpoint."""
    h = hashlib.sha256()
    h.update(json.dumps([__version__, torch.__version__, OPSET, graph_msda(model, msda),
                         model.config.to_dict()], sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        t = tensor.detach().to("cpu", torch.float32).contiguous()
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:24]


def cached_export(model: TFCSegFormer, msda: bool | None = None) -> Path:
    """The ONNX folder of `model` in tfcseg's cache (`$TFCSEG_CACHE/onnx/<key>`), exported
    on first use."""
    from ..runtime import cache_root

    folder = cache_root() / "onnx" / export_key(model, msda)
    if (folder / CONFIG_NAME).is_file() and (folder / NON_KEYFRAME_FILE).is_file() \
            and (folder / WEIGHTS_NAME).is_file():
        return folder
    log.info("exporting the model to ONNX for ONNX Runtime, once (cached in %s)", folder)
    try:
        export_onnx(model, folder, msda=msda, overwrite=True)
    except WriteError:
        if not (folder / NON_KEYFRAME_FILE).is_file():  # not another process's export landing first
            raise
    return folder


def export_onnx_checkpoint(source: str | Path | None, out: str | Path, *, overwrite: bool = False) -> Path:
    """`export_onnx` of any model source (`tfcseg.load_model`: a checkpoint, registry name,
    Hub id or None for the shipped default)."""
    from ..hub.resolve import load_model

    require_onnx()
    return export_onnx(load_model(source), out, overwrite=overwrite)
