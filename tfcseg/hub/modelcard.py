"""Model cards: the README.md that `tfcseg export` writes beside a published checkpoint.

The card starts with the Hub's YAML metadata block, then says what the checkpoint is
(variant, classes, whether TFC's modules are trained), what it was trained on and with
which command, what it scores (from an evaluation JSON as `tfcseg eval --json` writes it),
and how to load it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..models.config import VARIANTS, ModelConfig

# Keys of `tfcseg eval --json` (fractions in 0..1) and how a card shows them.
_PERCENT_KEYS = {"miou": "mIoU", "wiou": "wIoU", "mvc8": "mVC8", "mvc16": "mVC16",
                 "pixel_accuracy": "pixel accuracy", "acc": "accuracy"}
_PLAIN_KEYS = {"fps": "frames/s", "frames_per_second": "frames/s", "frames": "frames",
               "videos": "videos", "keyframe_interval": "keyframe interval",
               "iter": "training iteration", "skipped_frames": "skipped frames"}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _fmt(key: str, value: float) -> tuple[str, str]:
    low = key.lower()
    if low in _PERCENT_KEYS:
        shown = value * 100 if abs(value) <= 1 else value  # fractions, or already percent
        return _PERCENT_KEYS[low], f"{shown:.1f}%"
    label = _PLAIN_KEYS.get(low, key)
    if isinstance(value, int) or float(value).is_integer():
        return label, f"{int(value)}"
    return label, f"{value:.4g}"


def _table(rows: list[tuple[str, str]], head: tuple[str, str], numbers: bool = True) -> list[str]:
    out = [f"| {head[0]} | {head[1]} |", "|---|---:|" if numbers else "|---|---|"]
    out += [f"| {_cell(a)} | {_cell(b)} |" for a, b in rows]
    return out


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def metrics_markdown(metrics: dict[str, Any]) -> list[str]:
    """Markdown lines for an evaluation JSON: the scalar metrics, each nested group of
    scalars as its own table (e.g. one per mode), per-class IoU folded away."""
    lines: list[str] = []
    scalars = [_fmt(k, v) for k, v in metrics.items() if _is_number(v)]
    if scalars:
        lines += _table(scalars, ("metric", "value")) + [""]
    for key, value in metrics.items():
        if key == "per_class_iou" or not isinstance(value, dict):
            continue
        group = [_fmt(k, v) for k, v in value.items() if _is_number(v)]
        if group:
            lines += [f"**{_cell(key)}**", ""] + _table(group, ("metric", "value")) + [""]
    per_class = metrics.get("per_class_iou")
    if isinstance(per_class, dict) and per_class:
        rows = [(name, f"{v * 100:.1f}%" if _is_number(v) else "n/a") for name, v in per_class.items()]
        lines += ["<details><summary>Per-class IoU</summary>", ""] + _table(rows, ("class", "IoU"))
        lines += ["", "</details>", ""]
    return lines


def _variant_line(config: ModelConfig) -> str:
    arch = (f"MiT hidden sizes {'-'.join(map(str, config.hidden_sizes))}, depths "
            f"{'-'.join(map(str, config.depths))}, decoder {config.decoder_dim}")
    name = f"SegFormer-{config.variant.upper()}" if config.variant in VARIANTS else "custom MiT"
    return f"{name} ({arch})"


def _hysteresis_line(config) -> str:
    if not config.label_hysteresis:
        return "off"
    text = f"{config.label_hysteresis:g} (a new label needs that lead in logits"
    if config.label_hysteresis_power:
        text += f", times the similarity to the previous frame ^ {config.label_hysteresis_power:g}"
    return text + ")"


def _tfc_settings(config: ModelConfig) -> str:
    """The shipped `tfc` options a user would otherwise read from config.json."""
    t = config.tfc
    weight = {"soft": "clamp(w, 0, 1)" + (f"^{t.interpolation_power:g}" if t.interpolation_power != 1 else ""),
              "hard": f"1[w >= {t.msda_threshold:g}]", "fixed": f"{t.fixed_weight:g}", "none": "none"}
    text = f"similarity at level {t.similarity_level}; interpolation weight {weight[t.interpolation]}"
    if config.tfc_trained and t.msda:
        text += f"; sparse MSDA below {t.msda_threshold:g}" + (f", gate {t.msda_gate:g}" if t.msda_gate else "")
    return text


def _title(config: ModelConfig, dataset: str | None) -> str:
    name = f"SegFormer-{config.variant.upper()}" if config.variant in VARIANTS else "custom MiT"
    return f"tfcseg: TFC on {name}" + (f", {dataset}" if dataset else "")


def render_model_card(config: ModelConfig, *, num_parameters: int, load_as: str,
                      dataset: str | None = None, train_command: str | None = None,
                      train_config: dict[str, Any] | None = None, metrics: dict[str, Any] | None = None, licence: str = "apache-2.0",
                      title: str | None = None) -> str:
    """The README.md text for a tfcseg checkpoint. `load_as` is what users pass to
    `tfcseg.load_model` / `--model` (the Hub repo id, or the folder)."""
    dataset = dataset or config.dataset
    front = ["---", "library_name: tfcseg", f"license: {licence}",
             "pipeline_tag: image-segmentation",
             "tags:", "- tfcseg", "- semantic-segmentation", "- video-semantic-segmentation",
             "- segformer"]
    if dataset:
        front += ["datasets:", f"- {json.dumps(dataset)}"]
    front += ["---", ""]
    tfc = ("trained (non-keyframes: similarity, interpolation and sparse MSDA)" if config.tfc_trained
           else "not trained: non-keyframes use similarity + interpolation only (MSDA off)")
    lines = front + [
        f"# {title or _title(config, dataset)}",
        "",
        "Efficient and stable video semantic segmentation: TFC (\"Exploring Temporal Feature "
        "Correlation for Efficient and Stable Video Semantic Segmentation\", AAAI 2024) on "
        "SegFormer, as implemented by tfcseg. Keyframes run the full SegFormer; the frames "
        "between them run only the first two encoder stages and reuse the keyframe's features "
        "where they still match.",
        "",
        "## Model",
        "",
        *_table([
            ("architecture", _variant_line(config)),
            ("parameters", f"{num_parameters / 1e6:.2f} M"),
            ("classes", str(config.num_classes)),
            ("TFC modules", tfc),
            ("non-keyframe settings", _tfc_settings(config)),
            ("inference size", f"short side {config.inference_short_side} (aspect kept)"),
            ("label hysteresis", _hysteresis_line(config)),
        ], ("", ""), numbers=False),
        "",
        "## Data",
        "",
        f"Trained on **{dataset}**." if dataset else "The training data was not recorded.",
        "",
        "## Training",
        "",
    ]
    if train_command:
        lines += ["```bash", train_command.strip(), "```", ""]
    elif train_config:
        lines += ["The exact command was not recorded; the run's configuration "
                  "(`train_config.json`):", "", "```json", json.dumps(train_config, indent=2),
                  "```", ""]
    else:
        lines += ["The training command was not recorded.", ""]
    lines += ["## Metrics", ""]
    if metrics:
        lines += metrics_markdown(metrics)
    else:
        lines += ["No evaluation results were given.", ""]
    lines += [
        "## Usage",
        "",
        "```bash",
        "pip install tfcseg",
        "```",
        "",
        "```python",
        "import tfcseg",
        "",
        f"model = tfcseg.load_model({json.dumps(load_as)})",
        "print(model.config.class_names)",
        "```",
        "",
        f"Every tfcseg command takes it as `--model {load_as}`.",
        "",
        "## Classes",
        "",
        "<details><summary>" + f"{config.num_classes} classes</summary>",
        "",
        *[f"- {i}: {_cell(name)}" for i, name in enumerate(config.class_names)],
        "",
        "</details>",
        "",
        "## Licence",
        "",
        f"`{licence}`. Weights fine-tuned from NVIDIA's SegFormer checkpoints carry NVIDIA's "
        "own licence (NVIDIA Source Code License for SegFormer, non-commercial).",
        "",
    ]
    return "\n".join(lines)


def read_metrics(path: str | Path) -> dict[str, Any]:
    """An evaluation JSON object (as `tfcseg eval --json` writes it)."""
    from ..errors import TfcsegError

    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise TfcsegError(f"{path}: no such metrics file") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TfcsegError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict):
        raise TfcsegError(f"{path}: expected a JSON object of metrics")
    return data
