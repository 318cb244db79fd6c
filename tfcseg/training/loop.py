"""TFC training (the paper's sections 3.3 and 4) on one process or many (`torchrun`).

Each sample is a clip: a keyframe and the following frames of one keyframe interval. The
model runs the clip the way inference does (keyframe: full SegFormer; non-keyframes: stages
1-2, similarity, sparse MSDA, interpolation) and the loss is L_seg + L_bce (`losses.py`).

The recipe is SegFormer's (mmseg `segformer_mit-b*_8x1_1024x1024_160k` and the paper):
AdamW lr 6e-5, betas (0.9, 0.999), weight decay 0.01; the decoder and TFC's modules at 10x
the encoder's lr; no weight decay on norms and biases; poly schedule (power 1, min lr 0)
over all iterations, multiplied by a linear warmup from lr * 1e-6 over 1500 iterations
(mmcv's `warmup='linear'`); batch 1 clip per process; 160k iterations on 16 GPUs in the paper.

Run folders and checkpoints: checkpoints.py. Exact resume: the optimizer, scheduler, grad scaler, iteration, data epoch and position in
the epoch, and the RNG states of torch/numpy/python of every rank are saved. The data order
comes from `ResumableShardSampler` (a permutation per (seed, epoch), as DistributedSampler)
and the DataLoader draws its worker seeds from its own generator, so neither consumes the
global RNG that dropout and drop-path use.
"""


from __future__ import annotations

import errno
import json
import math
import signal
import threading
import time
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..errors import Terminated, TfcsegError, WriteError
from ..io.atomic import atomic_write_text
from ..io.lock import FolderLock
from ..models.checkpoint import TFC_PREFIX, load_state_dict_strict, read_checkpoint
from ..models.config import ModelConfig
from ..models.segformer import TFCSegFormer
from ..runtime import fast_bf16
from .checkpoints import (BEST_NAME, STATE_NAME, MetricsLog, prepare_out, read_state, rng_state, seed_all,
                          set_rng_state, write_checkpoint)
from .config import TrainConfig
from .distributed import Processes, ResumableShardSampler, auto_workers
from .losses import class_weights, tfc_loss
from .optim import build_optimizer, restore_optimizer

# Settings that may differ when resuming (where and how long to run, what to show); any other
# change would make the resumed run differ from an uninterrupted one.
RESUMABLE_CHANGES = {"resume", "overwrite", "progress", "workers", "max_minutes", "stop_at", "out",
                     "data_root", "eval_every", "save_every", "log_every", "command"}


# Settings that make the model (its architecture and starting weights): a resumed run
# continues the model in `last/`, so a change here is refused rather than ignored.
MODEL_SETTINGS = ("variant", "init", "model_overrides")


def _model_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """How the model settings of `new` differ from `old` (two `TrainConfig.to_dict()`s):
    ["variant b0 -> b1", "decoder_dim 32 -> 64", ...]."""
    def shown(v: Any) -> str:
        return "unset" if v is None else json.dumps(v, sort_keys=True)

    changes = []
    for key in ("variant", "init"):
        if old.get(key) != new.get(key):
            changes.append(f"{key} {shown(old.get(key))} -> {shown(new.get(key))}")
    a, b = old.get("model_overrides") or {}, new.get("model_overrides") or {}
    for key in sorted(a.keys() | b.keys()):
        if json.dumps(a.get(key), sort_keys=True) != json.dumps(b.get(key), sort_keys=True):
            changes.append(f"{key} {shown(a.get(key))} -> {shown(b.get(key))}")
    return changes


class NonFiniteLoss(TfcsegError):
    """The loss (or the gradient) became NaN/Inf; training stopped."""


class _ClipStep(nn.Module):
    """What DDP wraps: the model's clip forward returning plain tensors."""

    def __init__(self, model: TFCSegFormer, teacher: bool = False) -> None:
        super().__init__()
        self.model = model
        self.teacher = teacher  # also per-frame SegFormer's logits of the non-keyframes

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor | None]:
        out = self.model.clip_forward(frames, teacher=self.teacher)
        return out.logits, out.similarity, float(out.msda_share), out.teacher


