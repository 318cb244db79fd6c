"""TFC training (the paper's sections 3.3 and 4) on one process or many (`torchrun`).

Each sample is a clip: a keyframe and the following frames of one keyframe interval. The
model runs the clip the way inference does (keyframe: full SegFormer; non-keyframes: stages
1-2, similarity, sparse MSDA, interpolation) and the loss is L_seg + L_bce (`losses.py`).

The recipe is SegFormer's (mmseg `segformer_mit-b*_8x1_1024x1024_160k` and the paper):
AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01; the decoder and TFC's modules at 10x
the encoder's lr; no weight decay on norms and biases; poly schedule (power 1, min lr 0)
over all iterations, multiplied by a linear warmup from lr * 1e-6 over 1500 iterations
(mmcv's `warmup='linear'`); batch 1 clip per process; 160k iterations on 16 GPUs in the paper.

Output folder layout (only rank 0 writes):
    <out>/last/        config.json, model.safetensors, train_state.pt  (every --save-every, at the end)
    <out>/best/        config.json, model.safetensors, best.json       (best val mIoU, with --eval-every)
    <out>/metrics.jsonl one JSON object a line: training averages every --log-every, evaluations
    <out>/train_config.json the TrainConfig of the latest start
A checkpoint folder is written beside its final name and renamed into place, so a crash
never leaves a half-written `last/`. `train_state.pt` holds tensors and plain types only and
is loaded with `weights_only=True`.

Exact resume: the optimizer, scheduler, grad scaler, iteration, data epoch and position in
the epoch, and the RNG states of torch/numpy/python of every rank are saved. The data order
comes from `ResumableShardSampler` (a permutation per (seed, epoch), as DistributedSampler)
and the DataLoader draws its worker seeds from its own generator, so neither consumes the
global RNG that dropout and drop-path use.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from .checkpoint import load_state_dict_strict, read_checkpoint, save_checkpoint
from .config import ModelConfig
from .errors import TfcsegError
from .io_utils import atomic_write_text
from .losses import tfc_loss
from .model import TFCSegFormer

STATE_NAME = "train_state.pt"
METRICS_NAME = "metrics.jsonl"
# Test hook: a loss made NaN at this (1-based) iteration, to check the non-finite stop.
NAN_HOOK_ENV = "TFCSEG_TRAIN_INJECT_NAN_AT"
AMP_MODES = ("off", "bf16", "fp16")


@dataclass
class TrainConfig:
    """Everything a training run needs. The defaults are the paper's settings."""

    data_root: str = ""
    out: str = "runs/tfc"
    # Model: a variant (b0..b5), optionally initialised from a checkpoint. `variant=None`
    # takes the checkpoint's architecture, or b0 without one. `model_overrides` are extra
    # ModelConfig fields (tiny test models, TFC options as {"tfc": {...}}).
    variant: str | None = None
    init: str | None = None
    model_overrides: dict[str, Any] = field(default_factory=dict)
    # Schedule
    iters: int = 160_000
    batch_size: int = 1  # clips per process
    lr: float = 6e-5
    head_lr_mult: float = 10.0  # decoder and TFC modules
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    poly_power: float = 1.0
    min_lr_ratio: float = 0.0
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6
    grad_clip: float | None = None  # max gradient norm, None = no clipping
    bce_weight: float = 1.0
    focal_gamma: float = 1.0
    # Data: keyframe + (keyframe_interval - 1) following frames per clip
    train_split: str = "train"
    keyframe_interval: int = 4
    crop: int = 480
    base_size: tuple[int, int] = (480, 853)  # (H, W) that ratio_range scales
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip: bool = True
    photometric: bool = True
    workers: int = -1  # DataLoader workers per process; -1 = auto (0 on a 2-core machine)
    # Runtime
    amp: str = "off"  # off | bf16 | fp16
    device: str = "auto"  # auto | cpu | cuda
    sync_bn: bool = True  # SyncBatchNorm in the decoder under multi-GPU DDP
    deterministic: bool = False
    seed: int = 0
    # Checkpoints, logs, evaluation
    save_every: int = 2000
    log_every: int = 20
    eval_every: int = 0  # 0 = no periodic evaluation
    eval_split: str = "val"
    eval_short_side: int | None = None  # None = the model's inference size (480)
    max_minutes: float | None = None  # stop cleanly (checkpoint saved) after this long
    stop_at: int | None = None  # stop cleanly after this iteration (a run in parts)
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    command: str | None = None  # the command line, recorded in train_config.json (model cards)

    def validate(self) -> None:
        def bad(msg: str) -> TfcsegError:
            return TfcsegError(f"train config: {msg}")

        if not self.data_root:
            raise bad("no data root given")
        for name in ("iters", "batch_size", "keyframe_interval", "save_every", "log_every"):
            if int(getattr(self, name)) < 1:
                raise bad(f"{name} must be >= 1, not {getattr(self, name)}")
        if self.crop < 32:
            raise bad(f"crop must be >= 32 pixels, not {self.crop}")
        if self.eval_short_side is not None and 0 < self.eval_short_side < 32:
            raise bad(f"eval_short_side must be 0 (native) or >= 32 pixels, not {self.eval_short_side}")
        if self.lr <= 0 or not math.isfinite(self.lr):
            raise bad(f"lr must be a positive number, not {self.lr}")
        if self.warmup_iters < 0 or self.eval_every < 0:
            raise bad("warmup_iters and eval_every must be >= 0")
        if not 0 < self.warmup_ratio <= 1:
            raise bad(f"warmup_ratio must be in (0, 1], not {self.warmup_ratio}")
        if self.amp not in AMP_MODES:
            raise bad(f"amp must be one of {', '.join(AMP_MODES)}, not {self.amp!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise bad(f"device must be auto, cpu or cuda, not {self.device!r}")
        if len(self.base_size) != 2 or min(self.base_size) < 1:
            raise bad(f"base_size must be (H, W), not {self.base_size}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise bad(f"grad_clip must be > 0, not {self.grad_clip}")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise bad(f"max_minutes must be > 0, not {self.max_minutes}")
        if self.stop_at is not None and not 1 <= self.stop_at:
            raise bad(f"stop_at must be >= 1, not {self.stop_at}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Named starting points; CLI options override them.
PRESETS: dict[str, dict[str, Any]] = {
    # The paper: VSPW, 16 GPUs x 1 clip, 480x480 crops, 160k iterations.
    "paper": {},
    # A small dataset (e.g. CamVid, a few hundred frames) on a CPU: B0, 2 frames a clip
    # (keyframe + 1 non-keyframe) at 256x256 crops of 360x480-sized frames, a short
    # schedule with a short warmup and a larger lr for the short run.
    "cpu": {"crop": 256, "base_size": (360, 480), "keyframe_interval": 2, "iters": 2000,
            "warmup_iters": 100, "lr": 2e-4, "save_every": 100, "log_every": 10,
            "eval_every": 500, "eval_short_side": 360},
}


def poly_warmup_factor(it: int, total: int, power: float = 1.0, min_ratio: float = 0.0,
                       warmup_iters: int = 1500, warmup_ratio: float = 1e-6) -> float:
    """lr(it) / base lr at 0-based iteration `it`, as mmcv's PolyLrUpdaterHook with
    warmup='linear': poly (1 - it/total)^power (down to min_ratio), times the linear
    warmup 1 - (1 - it/warmup_iters)(1 - warmup_ratio) during the first warmup_iters."""
    poly = (1.0 - min(it, total) / total) ** power * (1.0 - min_ratio) + min_ratio
    if it < warmup_iters:
        poly *= 1.0 - (1.0 - it / warmup_iters) * (1.0 - warmup_ratio)
    return poly


class PolyWarmup:
    """The LambdaLR factor (a class, so that LambdaLR saves its settings as plain data)."""

    def __init__(self, total: int, power: float, min_ratio: float, warmup_iters: int,
                 warmup_ratio: float) -> None:
        self.total, self.power, self.min_ratio = total, power, min_ratio
        self.warmup_iters, self.warmup_ratio = warmup_iters, warmup_ratio

    def __call__(self, it: int) -> float:
        return poly_warmup_factor(it, self.total, self.power, self.min_ratio,
                                  self.warmup_iters, self.warmup_ratio)


def param_groups(model: nn.Module, lr: float, weight_decay: float,
                 head_lr_mult: float = 10.0) -> list[dict[str, Any]]:
    """AdamW groups of the SegFormer recipe: everything outside `encoder.` (decoder, TFC's
    modules) at head_lr_mult x lr; no weight decay on 1-D parameters (norms, biases)."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        head = not name.startswith("encoder.")
        decay = p.ndim > 1
        groups.setdefault((head, decay), []).append(p)
    out = []
    for (head, decay), params in sorted(groups.items()):
        out.append({"params": params, "lr": lr * (head_lr_mult if head else 1.0),
                    "weight_decay": weight_decay if decay else 0.0,
                    "name": f"{'head' if head else 'encoder'}{'' if decay else '_no_decay'}"})
    return out


class ResumableShardSampler(Sampler[int]):
    """DistributedSampler's order (a permutation seeded by seed + epoch, the tail dropped so
    every rank gets as many items, rank r taking items r, r + world, ...) that can start at
    a batch inside the epoch, so a resumed run reads the same clips without loading the ones
    it skips. Only whole batches are used."""

    def __init__(self, size: int, batch_size: int, rank: int = 0, world: int = 1, seed: int = 0) -> None:
        self.size, self.batch_size, self.rank, self.world, self.seed = size, batch_size, rank, world, seed
        self.batches_per_epoch = (size // world) // batch_size
        self.epoch = 0
        self.start_batch = 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.size, generator=g).tolist()
        mine = order[: (self.size // self.world) * self.world][self.rank::self.world]
        mine = mine[: self.batches_per_epoch * self.batch_size]
        return iter(mine[self.start_batch * self.batch_size:])

    def __len__(self) -> int:
        return max(0, self.batches_per_epoch - self.start_batch) * self.batch_size


class _ClipStep(nn.Module):
    """What DDP wraps: the model's clip forward returning plain tensors."""

    def __init__(self, model: TFCSegFormer) -> None:
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
        out = self.model.clip_forward(frames)
        return out.logits, out.similarity, float(out.msda_share)


class NonFiniteLoss(TfcsegError):
    """The loss (or the gradient) became NaN/Inf; training stopped."""


# ---- small helpers ---------------------------------------------------------------------


def _rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain types (loadable with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _swap_in(tmp: Path, final: Path) -> None:
    """Replace folder `final` by folder `tmp`: final -> .old, tmp -> final, drop .old.
    Between the two renames only `.old` exists; `_recover` puts it back after a crash."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def _recover(final: Path) -> None:
    """Undo a crash inside `_swap_in` or a checkpoint write: keep the last complete folder."""
    old = final.with_name(f".{final.name}.old")
    tmp = final.with_name(f".{final.name}.tmp")
    if not final.exists() and old.exists():
        os.replace(old, final)
    for stale in (old, tmp):
        if stale.exists():
            shutil.rmtree(stale)


def _dataset_palette(ds: Any) -> list[list[int]]:
    palette = getattr(ds, "palette", None)
    return palette if palette is not None else ds.dataset.palette


def _auto_workers(world: int) -> int:
    cpus = os.cpu_count() or 1
    return max(0, min(4, cpus // world - 2))


class _Stopper:
    """First Ctrl-C / SIGTERM: finish the current iteration, save, stop. Second: interrupt."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Stopper":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ---- the trainer -----------------------------------------------------------------------


class Trainer:
    """One training run. `Trainer(cfg).run()` trains and returns `<out>/last`; afterwards
    `model` is the trained model (identical on every rank) and `summary` the results."""

    def __init__(self, cfg: TrainConfig, console: Any = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.out = Path(cfg.out).expanduser()
        self.summary: dict[str, Any] = {}
        self._console = console
        self._setup_distributed()
        self._check_out()
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        self._build_data()
        self._build_model()
        self._build_optim()
        self.iteration, self.epoch, self.position, self.best_miou = 0, 0, 0, -1.0
        self._rng_to_restore: dict[str, Any] | None = None
        self._last_saved = -1
        self._step_lr = float("nan")
        if self._resuming:
            self._load_state()

    # ---- setup ----------------------------------------------------------------------
    def _setup_distributed(self) -> None:
        cfg = self.cfg
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        want_cuda = cfg.device.startswith("cuda") or (cfg.device == "auto" and torch.cuda.is_available())
        if want_cuda and not torch.cuda.is_available():
            raise TfcsegError("train: --device cuda asked for, but no CUDA GPU is available")
        if want_cuda:
            self.device = torch.device(f"cuda:{local_rank}" if self.world > 1 or cfg.device == "cuda"
                                       else cfg.device)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        self._owns_group = False
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if want_cuda else "gloo", timeout=timedelta(hours=2))
            self._owns_group = True
        self.distributed = self.world > 1
        if self.distributed:
            self.world, self.rank = dist.get_world_size(), dist.get_rank()
        self.is_main = self.rank == 0

    def _check_out(self) -> None:
        cfg = self.cfg
        last = self.out / "last"
        if self.is_main:
            _recover(last)
            _recover(self.out / "best")
        self._barrier()
        has_last = (last / STATE_NAME).is_file()
        if cfg.resume and not has_last:
            raise TfcsegError(f"{last}: nothing to resume (no {STATE_NAME}); start without --resume")
        has_run = has_last or (self.out / "best" / "model.safetensors").is_file()
        if has_run and not cfg.resume and not cfg.overwrite:
            raise TfcsegError(f"{self.out}: a training run exists already; use --resume to "
                              "continue it or --overwrite to start again")
        self._resuming = cfg.resume
        if self.is_main and not cfg.resume and self.out.exists():
            # A fresh start: nothing of an earlier run (replaced with --overwrite, or one that
            # never reached its first checkpoint) may mix with this one.
            for name in ("last", "best"):
                folder = self.out / name
                if not folder.exists():
                    continue
                ours = {"config.json", "model.safetensors", STATE_NAME, "best.json"}
                if not folder.is_dir() or not {p.name for p in folder.iterdir()} <= ours:
                    raise TfcsegError(f"{folder}: exists and is not a tfcseg checkpoint folder; "
                                      "choose another --out")
                shutil.rmtree(folder)
            (self.out / METRICS_NAME).unlink(missing_ok=True)
        self._barrier()

    def _build_data(self) -> None:
        from .data import ClipDataset

        cfg = self.cfg
        root = Path(cfg.data_root).expanduser()
        self.dataset = ClipDataset(
            root, split=cfg.train_split, clip_len=cfg.keyframe_interval, crop=cfg.crop,
            base_size=tuple(cfg.base_size), ratio_range=tuple(cfg.ratio_range),
            cat_max_ratio=cfg.cat_max_ratio, flip=cfg.flip, photometric=cfg.photometric, seed=cfg.seed,
        )
        need = self.world * cfg.batch_size
        if len(self.dataset) < need:
            raise TfcsegError(f"{root}: the {cfg.train_split} split has {len(self.dataset)} clips of "
                              f"{cfg.keyframe_interval} frames, fewer than one batch for every process ({need})")
        self.sampler = ResumableShardSampler(len(self.dataset), cfg.batch_size, self.rank, self.world, cfg.seed)
        self.workers = _auto_workers(self.world) if cfg.workers < 0 else cfg.workers
        # Worker seeds come from this generator, never from the global RNG (exact resume).
        self._loader_gen = torch.Generator()
        self.loader = DataLoader(
            self.dataset, batch_size=cfg.batch_size, sampler=self.sampler, num_workers=self.workers,
            drop_last=True, pin_memory=self.device.type == "cuda", generator=self._loader_gen,
            persistent_workers=False,
        )

    def _model_config(self) -> tuple[ModelConfig, dict[str, torch.Tensor] | None, tuple[str, ...]]:
        """(config, weights to load or None, prefixes the weights may lack)."""
        cfg, ds = self.cfg, self.dataset
        classes = dict(num_classes=int(ds.num_classes), class_names=list(ds.class_names),
                       palette=[list(map(int, c)) for c in _dataset_palette(ds)],
                       dataset=Path(cfg.data_root).expanduser().resolve().name, tfc_trained=True)
        overrides = dict(cfg.model_overrides)
        if cfg.init is None:
            try:
                mc = ModelConfig(variant=cfg.variant or "b0", **classes, **overrides)
            except (TypeError, ValueError) as exc:
                raise TfcsegError(f"train: invalid model settings: {exc}") from None
            return mc, None, ()
        from .hub import resolve_model_source

        src = resolve_model_source(cfg.init)
        ck, sd, foreign = read_checkpoint(src)
        if cfg.variant and cfg.variant.lower() != ck.variant:
            raise TfcsegError(f"{src}: the checkpoint is a {ck.variant} model, not {cfg.variant} "
                              "(leave --variant out to take the checkpoint's)")
        tfc = overrides.pop("tfc", None)
        try:
            mc = ck.replace(**classes, **overrides)
            if tfc is not None:
                mc = mc.replace(tfc=tfc)
        except (TypeError, ValueError) as exc:
            raise TfcsegError(f"train: invalid model settings: {exc}") from None
        allow: tuple[str, ...] = ("msda.",)
        generic = all(n == f"class_{i}" for i, n in enumerate(ck.class_names))
        same_classes = ck.num_classes == mc.num_classes and (
            generic or [n.lower() for n in ck.class_names] == [n.lower() for n in mc.class_names])
        if not any(k.startswith("decoder.") for k in sd):
            self._say(f"{src}: encoder-only checkpoint; the decoder starts fresh")
            allow += ("decoder.",)
        elif not same_classes:
            self._say(f"[yellow]warning:[/] {src}: its classifier ({ck.num_classes} classes) is "
                      f"re-initialised for the {mc.num_classes} classes of {classes['dataset']}")
            sd = {k: v for k, v in sd.items() if not k.startswith("decoder.classifier.")}
            allow += ("decoder.classifier.",)
        return mc, sd, allow

    def _build_model(self) -> None:
        cfg = self.cfg
        if self._resuming:
            last = self.out / "last"
            mc, sd, _ = read_checkpoint(last)
            init_sd, allow, source = sd, (), last
        else:
            mc, init_sd, allow = self._model_config()
            source = cfg.init
        mc.tfc_trained = True
        torch.manual_seed(cfg.seed)  # the same fresh initialisation on every rank
        model = TFCSegFormer(mc)
        if init_sd is not None:
            load_state_dict_strict(model, init_sd, source, allow_missing_prefixes=allow)
        self.model = model.to(self.device).train()
        step: nn.Module = _ClipStep(self.model)
        if self.distributed:
            if self.device.type == "cuda" and cfg.sync_bn:
                step = nn.SyncBatchNorm.convert_sync_batchnorm(step)
                self.model = step.model
            # A depthwise conv's weight gradient comes with other strides than DDP's bucket
            # view: a harmless copy, warned about at every backward otherwise.
            warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
            # Sparse MSDA runs (on zero queries if need be) in every training step, so every
            # parameter gets a gradient; only MSDA switched off, or clips without
            # non-keyframes, leave MSDA's parameters unused.
            unused = not self.model.config.tfc.msda or cfg.keyframe_interval < 2
            step = nn.parallel.DistributedDataParallel(
                step, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=unused)
        self.step_module = step

    def _build_optim(self) -> None:
        cfg = self.cfg
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, cfg.lr, cfg.weight_decay, cfg.head_lr_mult),
            lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, PolyWarmup(cfg.iters, cfg.poly_power, cfg.min_lr_ratio,
                                       cfg.warmup_iters, cfg.warmup_ratio))
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=cfg.amp == "fp16")

    # ---- state ----------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        rng = [None] * self.world
        if self.distributed:
            dist.all_gather_object(rng, _rng_state())
        else:
            rng = [_rng_state()]
        return {
            "format": "tfcseg-train-state", "version": 1,
            "iteration": self.iteration, "epoch": self.epoch, "position": self.position,
            "best_miou": self.best_miou, "world_size": self.world,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng, "train_config": json.dumps(self.cfg.to_dict()),
        }

    def _load_state(self) -> None:
        path = self.out / "last" / STATE_NAME
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable state is the user's file
            raise TfcsegError(f"{path}: not a readable training state ({str(exc).splitlines()[0]})") from None
        if not isinstance(state, dict) or state.get("format") != "tfcseg-train-state":
            raise TfcsegError(f"{path}: not a tfcseg training state")
        old = json.loads(state["train_config"])
        ignore = {"resume", "overwrite", "progress", "workers", "max_minutes", "stop_at", "out", "data_root",
                  "eval_every", "save_every", "log_every", "command"}
        changed = sorted(k for k, v in self.cfg.to_dict().items()
                         if k not in ignore and json.dumps(old.get(k)) != json.dumps(v))
        if changed:
            self._say(f"[yellow]warning:[/] resuming with changed settings: {', '.join(changed)} "
                      "(the run will not equal an uninterrupted one)")
        self.optimizer.load_state_dict(state["optimizer"])
        sched = state["scheduler"]
        sched["lr_lambdas"] = [None] * len(self.optimizer.param_groups)  # the factor comes from the current config
        self.scheduler.load_state_dict(sched)
        # The lr, weight decay and betas follow the current config (the same values when it
        # is unchanged; a longer --iters, say, re-plans the rest of the schedule).
        cfg, factor = self.cfg, self.scheduler.lr_lambdas[0]
        self.scheduler.base_lrs = [cfg.lr * (cfg.head_lr_mult if g["name"].startswith("head") else 1.0)
                                   for g in self.optimizer.param_groups]
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["initial_lr"] = base
            group["lr"] = base * factor(self.scheduler.last_epoch)  # as LambdaLR computes it
            group["betas"] = tuple(cfg.betas)
            if not group["name"].endswith("_no_decay"):
                group["weight_decay"] = cfg.weight_decay
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        self.scaler.load_state_dict(state["scaler"])
        self.iteration, self.epoch, self.position = state["iteration"], state["epoch"], state["position"]
        self.best_miou = state["best_miou"]
        self._last_saved = self.iteration
        if state["world_size"] == self.world:
            self._rng_to_restore = state["rng"][self.rank]
        else:
            self._say(f"[yellow]warning:[/] the run was saved with {state['world_size']} processes, "
                      f"resumed with {self.world}: data order and random state start afresh")
            self.position = 0
            self.epoch += 1
        if self.is_main:
            self._truncate_metrics(self.iteration)

    def _truncate_metrics(self, upto: int) -> None:
        path = self.out / METRICS_NAME
        if not path.is_file():
            return
        keep = []
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if rec.get("iter", 0) <= upto:
                keep.append(line)
        atomic_write_text(path, "".join(k + "\n" for k in keep))

    def _save_last(self) -> None:
        state = self._state()  # collective under DDP (gathers every rank's RNG state)
        if self.is_main:
            last = self.out / "last"
            tmp = last.with_name(".last.tmp")
            if tmp.exists():
                shutil.rmtree(tmp)
            save_checkpoint(self.model, tmp)
            torch.save(state, tmp / STATE_NAME)
            _swap_in(tmp, last)
        self._last_saved = self.iteration
        self._barrier()

    def _save_best(self, metrics: dict[str, Any]) -> None:
        best = self.out / "best"
        tmp = best.with_name(".best.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        save_checkpoint(self.model, tmp)
        atomic_write_text(tmp / "best.json", json.dumps({"iter": self.iteration, **metrics}, indent=2) + "\n")
        _swap_in(tmp, best)

    # ---- distributed helpers ----------------------------------------------------------
    def _barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def _any(self, flag: bool) -> bool:
        """True on every rank if `flag` is true on any rank."""
        if not self.distributed:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def _sum(self, values: list[float]) -> list[float]:
        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def _sync_buffers(self) -> None:
        """BatchNorm running statistics from rank 0 everywhere (DDP does so at each forward;
        after the last step the ranks' own updates differ)."""
        if self.distributed:
            for b in self.model.buffers():
                dist.broadcast(b, 0)

    def _say(self, msg: str) -> None:
        if self.is_main:
            self.console.print(msg, highlight=False)

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True)
        return self._console

    def _log(self, record: dict[str, Any]) -> None:
        if self.is_main:
            path = self.out / METRICS_NAME
            with path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    # ---- evaluation ---------------------------------------------------------------------
    def _evaluate(self) -> dict[str, Any] | None:
        """Val metrics on rank 0 (others wait); keeps `best/` by mIoU."""
        self._sync_buffers()
        result = None
        if self.is_main:
            from .evaluate import evaluate_model

            cfg = self.cfg
            self.model.eval()
            try:
                with torch.no_grad():
                    metrics = evaluate_model(self.model, cfg.data_root, split=cfg.eval_split, mode="tfc",
                                             keyframe_interval=cfg.keyframe_interval,
                                             short_side=cfg.eval_short_side, progress=False)
            finally:
                self.model.train()
            result = {k: float(v) for k, v in metrics.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self._log({"iter": self.iteration, "event": "eval", **result})
            miou = result.get("miou", float("nan"))
            if math.isfinite(miou) and miou > self.best_miou:
                self.best_miou = miou
                self._save_best(result)
        self._barrier()
        return result

    # ---- the loop -----------------------------------------------------------------------
    def _batches(self):
        """Endless (epoch, batch) stream from the saved data position on."""
        while True:
            self.sampler.set_epoch(self.epoch, self.position)
            self.dataset.set_epoch(self.epoch)
            self._loader_gen.manual_seed(self.cfg.seed * 1_000_003 + self.epoch * 1009 + self.rank)
            for batch in self.loader:
                self.position += 1
                yield batch
            self.epoch += 1
            self.position = 0

    def _step(self, batch: dict[str, torch.Tensor], nan_at: int) -> dict[str, float]:
        cfg = self.cfg
        frames = batch["frames"].to(self.device, non_blocking=True)  # [B, T, 3, c, c]
        labels = batch["labels"].to(self.device, non_blocking=True)  # [B, T, c, c]
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            logits, similarity, msda_share = self.step_module(frames)
        parts = tfc_loss(logits.float(), similarity.float(), labels, cfg.bce_weight, cfg.focal_gamma)
        loss = parts.total
        if nan_at == self.iteration + 1:
            loss = loss * float("nan")
        if self._any(not bool(torch.isfinite(loss))):
            raise self._nonfinite("loss", parts.seg, parts.bce, loss)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        if cfg.grad_clip is not None:
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        else:
            grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
        # DDP averaged the gradients, so every rank sees the same norm. fp16's scaler skips
        # the step itself on an overflow.
        if cfg.amp != "fp16" and not bool(torch.isfinite(grad_norm)):
            raise self._nonfinite("gradient", parts.seg, parts.bce, loss)
        self._step_lr = next(g["lr"] for g in self.optimizer.param_groups if g["name"].startswith("encoder"))
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.iteration += 1
        return {"loss": float(loss.detach()), "seg": float(parts.seg), "bce": float(parts.bce),
                "sim_correct": float(parts.sim_correct), "sim_valid": float(parts.sim_valid),
                "sim_same": float(parts.sim_same), "grad_norm": float(grad_norm), "msda_share": msda_share}

    def _nonfinite(self, what: str, seg, bce, loss) -> NonFiniteLoss:
        it = self.iteration + 1
        self._log({"iter": it, "event": "nonfinite", "what": what, "seg": float(seg), "bce": float(bce),
                   "loss": float(loss.detach())})
        if self._last_saved >= 0:
            keep = f"the last good checkpoint is {self.out / 'last'} (iteration {self._last_saved})"
        else:
            keep = "no checkpoint had been written yet"
        return NonFiniteLoss(f"{self.out}: non-finite {what} at iteration {it} "
                             f"(seg {float(seg):.4g}, bce {float(bce):.4g}); training stopped, {keep}")

    def run(self) -> Path:
        cfg = self.cfg
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "train_config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
        # Every rank draws its own dropout / drop-path randomness from here on.
        _seed_all(cfg.seed + 1 + self.rank)
        if self._rng_to_restore is not None:
            _set_rng_state(self._rng_to_restore)
        nan_at = int(os.environ.get(NAN_HOOK_ENV, "0") or 0)
        end = cfg.iters if cfg.stop_at is None else min(cfg.iters, cfg.stop_at)
        start_iter, t0 = self.iteration, time.monotonic()
        window: dict[str, float] = {}
        window_n, window_t = 0, time.monotonic()
        last_record: dict[str, Any] = {}
        stopped = None
        latest_eval: dict[str, Any] | None = None  # the latest evaluation
        # A live bar on a terminal; one line per log window when the output is a file.
        show = cfg.progress and self.is_main
        progress = self._progress() if show and self.console.is_terminal else None
        plain = show and progress is None
        task = None
        if progress is not None:
            progress.start()
            task = progress.add_task("train", total=cfg.iters, completed=self.iteration, stats="", speed="")
        try:
            with _Stopper() as stopper:
                batches = self._batches()
                while self.iteration < end:
                    stats = self._step(next(batches), nan_at)
                    for k, v in stats.items():
                        window[k] = window.get(k, 0.0) + v
                    window_n += 1
                    it = self.iteration
                    if it % cfg.log_every == 0 or it == end:
                        last_record = self._log_window(window, window_n, time.monotonic() - window_t)
                        window, window_n, window_t = {}, 0, time.monotonic()
                        if plain:
                            rate = (it - start_iter) / max(time.monotonic() - t0, 1e-9)
                            eta = (cfg.iters - it) / rate if rate > 0 else float("inf")
                            self._say(f"iter {it}/{cfg.iters} loss {last_record['loss']:.4f} "
                                      f"seg {last_record['seg']:.4f} bce {last_record['bce']:.4f} "
                                      f"lr {last_record['lr']:.3e} {last_record['it_s']:.3f} it/s "
                                      f"eta {timedelta(seconds=round(eta)) if math.isfinite(eta) else '?'}")
                        if progress is not None:
                            progress.update(task, stats=(f"loss {last_record['loss']:.3f} seg {last_record['seg']:.3f} "
                                                         f"bce {last_record['bce']:.3f} lr {last_record['lr']:.2e}"),
                                            speed=f"{last_record['it_s']:.2f} it/s")
                    if progress is not None:
                        progress.update(task, completed=it)
                    # Evaluation first (at every multiple of eval_every and at the very
                    # end), so that an interrupted and an uninterrupted run evaluate alike.
                    if cfg.eval_every and (it % cfg.eval_every == 0 or it == cfg.iters):
                        latest_eval = self._evaluate()
                    over_time = cfg.max_minutes is not None and (time.monotonic() - t0) / 60 >= cfg.max_minutes
                    if self._any(stopper.requested or over_time) and it < end:
                        stopped = "interrupted" if stopper.requested else "time budget reached"
                        break
                    if it % cfg.save_every == 0:
                        self._save_last()
                self._sync_buffers()
                if self._last_saved != self.iteration:
                    self._save_last()
        finally:
            if progress is not None:
                progress.stop()
        elapsed = time.monotonic() - t0
        self.summary = {
            "iterations": self.iteration, "total_iterations": cfg.iters,
            "iterations_this_run": self.iteration - start_iter, "seconds": round(elapsed, 2),
            "it_per_s": (self.iteration - start_iter) / elapsed if elapsed > 0 else 0.0,
            "loss": last_record.get("loss"), "seg": last_record.get("seg"), "bce": last_record.get("bce"),
            "similarity_accuracy": last_record.get("sim_acc"),
            "similarity_majority": last_record.get("sim_majority"),
            "best_miou": self.best_miou if self.best_miou >= 0 else None,
            "final_miou": latest_eval.get("miou") if latest_eval and self.iteration == cfg.iters else None,
            "stopped": stopped or ("done" if self.iteration >= cfg.iters else "stop_at"),
            "checkpoint": str(self.out / "last"), "world_size": self.world,
        }
        if stopped:
            self._say(f"[yellow]{stopped}[/] at iteration {self.iteration}; "
                      f"continue with --resume (checkpoint {self.out / 'last'})")
        return self.out / "last"

    def _log_window(self, window: dict[str, float], n: int, seconds: float) -> dict[str, Any]:
        keys = sorted(window)
        sums = dict(zip(keys + ["_n"], self._sum([window[k] for k in keys] + [float(n)])))
        count = sums.pop("_n")
        valid = sums.pop("sim_valid")
        record = {
            "iter": self.iteration, "epoch": self.epoch,
            # the encoder's lr at the window's last step (head groups run at head_lr_mult x)
            "lr": self._step_lr,
            "loss": sums["loss"] / count, "seg": sums["seg"] / count, "bce": sums["bce"] / count,
            # grad norms are the same on every rank after DDP's averaging
            "grad_norm": sums["grad_norm"] / count,
            "msda_share": sums["msda_share"] / count,  # share of non-keyframe points MSDA updated
            # ŵ >= 0.5 predicts "same label"; the majority rate is the better constant guess
            "sim_acc": sums["sim_correct"] / valid if valid else None,
            "sim_majority": max(sums["sim_same"], valid - sums["sim_same"]) / valid if valid else None,
            "it_s": n / seconds if seconds > 0 else 0.0,
        }
        self._log(record)
        return record

    def _progress(self):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        return Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[stats]}"), TextColumn("{task.fields[speed]}"),
                        TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                        console=self.console, transient=False)

    def close(self) -> None:
        """Leave the process group if this trainer created it."""
        if self._owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self._owns_group = False


def train(cfg: TrainConfig, console: Any = None) -> Path:
    """Train TFC as `cfg` says and return the final checkpoint folder (`<out>/last`)."""
    trainer = Trainer(cfg, console=console)
    try:
        return trainer.run()
    finally:
        trainer.close()
