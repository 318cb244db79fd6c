"""`tfcseg eval`: official VSPW metrics for a model run over a split, or for saved predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import TfcsegError, check_hysteresis_power, check_margin, check_power
from ..hub.refs import MODEL_HELP
from ..io.atomic import sweep_stale
from . import (HYSTERESIS_HELP, HYSTERESIS_POWER_HELP, MSDA_GATE_HELP, MSDA_HELP, POWER_HELP, app, describe_hysteresis, describe_msda, err_console,
               parse_msda, parse_threads, results_console, warnings_as_lines, write_json)
from .keyframes import (CHANGED_SHARE_HELP, KEYFRAME_HELP, MAX_KEYFRAME_HELP, MIN_KEYFRAME_HELP,
                        SIMILARITY_HELP, describe_keyframes)


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}"


def _print_result(result: dict[str, Any], per_class: bool, console: Console | None = None) -> None:
    table = Table(title=f"tfcseg eval: {result['dataset']} ({result['split']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("mIoU (%)", _pct(result["miou"]))
    table.add_row("wIoU (%)", _pct(result["wiou"]))
    for n in (8, 16):
        table.add_row(f"mVC{n} (%)", _pct(result[f"mvc{n}"]) + f"  [{result[f'mvc{n}_windows']} windows]")
    table.add_row("flicker (%)", _pct(result.get("flicker")) + "  [pixels changing label per frame]")
    table.add_row("pixel accuracy (%)", _pct(result["pixel_accuracy"]))
    table.add_row("videos", str(result["videos"]))
    table.add_row("frames", str(result["frames"]))
    table.add_row("skipped frames", str(result["skipped_frames"]))
    if "fps" in result:
        table.add_row("frames/s (model)", "n/a" if result["fps"] is None else f"{result['fps']:.2f}")
        table.add_row("mode", f"{result['mode']}, {result.get('precision', 'fp32')}"
                      + (", ONNX Runtime" if result.get("backend") == "onnxruntime" else ""))
        table.add_row("keyframes", describe_keyframes(result))
        table.add_row("keyframes (%)", _pct(result["keyframe_share"]))
        table.add_row("label hysteresis", describe_hysteresis(result.get("label_hysteresis"),
                                                                  result.get("label_hysteresis_power")))
        if result["mode"] == "tfc":
            table.add_row("sparse MSDA", describe_msda(result.get("msda_threshold"), result.get("msda_gate"),
                                                       result.get("msda_share")))
    console = console or Console()
    console.print(table)
    if per_class:
        classes = Table(title="per-class IoU (%)", caption="n/a: not in the GT")
        classes.add_column("#", justify="right")
        classes.add_column("class")
        classes.add_column("IoU", justify="right")
        for i, (name, iou) in enumerate(result["per_class_iou"].items()):
            classes.add_row(str(i), name, _pct(iou))
        console.print(classes)


@app.command("eval")
def eval_command(
    data_root: Path = typer.Option(..., "--data-root", help="A VSPW-layout dataset (split files, "
                                   "data/<video>/origin and mask, optional classes.json)."),
    dataset: str = typer.Option("vspw", "--dataset", help="Dataset layout: vspw (VSPW itself or any "
                                "dataset in its layout; the classes come from classes.json)."),
    split: str = typer.Option("val", "--split", help="Split file to evaluate (<data-root>/<split>.txt)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    mode: str = typer.Option("tfc", "--mode", help="tfc | segformer (every frame a keyframe) | "
                             "reuse (feature reuse between keyframes)."),
    keyframe_interval: str = typer.Option("4", "--keyframe-interval", "-k", metavar="K|auto",
                                          help=KEYFRAME_HELP),
    max_keyframe_interval: Optional[int] = typer.Option(None, "--max-keyframe-interval",
                                                        help=MAX_KEYFRAME_HELP),
    min_keyframe_interval: Optional[int] = typer.Option(None, "--min-keyframe-interval",
                                                        help=MIN_KEYFRAME_HELP),
    keyframe_similarity: Optional[float] = typer.Option(None, "--keyframe-similarity",
                                                        help=SIMILARITY_HELP),
    keyframe_changed_share: Optional[float] = typer.Option(None, "--keyframe-changed-share",
                                                           help=CHANGED_SHARE_HELP),
    short_side: Optional[int] = typer.Option(None, "--short-side", help="Inference short side in pixels "
                                             "(default: the model's, 480 = VSPW's 480x853; 0 = as stored)."),
    save_predictions: Optional[Path] = typer.Option(None, "--save-predictions", help="Write index PNGs "
                                                    "DIR/<video>/<frame>.png (class k stored as k+1, as the masks)."),
    predictions: Optional[Path] = typer.Option(None, "--predictions", help="Score these saved predictions "
                                               "(DIR/<video>/<frame>.png) instead of running a model."),
    prediction_encoding: str = typer.Option("vspw", "--prediction-encoding", help="How --predictions "
                                            "store classes: vspw (k+1, as the masks) or index (k)."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Also save the results as JSON "
                                             "(metrics as fractions in 0..1; '-': print it to stdout)."),
    per_class: bool = typer.Option(False, "--per-class", help="Also print the IoU of every class."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | bf16 | fp16 (autocast; bf16 "
                                  "on CPUs with AVX512-BF16 or AMX, both on GPUs)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the PNGs of an earlier "
                                   "--save-predictions in DIR (other files stay)."),
    threads: str = typer.Option("fixed", "--threads", help="CPU threads: fixed (PyTorch's count, "
                                "set by OMP_NUM_THREADS, on every frame: the metrics do not depend on "
                                "the machine's load), auto (that count or one, whichever runs faster "
                                "now; floats may round differently frame to frame) or a number."),
    backend: str = typer.Option("pytorch", "--backend", help="pytorch | onnxruntime (the model's "
                                "ONNX graphs in ONNX Runtime, fp32; needs pip install \"tfcseg[onnx]\")."),
    msda: str = typer.Option("model", "--msda", metavar="model|on|off|T", help=MSDA_HELP),
    msda_gate: Optional[float] = typer.Option(None, "--msda-gate", metavar="G", help=MSDA_GATE_HELP),
    hysteresis: Optional[float] = typer.Option(None, "--hysteresis", metavar="H", help=HYSTERESIS_HELP),
    hysteresis_power: Optional[float] = typer.Option(None, "--hysteresis-power", metavar="Q",
                                                     help=HYSTERESIS_POWER_HELP),
    interpolation_power: Optional[float] = typer.Option(None, "--interpolation-power", metavar="P",
                                                        help=POWER_HELP),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Official VSPW metrics (mIoU, wIoU, mVC8, mVC16) of a model, or of saved predictions."""
    from ..evaluate import evaluate_model, score_predictions

    from ..runtime import PRECISIONS
    from ..segmenter import keyframe_schedule

    if precision not in PRECISIONS:
        raise TfcsegError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    if backend == "onnxruntime" and precision != "fp32":
        raise TfcsegError(f"--backend onnxruntime runs in fp32, not --precision {precision}")
    if dataset.lower() != "vspw":
        raise TfcsegError(f"--dataset {dataset}: unknown dataset layout (supported: vspw)")
    if short_side is not None and short_side < 0:
        raise TfcsegError(f"--short-side {short_side}: must be 0 (the frames' own size) or a number of pixels")
    if predictions is not None and (model is not None or save_predictions is not None):
        raise TfcsegError("--predictions scores saved predictions; it cannot be combined with "
                          "--model or --save-predictions")
    schedule = dict(keyframe_similarity=keyframe_similarity, keyframe_changed_share=keyframe_changed_share,
                    max_keyframe_interval=max_keyframe_interval, min_keyframe_interval=min_keyframe_interval)
    msda_choice = parse_msda(msda)
    check_margin(msda_gate, "msda_gate")
    check_margin(hysteresis, "hysteresis")
    check_hysteresis_power(hysteresis_power)
    check_power(interpolation_power)
    if predictions is None:
        keyframe_schedule(keyframe_interval, **schedule)  # option mistakes before the model loads
    if json_file is not None and str(json_file) != "-":
        sweep_stale(json_file.expanduser().resolve().parent, json_file.name)  # a killed run's temporary
    with warnings_as_lines("the skipped files are listed in --json"):
        if predictions is not None:
            result = score_predictions(data_root, predictions, split=split, encoding=prediction_encoding,
                                       progress=not quiet)
        else:
            from ..backends import load_backend_model, resolve_backend_device

            net = load_backend_model(model, backend, resolve_backend_device(device, backend))
            result = evaluate_model(net, data_root, split=split, mode=mode, keyframe_interval=keyframe_interval,
                                    short_side=short_side, save_predictions=save_predictions,
                                    progress=not quiet, precision=precision, overwrite=overwrite,
                                    backend=backend, threads=parse_threads(threads), msda=msda_choice,
                                    msda_gate=msda_gate, hysteresis=hysteresis, hysteresis_power=hysteresis_power,
                                    interpolation_power=interpolation_power, **schedule)
            result["model"] = str(model) if model is not None else "default"
    _print_result(result, per_class, results_console(json_file))
    if json_file is not None:
        write_json(json_file, result)
        if str(json_file) != "-":
            err_console.print(f"wrote {json_file}", highlight=False)
