"""`tfcseg benchmark`: speed, parameters, MACs and memory per mode, keyframe vs non-keyframe."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Optional

import torch
import typer
from rich.console import Console
from rich.table import Table

from ..errors import TfcsegError, check_margin, check_power
from ..hub.refs import MODEL_HELP
from . import MSDA_GATE_HELP, MSDA_HELP, POWER_HELP, app, parse_msda, results_console, write_json
from .keyframes import CHANGED_SHARE_HELP, KEYFRAME_HELP, MAX_KEYFRAME_HELP, MIN_KEYFRAME_HELP, SIMILARITY_HELP


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise TfcsegError(f"--size {text!r}: expected HxW, e.g. 480x853") from None
    if h < 32 or w < 32:
        raise TfcsegError(f"--size {text}: at least 32x32")
    return h, w


def _model(model: Optional[str], variant: Optional[str], num_classes: int, device: torch.device):
    from ..hub.resolve import load_model
    from ..models.config import VARIANTS, ModelConfig
    from ..models.segformer import TFCSegFormer

    if model and variant:
        raise TfcsegError("give --model or --variant, not both")
    if variant:
        if variant.lower() not in VARIANTS:
            raise TfcsegError(f"--variant {variant}: choose one of {', '.join(VARIANTS)}")
        torch.manual_seed(0)
        # random weights; MSDA counted as trained so that its cost is measured
        cfg = ModelConfig(variant=variant, num_classes=num_classes, tfc_trained=True)
        return TFCSegFormer(cfg).to(device).eval()
    return load_model(model, device=device)


def _ms(t: dict[str, float]) -> str:
    return f"{t['median_ms']:.1f}  [{t['p10_ms']:.1f}-{t['p90_ms']:.1f}]"


def print_report(r: dict[str, Any], console: Console) -> None:
    policy = r.get("keyframe_policy")
    keys = (f"keyframe every {r['keyframe_interval']}" if policy is None else
            f"keyframes auto (similarity < {policy['keyframe_similarity']:g} on > "
            f"{policy['keyframe_changed_share']:.0%} of points, at most {policy['max_keyframe_interval']} apart)")
    head = (f"{r['variant']} · {r['size'][0]}x{r['size'][1]} · {r['device_name']} ({r['device']}, "
            f"{r['threads']} threads) · {r['precision']} · {keys} · "
            f"{r['frames']} frames of {r['clip']}")
    modes = Table(title=f"tfcseg benchmark: {head}")
    for col in ("mode", "frames/s", "vs transformers", "keyframes", "MSDA share", "labels = fp32"):
        modes.add_column(col, justify="right" if col != "mode" else "left")
    hf = r.get("transformers")
    for mode, m in r["modes"].items():
        modes.add_row(mode, f"{m['fps']:.2f}", f"{hf['speedup'][mode]:.2f}x" if hf else "-",
                      f"{len(m['keyframes'])}/{r['frames']}",
                      f"{100 * m['msda_share']:.1f}%" if mode == "tfc" else "-",
                      f"{100 * m['label_agreement_vs_fp32']:.2f}%" if "label_agreement_vs_fp32" in m else "-")
    if hf:
        modes.add_row("transformers", f"{hf['fps']:.2f}", "1.00x", "-", "-", "-")
    console.print(modes)
    if hf:
        console.print(f"SegFormer labels equal to transformers': {100 * hf['segformer_label_agreement']:.3f}% of pixels")
    ort = r.get("onnxruntime")
    if ort:
        table = Table(title=f"backends: PyTorch ({r['precision']}) and ONNX Runtime {ort['version']} "
                      f"(fp32, {', '.join(ort['providers'])}), clip runs taking turns")
        for col in ("mode", "PyTorch frames/s", "ONNX Runtime frames/s", "ONNX Runtime / PyTorch",
                    "MSDA share", "labels = PyTorch fp32"):
            table.add_column(col, justify="right" if col != "mode" else "left")
        for mode, m in ort["modes"].items():
            table.add_row(mode, f"{r['modes'][mode]['fps']:.2f}", f"{m['fps']:.2f}", f"{m['vs_pytorch']:.2f}x",
                          f"{100 * m['msda_share']:.1f}%" if mode == "tfc" else "-",
                          f"{100 * m['label_agreement_vs_pytorch']:.3f}%")
        console.print(table)

    load = r.get("load")
    if load:
        table = Table(title=f"beside {load['processes']} busy process(es) (started and stopped by the benchmark)")
        for col in ("mode", "threads", "frames/s", "kept of idle"):
            table.add_column(col, justify="right" if col not in ("mode", "threads") else "left")
        for mode in ("segformer", "tfc"):
            for name, label in (("auto", "tfcseg's choice (auto)"), ("pytorch_default", "PyTorch default")):
                m = load[mode][name]
                table.add_row(mode, label, f"{m['fps']:.2f}", f"{100 * m['kept']:.0f}%")
        console.print(table)

    cost = Table(title="cost per frame")
    for col in ("", "latency ms (median [p10-p90])", "GMACs"):
        cost.add_column(col, justify="right" if col else "left")
    lat, macs = r["latency"], r["macs"]
    cost.add_row("keyframe", _ms(lat["keyframe"]), f"{macs['keyframe'] / 1e9:.2f}")
    cost.add_row("non-keyframe (tfc)", _ms(lat["non_keyframe_tfc"]), f"{macs['non_keyframe'] / 1e9:.2f}")
    cost.add_row("non-keyframe (reuse)", _ms(lat["non_keyframe_reuse"]), "-")
    cost.add_row("encoder stages 3-4", _ms(lat["encoder_stages_3_4"]), f"{macs['encoder_stages_3_4'] / 1e9:.2f}")
    if "keyframe_from_low_level" in lat:
        cost.add_row("keyframe after stages 1-2 (auto)", _ms(lat["keyframe_from_low_level"]),
                     f"{macs['keyframe_on_change'] / 1e9:.2f} with them")
    console.print(cost)

    p = r["params"]
    console.print(f"parameters: {p['total'] / 1e6:.2f} M (encoder {p['encoder'] / 1e6:.2f} M, of which "
                  f"stages 1-2 {p['encoder_stages_1_2'] / 1e6:.2f} M; decoder {p['decoder'] / 1e6:.2f} M; "
                  f"MSDA {p['msda'] / 1e6:.2f} M) · peak memory {r['peak_memory_mb'] or 0:.0f} MB"
                  + (" (process RSS)" if r["device"] == "cpu" else " (allocated)"))
    rate = r["matmul_macs_per_s"]
    achieved = ", ".join(f"{k} {v / 1e9:.1f} GMAC/s ({100 * r['share_of_matmul_rate'][k]:.0f}%)"
                         for k, v in r["achieved_macs_per_s"].items())
    console.print(f"large matmul: {rate / 1e9:.1f} GMAC/s; achieved: {achieved}")
    if "msda_sweep" in r:
        sweep = Table(title="sparse MSDA vs encoder stages 3-4 (the paper's Table 3)")
        for col in ("points updated", "MSDA ms", "x stages 3-4"):
            sweep.add_column(col, justify="right")
        for row in r["msda_sweep"]:
            sweep.add_row(f"{100 * row['share']:.0f}%", f"{row['median_ms']:.1f}", f"{row['vs_encoder_stages_3_4']:.2f}")
        console.print(sweep)


@app.command()
def benchmark(
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    variant: Optional[str] = typer.Option(None, "--variant", help="Benchmark randomly initialised "
                                          "weights of this variant (b0..b5) instead of --model."),
    num_classes: int = typer.Option(150, "--num-classes", help="Classes of a --variant model."),
    keyframe_interval: str = typer.Option("8", "--keyframe-interval", "-k", metavar="K|auto",
                                          help=KEYFRAME_HELP),
    max_keyframe_interval: Optional[int] = typer.Option(None, "--max-keyframe-interval",
                                                        help=MAX_KEYFRAME_HELP),
    min_keyframe_interval: Optional[int] = typer.Option(None, "--min-keyframe-interval",
                                                        help=MIN_KEYFRAME_HELP),
    keyframe_similarity: Optional[float] = typer.Option(None, "--keyframe-similarity",
                                                        help=SIMILARITY_HELP),
    keyframe_changed_share: Optional[float] = typer.Option(None, "--keyframe-changed-share",
                                                           help=CHANGED_SHARE_HELP),
    size: str = typer.Option("480x853", "--size", help="Inference size HxW."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16 (autocast)."),
    frames: int = typer.Option(16, "--frames", min=2, help="Frames of the timed clip per mode."),
    repeats: int = typer.Option(3, "--repeats", min=1, help="Timed repeats (median reported); the "
                                "clip runs of the modes and transformers take turns."),
    compare_hf: bool = typer.Option(False, "--compare-hf", help="Also time transformers' SegFormer "
                                    "on the same weights and input, and print ratios."),
    msda_sweep: bool = typer.Option(True, "--msda-sweep/--no-msda-sweep", help="Time sparse MSDA at "
                                    "10/20/40/100% of the points against encoder stages 3-4."),
    video: Optional[str] = typer.Option(None, "--video", help="Time real footage (its first --frames "
                                        "frames, resized to --size) instead of a synthetic clip."),
    backend: str = typer.Option("pytorch", "--backend", help="pytorch | onnxruntime: also time every "
                                "mode's clip on the ONNX Runtime backend (fp32), in turn with PyTorch's, "
                                "and compare labels (needs pip install \"tfcseg[onnx]\")."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads, fixed for every run "
                                         "(default: PyTorch's count, with tfcseg's auto choice between it and 1)."),
    load: int = typer.Option(0, "--load", min=0, help="Also time SegFormer and TFC beside N busy processes "
                             "(started and stopped here), with tfcseg's thread choice and PyTorch's default."),
    msda: str = typer.Option("model", "--msda", metavar="model|on|off|T", help=MSDA_HELP),
    msda_gate: Optional[float] = typer.Option(None, "--msda-gate", metavar="G", help=MSDA_GATE_HELP),
    interpolation_power: Optional[float] = typer.Option(None, "--interpolation-power", metavar="P",
                                                        help=POWER_HELP),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Save every number as JSON ('-': print it to stdout)."),
) -> None:
    """Speed (frames/s per mode, keyframe and non-keyframe latency), parameters, MACs and memory."""
    from ..benchmark import BenchmarkSettings, run_benchmark
    from ..runtime import PRECISIONS, resolve_device
    from ..segmenter import keyframe_schedule

    schedule = dict(keyframe_similarity=keyframe_similarity, keyframe_changed_share=keyframe_changed_share,
                    max_keyframe_interval=max_keyframe_interval, min_keyframe_interval=min_keyframe_interval)
    interval, _ = keyframe_schedule(keyframe_interval, **schedule)
    if precision not in PRECISIONS:
        raise TfcsegError(f"--precision {precision}: choose fp32, bf16 or fp16")
    if threads:
        torch.set_num_threads(threads)
    dev = resolve_device(device)
    if precision == "fp16" and dev.type != "cuda":
        raise TfcsegError("--precision fp16 needs a GPU; use bf16 on a CPU")
    if compare_hf:
        try:
            import transformers  # noqa: F401
        except ImportError:
            raise TfcsegError("--compare-hf needs `transformers` (pip install transformers)") from None
    from ..backends import check_backend

    onnx_model = None
    if check_backend(backend) == "onnxruntime":
        from ..backends.ort import OnnxRuntimeModel, onnx_entry, require_onnxruntime

        require_onnxruntime()
        if model and not variant:
            from ..hub.resolve import resolve_model_source

            path = resolve_model_source(model)
            if path.is_dir() and onnx_entry(path) is not None:  # an ONNX export: its own graphs
                onnx_model = OnnxRuntimeModel(path, dev)
    msda_choice = parse_msda(msda)
    check_margin(msda_gate, "msda_gate")
    check_power(interpolation_power)
    net = _model(model, variant, num_classes, dev)
    from ..segmenter import with_msda

    net.config.tfc = with_msda(net.config.tfc, msda_choice, msda_gate)  # what every timed run reads
    if interpolation_power is not None:
        net.config.tfc = replace(net.config.tfc, interpolation_power=float(interpolation_power))
    settings = BenchmarkSettings(size=_size(size), frames=frames, keyframe_interval=interval, **schedule,
                                 precision=precision, repeats=repeats, compare_hf=compare_hf,
                                 msda_sweep=msda_sweep, video=video, onnxruntime=backend == "onnxruntime",
                                 load=load, threads=threads or "auto")
    console = results_console(json_out)
    with console.status("benchmarking") as status:
        result = run_benchmark(net, settings, progress=lambda msg: status.update(f"benchmarking: {msg}"),
                               onnx_model=onnx_model)
    print_report(result, console)
    if json_out:
        write_json(json_out, result)
        if str(json_out) != "-":
            console.print(f"saved {json_out}")