class _Stopper:
    """First Ctrl-C / SIGTERM: finish the current iteration, save, stop (`signum` says which
    signal). Second: interrupt at once."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Stopper":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        self.requested = True
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class Trainer:
    """One training run. `Trainer(cfg).run()` trains and returns `<out>/last`; afterwards
    `model` is the trained model (identical on every rank) and `summary` the results."""

    def __init__(self, cfg: TrainConfig, console: Any = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.out = Path(cfg.out).expanduser()
        self.summary: dict[str, Any] = {}
        self._console = console
        self.procs = Processes(cfg.device)
        self.device, self.is_main = self.procs.device, self.procs.is_main
        self.world, self.rank = self.procs.world, self.procs.rank
        self.stopped_by: int | None = None  # the signal (SIGINT / SIGTERM) that stopped run()
        self._ended_cleanly = False  # run() returned normally (on every process alike)
        # One run per folder: rank 0 holds `<out>/.tfcseg.lock` until close().
        self._lock = FolderLock(self.out, "training run", "wait for it to end, or choose another --out")
        made_out = not self.out.exists()
        try:
            self._setup()
        except BaseException:
            self._lock.release()
            self.procs.close()
            if made_out and self.is_main:  # leave no empty folder behind a refused start
                try:
                    self.out.rmdir()
                except OSError:
                    pass
            raise

    def _setup(self) -> None:
        cfg = self.cfg
        if self.is_main:
            stale = self._lock.acquire()
            if stale is not None:
                self._say(f"[yellow]warning:[/] {self.out}: took over the lock of training process "
                          f"{stale}, which is no longer running")
            prepare_out(self.out, cfg.resume, cfg.overwrite)
        self.procs.barrier()
        self.log = MetricsLog(self.out)
        if cfg.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
        self._build_data()
        self._build_model()
        self.optimizer, self.scheduler = build_optimizer(self.model, cfg)
        amp = cfg.amp
        if amp == "auto":
            amp = "bf16" if fast_bf16(self.device) else "off"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp)
        self.amp = amp  # resolved: off | bf16 | fp16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp == "fp16")
        # progress: iterations done, data epoch and batch position in it, best val mIoU
        self.iteration, self.epoch, self.position, self.best_miou = 0, 0, 0, -1.0
        self._rng_to_restore: dict[str, Any] | None = None  # this rank's saved RNG state
        self._last_saved = -1  # iteration of the latest `last/`
        self._step_lr = float("nan")  # the encoder's lr at the latest step
        if cfg.resume:
            self._restore(read_state(self.out))

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> Path:
        """Train until `iters` (or `stop_at`, the time budget, Ctrl-C / SIGTERM); save `last/`."""
        cfg = self.cfg
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "train_config.json", json.dumps(cfg.to_dict(), indent=2) + "\n")
        # Every rank draws its own dropout / drop-path randomness from here on.
        seed_all(cfg.seed + 1 + self.rank)
        if self._rng_to_restore is not None:
            set_rng_state(self._rng_to_restore)
        end = cfg.iters if cfg.stop_at is None else min(cfg.iters, cfg.stop_at)
        start_iter, t0 = self.iteration, time.monotonic()
        window: dict[str, float] = {}  # sums of step stats since the last log line
        window_n, window_t = 0, time.monotonic()
        record: dict[str, Any] = {}  # the latest log record
        latest_eval: dict[str, Any] | None = None
        stopped = None
        display = _Display(self, start_iter, t0) if cfg.progress and self.is_main else None
        try:
            with _Stopper() as stopper:
                batches = self._batches()
                while self.iteration < end:
                    for k, v in self.step(next(batches)).items():
                        window[k] = window.get(k, 0.0) + v
                    window_n += 1
                    it = self.iteration
                    if it % cfg.log_every == 0 or it == end:
                        record = self._log_window(window, window_n, time.monotonic() - window_t)
                        window, window_n, window_t = {}, 0, time.monotonic()
                        if display:
                            display.log(record)
                    if display:
                        display.advance(it)
                    # Evaluation first (at every multiple of eval_every and at the very end),
                    # so that an interrupted and an uninterrupted run evaluate alike.
                    if cfg.eval_every and (it % cfg.eval_every == 0 or it == cfg.iters):
                        latest_eval = self.evaluate()
                    over_time = cfg.max_minutes is not None and (time.monotonic() - t0) / 60 >= cfg.max_minutes
                    if self.procs.any(stopper.requested or over_time) and it < end:
                        if stopper.requested:
                            stopped, self.stopped_by = "interrupted", stopper.signum
                        elif over_time:
                            stopped = "time budget reached"
                        else:  # another rank got the signal: launchers stop jobs with SIGTERM
                            stopped, self.stopped_by = "interrupted", signal.SIGTERM
                        break
                    if it % cfg.save_every == 0:
                        self.save_last()
                self.procs.broadcast_buffers(self.model)
                if self._last_saved != self.iteration:
                    self.save_last()
        except WriteError as exc:
            raise self._write_failed(exc) from None
        finally:
            if display:
                display.stop()
        elapsed = time.monotonic() - t0
        self.summary = {
            "iterations": self.iteration, "total_iterations": cfg.iters,
            "iterations_this_run": self.iteration - start_iter, "seconds": round(elapsed, 2),
            "it_per_s": (self.iteration - start_iter) / elapsed if elapsed > 0 else 0.0,
            "loss": record.get("loss"), "seg": record.get("seg"), "bce": record.get("bce"),
            "similarity_accuracy": record.get("sim_acc"), "similarity_majority": record.get("sim_majority"),
            "best_miou": self.best_miou if self.best_miou >= 0 else None,
            "final_miou": latest_eval.get("miou") if latest_eval and self.iteration == cfg.iters else None,
            "stopped": stopped or ("done" if self.iteration >= cfg.iters else "stop_at"),
            "checkpoint": str(self.out / "last"), "world_size": self.world, "amp": self.amp,
            "signal": signal.Signals(self.stopped_by).name if self.stopped_by else None,
        }
        if stopped:
            self._say(f"[yellow]{stopped}[/] at iteration {self.iteration}; "
                      f"continue with --resume (checkpoint {self.out / 'last'})")
        self._ended_cleanly = True  # every process got here together (close() may wait for all)
        return self.out / "last"

    def step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimisation step on a batch of clips; the step's statistics."""
        cfg = self.cfg
        frames = batch["frames"].to(self.device, non_blocking=True)  # [B, T, 3, c, c]
        labels = batch["labels"].to(self.device, non_blocking=True)  # [B, T, c, c]
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            logits, similarity, msda_share, teacher = self.step_module(frames)
        parts = tfc_loss(logits.float(), similarity.float(), labels, cfg.bce_weight, cfg.focal_gamma,
                         cfg.seg_loss, self.class_weights, cfg.consistency_weight,
                         teacher=teacher, distill_weight=cfg.distill_weight,
                         msda_threshold=self.model.config.tfc.msda_threshold)
        loss = parts.total
        if self.procs.any(not bool(torch.isfinite(loss))):
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
        if self.amp != "fp16" and not bool(torch.isfinite(grad_norm)):
            raise self._nonfinite("gradient", parts.seg, parts.bce, loss)
        # the encoder's lr (with the encoder frozen: what it would be, head lr / head_lr_mult)
        groups = self.optimizer.param_groups
        group = next((g for g in groups if g["name"].startswith("encoder")), groups[0])
        self._step_lr = group["lr"] / (cfg.head_lr_mult if group["name"].startswith("head") else 1.0)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.iteration += 1
        return {"loss": float(loss.detach()), "seg": float(parts.seg), "bce": float(parts.bce),
                "sim_correct": float(parts.sim_correct), "sim_valid": float(parts.sim_valid),
                "sim_same": float(parts.sim_same), "grad_norm": float(grad_norm), "msda_share": msda_share,
                "cons": float(parts.consistency),
                "distill": float(parts.distill) if parts.distill is not None else 0.0}

    def evaluate(self) -> dict[str, Any] | None:
        """Val metrics on rank 0 (others wait); keeps `best/` by mIoU."""
        self.procs.broadcast_buffers(self.model)
        result = None
        if self.is_main:
            from ..evaluate import evaluate_model

            cfg = self.cfg
            self.model.eval()
            try:
                with torch.no_grad():
                    metrics = evaluate_model(self.model, cfg.data_root, split=cfg.eval_split, mode="tfc",
                                             keyframe_interval=cfg.keyframe_interval,
                                             short_side=cfg.eval_short_side, progress=False)
            finally:
                self._train_mode()
            result = {k: float(v) for k, v in metrics.items()
                      if isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.log.write({"iter": self.iteration, "event": "eval", **result})
            miou = result.get("miou", float("nan"))
            if math.isfinite(miou) and miou > self.best_miou:
                self.best_miou = miou
                write_checkpoint(self.model, self.out / "best",
                                 {BEST_NAME: json.dumps({"iter": self.iteration, **result}, indent=2) + "\n"})
        self.procs.barrier()
        return result

    def save_last(self) -> None:
        """`<out>/last`: weights, config and the full training state (collective under DDP)."""
        state = self._state()
        if self.is_main:
            write_checkpoint(self.model, self.out / "last", {STATE_NAME: state})
        self._last_saved = self.iteration
        self.procs.barrier()

    def close(self) -> None:
        """Release the run folder and leave the process group if this trainer created it."""
        self._lock.release()
        self.procs.close(sync=self._ended_cleanly)

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- building ------------------------------------------------------------------------------
    def _build_data(self) -> None:
        from ..data import ClipDataset

        cfg = self.cfg
        root = Path(cfg.data_root).expanduser()
        self.dataset = ClipDataset(
            root, split=cfg.train_split, clip_len=cfg.keyframe_interval, crop=cfg.crop,
            base_size=tuple(cfg.base_size), ratio_range=tuple(cfg.ratio_range),
            cat_max_ratio=cfg.cat_max_ratio, flip=cfg.flip, photometric=cfg.photometric, seed=cfg.seed,
            video_rate_share=cfg.video_rate_share,
        )
        # class weights of the "balanced" loss, from the training labels' pixel counts
        self.class_weights = (class_weights(torch.from_numpy(self.dataset.dataset.label_counts()))
                              if cfg.seg_loss == "balanced" else None)
        need = self.world * cfg.batch_size
        if len(self.dataset) < need:
            raise TfcsegError(f"{root}: the {cfg.train_split} split has {len(self.dataset)} clips of "
                              f"{cfg.keyframe_interval} frames, fewer than one batch for every process ({need})")
        self.sampler = ResumableShardSampler(len(self.dataset), cfg.batch_size, self.rank, self.world, cfg.seed)
        self.workers = auto_workers(self.world) if cfg.workers < 0 else cfg.workers
        # Worker seeds come from this generator, never from the global RNG (exact resume).
        self._loader_gen = torch.Generator()
        self.loader = DataLoader(
            self.dataset, batch_size=cfg.batch_size, sampler=self.sampler, num_workers=self.workers,
            drop_last=True, pin_memory=self.device.type == "cuda", generator=self._loader_gen,
            persistent_workers=False,
        )

    def _build_model(self) -> None:
        cfg = self.cfg
        if cfg.resume:
            last = self.out / "last"
            mc, init_sd, _ = read_checkpoint(last)
            allow, source = (), last
        else:
            mc, init_sd, allow = self._initial_model()
            source = cfg.init
        mc.tfc_trained = True
        if cfg.train_only == "tfc" and not mc.tfc.msda:
            raise TfcsegError("train config: train_only tfc trains sparse MSDA, which this model's TFC "
                              "options switch off (tfc.msda false): nothing would learn", options=("train_only",))
        torch.manual_seed(cfg.seed)  # the same fresh initialisation on every rank
        model = TFCSegFormer(mc)
        if init_sd is not None:
            load_state_dict_strict(model, init_sd, source, allow_missing_prefixes=allow)
        self.model = model.to(self.device)
        if cfg.train_only == "tfc":  # a frozen SegFormer: no gradients, BatchNorm's statistics kept
            for name, p in self.model.named_parameters():
                p.requires_grad_(name.startswith(TFC_PREFIX))  # TFC's modules
        self._train_mode()
        step: nn.Module = _ClipStep(self.model, teacher=cfg.distill_weight > 0)
        if self.procs.distributed:
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

    def _train_mode(self) -> None:
        """Training mode, except a frozen SegFormer (train_only "tfc"), which runs as at
        inference (BatchNorm's running statistics, no dropout or drop path)."""
        self.model.train()
        if self.cfg.train_only == "tfc":
            self.model.encoder.eval()
            self.model.decoder.eval()

    def _initial_model(self) -> tuple[ModelConfig, dict[str, torch.Tensor] | None, tuple[str, ...]]:
        """(config, weights to load or None, prefixes the weights may lack) of a fresh start."""
        cfg, ds = self.cfg, self.dataset
        classes = dict(num_classes=int(ds.num_classes), class_names=list(ds.class_names),
                       palette=[list(map(int, c)) for c in ds.dataset.palette],
                       dataset=Path(cfg.data_root).expanduser().resolve().name, tfc_trained=True)
        overrides = dict(cfg.model_overrides)
        if cfg.init is None:
            try:
                mc = ModelConfig(variant=cfg.variant or "b0", **classes, **overrides)
            except (TypeError, ValueError) as exc:
                raise TfcsegError(f"train: invalid model settings: {exc}") from None
            return mc, None, ()
        from ..hub.resolve import resolve_model_source

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
        allow: tuple[str, ...] = (TFC_PREFIX,)
        generic = all(n == f"class_{i}" for i, n in enumerate(ck.class_names))
        same_classes = ck.num_classes == mc.num_classes and (
            generic or [n.lower() for n in ck.class_names] == [n.lower() for n in mc.class_names])
        has_decoder = any(k.startswith("decoder.") for k in sd)
        if cfg.train_only == "tfc" and not (has_decoder and same_classes):
            what = ("has no decoder" if not has_decoder else
                    f"classifies {ck.num_classes} classes, not the {mc.num_classes} of {classes['dataset']}")
            raise TfcsegError(f"{src}: the checkpoint {what}; train_only tfc keeps the SegFormer frozen, "
                              "so it must already segment this dataset's classes (train it fully first)",
                              options=("train_only",))
        if not has_decoder:
            self._say(f"{src}: encoder-only checkpoint; the decoder starts fresh")
            allow += ("decoder.",)
        elif not same_classes:
            self._say(f"[yellow]warning:[/] {src}: its classifier ({ck.num_classes} classes) is "
                      f"re-initialised for the {mc.num_classes} classes of {classes['dataset']}")
            sd = {k: v for k, v in sd.items() if not k.startswith("decoder.classifier.")}
            allow += ("decoder.classifier.",)
        return mc, sd, allow

    # ---- state ----------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        return {
            "format": "tfcseg-train-state", "version": 1,
            "iteration": self.iteration, "epoch": self.epoch, "position": self.position,
            "best_miou": self.best_miou, "world_size": self.world,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": self.procs.gather(rng_state()),
            "train_config": json.dumps(self.cfg.to_dict()),
        }

    def _restore(self, state: dict[str, Any]) -> None:
        old = json.loads(state["train_config"])
        new = self.cfg.to_dict()
        model_changes = _model_changes(old, new)
        if old.get("train_only", "all") != new["train_only"]:  # other parameters learn: another optimizer
            model_changes.append(f"train_only {old.get('train_only', 'all')} -> {new['train_only']}")
        if model_changes:
            raise TfcsegError(f"{self.out}: resuming cannot change the model ({'; '.join(model_changes)}); "
                              "resume with the settings the run started with, or start a new run with "
                              "overwrite=True", options=("overwrite",))
        defaults = TrainConfig().to_dict()  # a setting a run from an older tfcseg lacks had its default
        changed = sorted(k for k, v in new.items()
                         if k not in RESUMABLE_CHANGES and k not in MODEL_SETTINGS
                         and json.dumps(old.get(k, defaults.get(k))) != json.dumps(v))
        if changed:
            self._say(f"[yellow]warning:[/] resuming with changed settings: {', '.join(changed)} "
                      "(the run will not equal an uninterrupted one)")
        restore_optimizer(self.optimizer, self.scheduler, state["optimizer"], state["scheduler"], self.cfg)
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
            self.log.truncate(self.iteration)

    # ---- helpers ------------------------------------------------------------------------------
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

    def _nonfinite(self, what: str, seg, bce, loss) -> NonFiniteLoss:
        it = self.iteration + 1
        if self.is_main:
            self.log.write({"iter": it, "event": "nonfinite", "what": what, "seg": float(seg),
                            "bce": float(bce), "loss": float(loss.detach())})
        if self._last_saved >= 0:
            keep = f"the last good checkpoint is {self.out / 'last'} (iteration {self._last_saved})"
        else:
            keep = "no checkpoint had been written yet"
        return NonFiniteLoss(f"{self.out}: non-finite {what} at iteration {it} "
                             f"(seg {float(seg):.4g}, bce {float(bce):.4g}); training stopped, {keep}")

    def _write_failed(self, exc: WriteError) -> WriteError:
        """A failed write (a full disk...) as one line: what ran out, where the run stands."""
        fix = ("free some space" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "fix that")
        if self._last_saved >= 0:
            keep = (f"the checkpoint of iteration {self._last_saved} in {self.out / 'last'} is intact; "
                    f"{fix} and continue with resume=True")
        else:
            keep = f"no checkpoint was saved yet; {fix} and start again"
        return WriteError(f"{exc}; training stopped at iteration {self.iteration}, {keep}",
                          reason=exc.reason, errno=exc.errno, options=("resume",))

    def _log_window(self, window: dict[str, float], n: int, seconds: float) -> dict[str, Any]:
        keys = sorted(window)
        sums = dict(zip(keys + ["_n"], self.procs.sum([window[k] for k in keys] + [float(n)])))
        count = sums.pop("_n")
        valid = sums.pop("sim_valid")
        record = {
            "iter": self.iteration, "epoch": self.epoch,
            # the encoder's lr at the window's last step (head groups run at head_lr_mult x)
            "lr": self._step_lr,
            "loss": sums["loss"] / count, "seg": sums["seg"] / count, "bce": sums["bce"] / count,
            "cons": sums["cons"] / count,  # L_cons, whatever its weight in the loss
            "distill": sums["distill"] / count,  # L_distill (0 without a teacher)
            # grad norms are the same on every rank after DDP's averaging
            "grad_norm": sums["grad_norm"] / count,
            "msda_share": sums["msda_share"] / count,  # share of non-keyframe points MSDA updated
            # ŵ >= 0.5 predicts "same label"; the majority rate is the better constant guess
            "sim_acc": sums["sim_correct"] / valid if valid else None,
            "sim_majority": max(sums["sim_same"], valid - sums["sim_same"]) / valid if valid else None,
            "it_s": n / seconds if seconds > 0 else 0.0,
        }
        if self.is_main:
            self.log.write(record)
        return record

    def _say(self, msg: str) -> None:
        if self.is_main:
            self.console.print(msg, highlight=False, soft_wrap=True)  # one line, never wrapped

    @property
    def console(self):
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True)
        return self._console


