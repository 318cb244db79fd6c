"""`tfcseg train`: TFC training on one process, or many under `torchrun`."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import TfcsegError
from ..training.config import AMP_MODES, PRESETS, TrainConfig
from . import app, results_console, warnings_as_lines, write_json

_DEFAULTS = TrainConfig()


def _shown(value: Any) -> str:
    if value is None:
        return "off"
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return f"{value[0]}x{value[1]}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _default(field: str) -> str:
    """The default of a TrainConfig field under each preset, for --help: "(paper: 1, cpu: 8)",
    or "(default: 1)" when every preset agrees. Read from the presets themselves, so the help
    never drifts from them. (Round brackets: rich reads square ones as markup.)"""
    values = {name: _shown(over.get(field, getattr(_DEFAULTS, field))) for name, over in PRESETS.items()}
    if len(set(values.values())) == 1:
        return f"(default: {next(iter(values.values()))})"
    return "(" + ", ".join(f"{k}: {v}" for k, v in values.items()) + ")"


def _ints(text: str | None, name: str) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise TfcsegError(f"--{name}: expected comma-separated integers, not {text!r}") from None
    if len(values) != 4:
        raise TfcsegError(f"--{name}: expected 4 values (one per encoder stage), not {text!r}")
    return values


def _size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise TfcsegError(f"--base-size: expected HxW (e.g. 480x853), not {text!r}") from None
    return h, w


def _model_json(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    path = Path(text).expanduser()
    source = str(path) if path.is_file() else "--model-config"
    try:
        data = json.loads(path.read_text() if path.is_file() else text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TfcsegError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise TfcsegError(f"{source}: expected a JSON object of ModelConfig fields")
    return data


@app.command()
def train(
    data_root: Path = typer.Option(..., "--data-root", help="A VSPW-layout dataset (train.txt, val.txt, data/)."),
    out: Path = typer.Option(Path("runs/tfc"), "-o", "--out", help="Output folder (last/, best/, metrics.jsonl)."),
    preset: str = typer.Option("paper", "--preset", help="Starting settings: paper (VSPW, the paper's "
                               "recipe) or cpu (small data on a CPU). Options below override them."),
    variant: Optional[str] = typer.Option(None, "--variant", help="b0..b5 (default: the --init checkpoint's, else b0)."),
    init: Optional[str] = typer.Option(None, "--init", help="Start from this SegFormer/tfcseg checkpoint "
                                       "(folder, file or Hub id); TFC's modules continue from a tfcseg checkpoint, else start fresh. "
                                       "Default: from scratch."),
    iters: Optional[int] = typer.Option(None, "--iters", help=f"Total iterations {_default('iters')}."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help=f"Clips per process {_default('batch_size')}."),
    crop: Optional[int] = typer.Option(None, "--crop", help=f"Square crop size {_default('crop')}."),
    base_size: Optional[str] = typer.Option(None, "--base-size", help="HxW that the random rescale "
                                            f"scales {_default('base_size')}."),
    keyframe_interval: Optional[int] = typer.Option(None, "--keyframe-interval", "--clip-len",
                                                    help=f"Frames per clip: keyframe + interval-1 non-keyframes {_default('keyframe_interval')}."),
    lr: Optional[float] = typer.Option(None, "--lr", help=f"Encoder learning rate {_default('lr')}; decoder and TFC at --head-lr-mult x."),
    head_lr_mult: Optional[float] = typer.Option(None, "--head-lr-mult", help="Learning-rate multiplier "
                                                 f"of the decoder and TFC's modules {_default('head_lr_mult')}."),
    warmup: Optional[int] = typer.Option(None, "--warmup", "--warmup-iters", help=f"Linear warmup iterations {_default('warmup_iters')}."),
    weight_decay: Optional[float] = typer.Option(None, "--weight-decay", help=f"AdamW weight decay {_default('weight_decay')}."),
    grad_clip: Optional[float] = typer.Option(None, "--grad-clip", help=f"Clip the gradient norm to this {_default('grad_clip')}."),
    video_rate_share: Optional[float] = typer.Option(
        None, "--video-rate-share", help="Share of training clips made at video rate (15-30 fps street "
        f"motion) by warping one labelled frame; the rest are real clips {_default('video_rate_share')}."),
    seg_loss: Optional[str] = typer.Option(None, "--seg-loss", help="Segmentation loss: ce, ohem (hardest "
                                           f"25% of pixels) or balanced (class weights) {_default('seg_loss')}."),
    consistency_weight: Optional[float] = typer.Option(
        None, "--consistency-weight", help="Weight of the temporal-consistency loss: consecutive frames' "
        f"predictions kept alike where their labels agree (0 = the paper's loss) {_default('consistency_weight')}."),
    distill_weight: Optional[float] = typer.Option(
        None, "--distill-weight", help="Weight of the distillation loss that teaches sparse MSDA per-frame "
        "SegFormer's answer at the points it updates (needs --train-only tfc; 0 = off) "
        f"{_default('distill_weight')}."),
    train_only: Optional[str] = typer.Option(
        None, "--train-only", help="What learns: all, or tfc (only TFC's sparse MSDA, on the frozen "
        f"SegFormer of --init) {_default('train_only')}."),
    amp: Optional[str] = typer.Option(None, "--amp", help="Mixed precision: bf16, fp16, off, or auto (bf16 where the CPU "
                               f"has AVX512-BF16/AMX or the GPU supports it) {_default('amp')}."),
    workers: Optional[int] = typer.Option(None, "--workers", help="DataLoader workers per process [auto]."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu or cuda [auto]."),
    seed: Optional[int] = typer.Option(None, "--seed", help=f"Random seed {_default('seed')}."),
    save_every: Optional[int] = typer.Option(None, "--save-every", help=f"Checkpoint every N iterations {_default('save_every')}."),
    log_every: Optional[int] = typer.Option(None, "--log-every", help=f"Log averages every N iterations {_default('log_every')}."),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="Evaluate on --eval-split every N "
                                             f"iterations and at the end, keeping best/ (0 = never) {_default('eval_every')}."),
    eval_split: Optional[str] = typer.Option(None, "--eval-split", help=f"Split for --eval-every {_default('eval_split')}."),
    eval_short_side: Optional[int] = typer.Option(None, "--eval-short-side", help=f"Evaluation frame short side; off = the model's own {_default('eval_short_side')}."),
    max_minutes: Optional[float] = typer.Option(None, "--max-minutes", help="Stop cleanly after this many "
                                                "minutes, saving a checkpoint (continue with --resume)."),
    stop_at: Optional[int] = typer.Option(None, "--stop-at", help="Stop cleanly after this iteration "
                                          "(the schedule still spans --iters)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start again, replacing a run in --out."),
    deterministic: bool = typer.Option(False, "--deterministic", help="Use deterministic algorithms only."),
    depths: Optional[str] = typer.Option(None, "--depths", help="Override blocks per stage, e.g. 1,1,1,1."),
    hidden_sizes: Optional[str] = typer.Option(None, "--hidden-sizes", help="Override stage widths, e.g. 8,16,24,32."),
    num_heads: Optional[str] = typer.Option(None, "--num-heads", help="Override heads per stage, e.g. 1,2,2,4."),
    decoder_dim: Optional[int] = typer.Option(None, "--decoder-dim", help="Override the decoder width."),
    model_config: Optional[str] = typer.Option(None, "--model-config", help="JSON (a file or inline) of "
                                               "ModelConfig fields to override, e.g. '{\"tfc\": {\"msda_threshold\": 0.5}}'."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the summary to this JSON file ('-': print it to stdout)."),
) -> None:
    """Train TFC (SegFormer + temporal feature correlation) on a VSPW-layout dataset.

    Single process: `tfcseg train --data-root ROOT ...`. Many: `torchrun --nproc_per_node N
    -m tfcseg train ...` (NCCL on GPUs, gloo on CPUs); only rank 0 writes.
    """
    from ..training import Trainer

    if preset not in PRESETS:
        raise TfcsegError(f"--preset: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if amp is not None and amp not in AMP_MODES:
        raise TfcsegError(f"--amp: expected {', '.join(AMP_MODES)}, not {amp!r}")
    cfg = TrainConfig(**PRESETS[preset])
    overrides = _model_json(model_config)
    for name, text in (("depths", depths), ("hidden_sizes", hidden_sizes), ("num_heads", num_heads)):
        values = _ints(text, name.replace("_", "-"))
        if values is not None:
            overrides[name] = values
    if decoder_dim is not None:
        overrides["decoder_dim"] = decoder_dim
    if variant is None and init is None and {"hidden_sizes", "depths", "decoder_dim"} <= overrides.keys():
        variant = overrides.pop("variant", "custom")  # a fully specified architecture
    given = dict(
        data_root=str(data_root), out=str(out), variant=variant, init=init, iters=iters,
        batch_size=batch_size, crop=crop, base_size=_size(base_size), keyframe_interval=keyframe_interval,
        lr=lr, head_lr_mult=head_lr_mult, warmup_iters=warmup, video_rate_share=video_rate_share,
        seg_loss=seg_loss, consistency_weight=consistency_weight, train_only=train_only,
        distill_weight=distill_weight,
        weight_decay=weight_decay, grad_clip=grad_clip, amp=amp,
        workers=workers, device=device, seed=seed, save_every=save_every, log_every=log_every,
        eval_every=eval_every, eval_split=eval_split, eval_short_side=eval_short_side,
        max_minutes=max_minutes, stop_at=stop_at,
    )
    argv, world = sys.argv[1:], int(os.environ.get("WORLD_SIZE", "1"))
    launcher = (f"torchrun --nproc_per_node {os.environ.get('LOCAL_WORLD_SIZE', world)} -m tfcseg "
                if world > 1 else "tfcseg ")
    command = launcher + shlex.join(argv) if argv[:1] == ["train"] else None
    cfg = dataclasses.replace(cfg, **{k: v for k, v in given.items() if v is not None}, command=command,
                              model_overrides=overrides, resume=resume, overwrite=overwrite,
                              deterministic=deterministic, progress=progress)
    console = Console(stderr=True)
    with warnings_as_lines():  # bad data files etc. as clean `warning:` lines
        trainer = Trainer(cfg, console=console)
        try:
            trainer.run()
        finally:
            trainer.close()
    if trainer.is_main:
        _report(trainer, cfg, json_out)
    if trainer.stopped_by is not None:
        # saved, but not done: 128 + the signal (130 Ctrl-C, 143 SIGTERM), as shells report it
        raise typer.Exit(128 + int(trainer.stopped_by))


def _report(trainer: Any, cfg: TrainConfig, json_out: Path | None) -> None:
    summary = trainer.summary
    table = Table(title=f"tfcseg train: {cfg.out}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in summary.items():
        if value is None:
            continue
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    results_console(json_out).print(table)
    if json_out is not None:
        write_json(json_out, {"config": cfg.to_dict(), **summary})
