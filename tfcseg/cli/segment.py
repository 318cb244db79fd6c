"""`tfcseg segment`: videos (files, folders of frames or of videos, globs, URLs, cameras) in,
colourised overlay videos out."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..errors import TfcsegError, as_flags, check_hysteresis_power, check_margin, check_power
from ..hub.refs import MODEL_HELP
from ..io.atomic import sweep_stale
from ..io.video import ensure_writable_folder, expand_sources
from ..segment import segment_video, segment_videos
from . import (HYSTERESIS_HELP, HYSTERESIS_POWER_HELP, MSDA_GATE_HELP, MSDA_HELP, POWER_HELP, app, describe_hysteresis, describe_msda, err_console,
               parse_msda, parse_threads, results_console, write_json)
from .keyframes import (CHANGED_SHARE_HELP, KEYFRAME_HELP, MAX_KEYFRAME_HELP, MIN_KEYFRAME_HELP,
                        SIMILARITY_HELP, describe_keyframes, keyframe_list)


@app.command()
def segment(
    inputs: List[str] = typer.Argument(..., metavar="INPUT...", help="Video files (any format "
                                       "ffmpeg reads), folders of frames, folders of videos, "
                                       "quoted globs ('frames/*.jpg': one video; 'clips/*.mp4': "
                                       "each), URLs (rtsp://, http(s)://...) or cameras "
                                       "(/dev/video0, or an index)."),
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Output video (.mp4, .mov, .mkv), or an existing "
                                          "folder to hold <input stem>_tfcseg.mp4. Default: "
                                          "beside the input (the current folder for a URL or "
                                          "camera)."),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", help="Folder for the outputs "
                                              "of several videos (created), one <stem>_tfcseg.mp4 each."),
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
    opacity: float = typer.Option(0.5, "--opacity", help="Weight of the class colours, 0..1."),
    masks: Optional[Path] = typer.Option(None, "--masks", help="Also write index PNGs as "
                                         "DIR/<video>/<frame>.png (VSPW encoding: class id + 1); "
                                         "the folder is swapped in whole when complete."),
    classes: Optional[str] = typer.Option(None, "--classes", help="Draw only these classes "
                                          "(names or ids, comma-separated: road,car); masks keep all."),
    side_by_side: bool = typer.Option(False, "--side-by-side",
                                      help="Put the original frame left of the overlay."),
    legend: bool = typer.Option(True, "--legend/--no-legend",
                                help="Draw a legend of the classes present in each frame."),
    audio: bool = typer.Option(True, "--audio/--no-audio", help="Copy the source's audio "
                               "(cut to --start/--end) into the output."),
    start: Optional[str] = typer.Option(None, "--start", help="Start time, as a player shows it: "
                                        "seconds or [HH:]MM:SS."),
    end: Optional[str] = typer.Option(None, "--end", help="End time (exclusive): seconds or [HH:]MM:SS."),
    stride: int = typer.Option(1, "--stride", help="Keep every N-th frame (each shown until the "
                               "next, so the duration is kept)."),
    realtime: bool = typer.Option(False, "--realtime", help="Drop frames to keep up with a live "
                                  "source (a file is read at its own pace); the summary says how many."),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda | cuda:N."),
    precision: str = typer.Option("fp32", "--precision", help="fp32 | bf16 | fp16 (autocast; bf16 "
                                  "on CPUs with AVX512-BF16 or AMX, both on GPUs)."),
    threads: str = typer.Option("auto", "--threads", help="CPU threads: auto (PyTorch's count, "
                                "set by OMP_NUM_THREADS, or one, whichever runs faster now: a busy "
                                "machine makes one thread the faster) or a number."),
    msda: str = typer.Option("model", "--msda", metavar="model|on|off|T", help=MSDA_HELP),
    msda_gate: Optional[float] = typer.Option(None, "--msda-gate", metavar="G", help=MSDA_GATE_HELP),
    hysteresis: Optional[float] = typer.Option(None, "--hysteresis", metavar="H", help=HYSTERESIS_HELP),
    hysteresis_power: Optional[float] = typer.Option(None, "--hysteresis-power", metavar="Q",
                                                     help=HYSTERESIS_POWER_HELP),
    interpolation_power: Optional[float] = typer.Option(None, "--interpolation-power", metavar="P",
                                                        help=POWER_HELP),
    backend: str = typer.Option("pytorch", "--backend", help="pytorch | onnxruntime (the model's "
                                "ONNX graphs in ONNX Runtime, fp32; an ONNX export from `tfcseg "
                                "export --format onnx` runs as it is, any other model is exported "
                                "once into the cache; needs pip install \"tfcseg[onnx]\")."),
    fps: Optional[str] = typer.Option(None, "--fps", help="Frame rate of a folder/glob of "
                                      "frames: 15, 29.97 or 30000/1001 (default 30); a video "
                                      "keeps its own timing."),
    json_file: Optional[str] = typer.Option(None, "--json", metavar="FILE", help="Also save the "
                                            "summary as JSON ('-': print it to stdout; a batch "
                                            "of videos: a list, one summary each)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output video "
                                   "(and masks)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Segment videos and write colourised overlay videos (H.264, the source's timing, pixel
    aspect and audio)."""
    if json_file is not None and json_file != "-":
        where = Path(json_file).expanduser().resolve()
        ensure_writable_folder(where.parent)
        sweep_stale(where.parent, where.name)  # a killed run's temporary
    sources = expand_sources(inputs)
    if not sources:
        raise TfcsegError("no videos to segment")
    # One path naming one video: one summary. Anything else (several inputs, a folder or glob
    # of videos, --output-dir): a batch, summarised as a list.
    batch = len(inputs) > 1 or sources != list(inputs) or output_dir is not None
    if batch and output is not None:
        if output_dir is not None or not output.is_dir():
            raise TfcsegError(f"-o {output}: several videos need a folder for their outputs "
                              "(use --output-dir DIR)")
        output_dir, output = output, None
    options = dict(mode=mode, keyframe_interval=keyframe_interval, opacity=opacity, masks_dir=masks,
                   side_by_side=side_by_side, legend=legend, start=start, end=end, stride=stride,
                   overwrite=overwrite, fps=fps, precision=precision, audio=audio, classes=classes,
                   realtime=realtime, keyframe_similarity=keyframe_similarity,
                   keyframe_changed_share=keyframe_changed_share,
                   max_keyframe_interval=max_keyframe_interval, min_keyframe_interval=min_keyframe_interval,
                   backend=backend, threads=parse_threads(threads), msda=parse_msda(msda),
                   msda_gate=check_margin(msda_gate, "msda_gate"), hysteresis=check_margin(hysteresis, "hysteresis"),
                   hysteresis_power=check_hysteresis_power(hysteresis_power),
                   interpolation_power=check_power(interpolation_power))
    out_console = results_console(json_file)  # stderr when the JSON goes to stdout
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if batch:
            results = segment_videos(sources, output_dir, model, progress=not quiet, device=device,
                                     console=err_console, **options)
        else:
            results = [segment_video(sources[0], output=output, model=model, device=device,
                                     progress=not quiet, console=err_console, **options)]
    # Library warnings (e.g. an untrained TFC module) once each, as one line.
    library = list(dict.fromkeys(str(w.message) for w in caught
                                 if issubclass(w.category, (UserWarning, RuntimeWarning))))
    for summary in results:
        if summary.get("error") is None:
            summary["warnings"].extend(library)
            for message in summary["warnings"]:
                err_console.print(f"[bold yellow]warning:[/] {escape(message)}", highlight=False, soft_wrap=True)
    if batch:
        out_console.print(_batch_table(results))
    else:
        out_console.print(_table(results[0]))
    if json_file is not None:
        write_json(json_file, results if batch else results[0])
    failed = [s for s in results if s.get("error") is not None]
    for s in failed:
        err_console.print(f"[bold red]error:[/] {escape(as_flags(s['error'], tuple(s['error_options'])))}",
                          highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(2)


def _table(s: dict) -> Table:
    table = Table(title="tfcseg segment", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")  # paths are shown whole, folded if long
    share = s["mean_msda_share"]
    rate = s["frame_rate"]
    if s["variable_frame_rate"] and s["average_frame_rate"]:
        rate = f"variable, {s['average_frame_rate']:.2f} on average (the source's timing kept)"
    rows = [
        ("output", s["output"]),
        ("frames", f"{s['frames']}" + (f" ({s['lost_frames']} lost)" if s["lost_frames"] else "")
         + (f" ({s['dropped_frames']} dropped to keep up)" if s["dropped_frames"] else "")
         + (" (stopped by Ctrl-C)" if s["interrupted"] else "")),
        ("keyframes", describe_keyframes(s)),
        ("keyframe at", keyframe_list(s["keyframe_indices"])),
        ("sparse MSDA", describe_msda(s["msda_threshold"], s.get("msda_gate"), share)),
        ("label hysteresis", describe_hysteresis(s.get("label_hysteresis"), s.get("label_hysteresis_power"))),
        ("flicker", "-" if s["flicker"] is None else f"{s['flicker']:.2%} of pixels change label per frame"),
        ("frames/s", "-" if s["fps"] is None else f"{s['fps']:.2f} ({s['device']}, {s['precision']}"
         + (", ONNX Runtime)" if s.get("backend") == "onnxruntime" else ")")),
        ("frame rate", rate),
        ("duration", f"{s['duration']:.3f} s" + (f", {s['audio_streams']} audio stream(s)" if s["audio_streams"] else ", no audio")),
        ("size", f"{s['output_width']}x{s['output_height']} (source {s['width']}x{s['height']}"
         + (f", pixel aspect {s['sar']}" if s["sar"] != "1" else "") + ")"),
    ]
    if s["classes"]:
        rows.append(("classes drawn", ", ".join(s["classes"])))
    if s["masks_dir"]:
        rows.append(("masks", s["masks_dir"]))
    for key, value in rows:
        table.add_row(key, str(value))
    return table


def _batch_table(results: list[dict]) -> Table:
    ok = sum(1 for s in results if s.get("error") is None)
    table = Table(title=f"tfcseg segment: {ok} of {len(results)} videos", title_justify="left")
    table.add_column("input", overflow="fold")
    table.add_column("output", overflow="fold")
    table.add_column("frames", justify="right")
    table.add_column("frames/s", justify="right")
    for s in results:
        if s.get("error") is not None:
            table.add_row(s["input"], "[red]failed[/] (see below)", "-", "-")
        else:
            table.add_row(s["input"], s["output"], str(s["frames"]),
                          "-" if s["fps"] is None else f"{s['fps']:.2f}")
    return table