class _Display:
    """Progress on rank 0: a live bar on a terminal, else one line per log window."""

    def __init__(self, trainer: Trainer, start_iter: int, t0: float) -> None:
        self.trainer, self.start_iter, self.t0 = trainer, start_iter, t0
        self.total = trainer.cfg.iters
        self.bar = None
        if trainer.console.is_terminal:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                       TimeElapsedColumn, TimeRemainingColumn)

            self.bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[stats]}"), TextColumn("{task.fields[speed]}"),
                                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                console=trainer.console, transient=False)
            self.bar.start()
            self.task = self.bar.add_task("train", total=self.total, completed=trainer.iteration,
                                          stats="", speed="")

    def log(self, r: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.update(self.task, stats=(f"loss {r['loss']:.3f} seg {r['seg']:.3f} "
                                              f"bce {r['bce']:.3f} lr {r['lr']:.2e}"),
                            speed=f"{r['it_s']:.2f} it/s")
            return
        it = r["iter"]
        rate = (it - self.start_iter) / max(time.monotonic() - self.t0, 1e-9)
        eta = (self.total - it) / rate if rate > 0 else float("inf")
        distill = f"distill {r['distill']:.4f} " if self.trainer.cfg.distill_weight else ""
        self.trainer._say(f"iter {it}/{self.total} loss {r['loss']:.4f} seg {r['seg']:.4f} "
                          f"bce {r['bce']:.4f} {distill}lr {r['lr']:.3e} {r['it_s']:.3f} it/s "
                          f"eta {timedelta(seconds=round(eta)) if math.isfinite(eta) else '?'}")

    def advance(self, it: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=it)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def train(cfg: TrainConfig, console: Any = None) -> Path:
    """Train TFC as `cfg` says and return the final checkpoint folder (`<out>/last`)."""
    trainer = Trainer(cfg, console=console)
    try:
        return trainer.run()
    finally:
        trainer.close()
