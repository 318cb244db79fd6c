"""`tfcseg segment`: a video (file, folder of frames or glob) in, a colourised overlay video out."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ..hub.refs import MODEL_HELP
from ..io.atomic import atomic_write_text
from ..io.video import ensure_writable_folder
from ..segment import segment_video
from . import app, err_console


@app.command()
def segment(
    input: str = typer.Argument(..., help="A video file (any format ffmpeg reads), a folder of "
                                "frames, or a quoted glob of images such as 'frames/*.jpg'."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Output video (.mp4, .mov, .mkv). Default: "
                                          "<input stem>_tfcseg.mp4 beside the input."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    mode: str = typer.Option("tfc", "--mode", help="tfc | segformer (every frame a keyframe) | "
                             "reuse (feature reuse between keyframes)."),
    keyframe_interval: int = typer.Option(4, "--keyframe-interval", "-k",
                                          help="A keyframe every K frames."),
    opacity: float = typer.Option(0.5, "--opacity", help="Weight of the class colours, 0..1."),
    masks: Optional[Path] = typer.Option(None, "--masks", help="Also write index PNGs as "
                                         "DIR/<video>/<frame>.png (VSPW encoding: class id + 1)."),
    side_by_side: bool = typer.Option(False, "--side-by-side",
                                      help="Put the original frame left of the overlay."),
    legend: bool = typer.Option(True, "--legend/--no-legend",
                                help="Draw a legend of the classes present in each frame."),
    start: Optional[str] = typer.Option(None, "--start", help="Start time: seconds or [HH:]MM:SS."),
    end: Optional[str] = typer.Option(None, "--end", help="End time (exclusive): seconds or [HH:]MM:SS."),
    stride: int = typer.Option(1, "--stride", help="Keep every N-th frame (the output frame "
                               "rate is divided by N, so the duration is kept)."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | bf16 | fp16 (autocast; bf16 "
                                  "on CPUs with AVX512-BF16 or AMX, both on GPUs)."),
    backend: str = typer.Option("pytorch", "--backend", help="pytorch | onnxruntime (the model's "
                                "ONNX graphs in ONNX Runtime, fp32; an ONNX export from `tfcseg "
                                "export --format onnx` runs as it is, any other model is exported "
                                "once into the cache; needs pip install \"tfcseg[onnx]\")."),
    fps: Optional[str] = typer.Option(None, "--fps", help="Frame rate of a folder/glob of "
                                      "frames: 15, 29.97 or 30000/1001 (default 30); a video "
                                      "file keeps its own."),
    json_file: Optional[Path] = typer.Option(None, "--json", help="Also save the summary as JSON."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output video "
                                   "(and masks)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Segment a video and write a colourised overlay video (H.264, the source's frame rate)."""
    if json_file is not None:
        ensure_writable_folder(json_file.expanduser().resolve().parent)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = segment_video(
            input, output=output, model=model, mode=mode, keyframe_interval=keyframe_interval,
            opacity=opacity, masks_dir=masks, side_by_side=side_by_side, legend=legend,
            start=start, end=end, stride=stride, device=device, overwrite=overwrite,
            progress=not quiet, fps=fps, precision=precision, console=err_console, backend=backend,
        )
    # Library warnings (e.g. an untrained TFC module) once each, as one line.
    for message in dict.fromkeys(str(w.message) for w in caught
                                 if issubclass(w.category, (UserWarning, RuntimeWarning))):
        summary["warnings"].append(message)
    for message in summary["warnings"]:
        err_console.print(f"[bold yellow]warning:[/] {message}", highlight=False, soft_wrap=True)
    Console().print(_table(summary))
    if json_file is not None:
        atomic_write_text(json_file.expanduser(), json.dumps(summary, indent=2) + "\n")


def _table(s: dict) -> Table:
    table = Table(title="tfcseg segment", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")  # paths are shown whole, folded if long
    share = s["mean_msda_share"]
    rows = [
        ("output", s["output"]),
        ("frames", f"{s['frames']}" + (f" ({s['lost_frames']} lost)" if s["lost_frames"] else "")),
        ("keyframes", f"{s['keyframes']} (mode {s['mode']}, interval {s['keyframe_interval']})"),
        ("mean MSDA share", "-" if share is None else f"{share:.1%} of points (non-keyframes)"),
        ("flicker", "-" if s["flicker"] is None else f"{s['flicker']:.2%} of pixels change label per frame"),
        ("frames/s", "-" if s["fps"] is None else f"{s['fps']:.2f} ({s['device']}, {s['precision']}"
         + (", ONNX Runtime)" if s.get("backend") == "onnxruntime" else ")")),
        ("frame rate", s["frame_rate"]),
        ("size", f"{s['output_width']}x{s['output_height']} (source {s['width']}x{s['height']})"),
    ]
    if s["masks_dir"]:
        rows.append(("masks", s["masks_dir"]))
    for key, value in rows:
        table.add_row(key, str(value))
    return table
