"""What a training run is: `TrainConfig` (every setting, JSON-able) and named presets."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from ..data.transforms import VSPW_FRAME_SIZE
from ..errors import TfcsegError
from .losses import SEG_LOSSES

AMP_MODES = ("off", "bf16", "fp16", "auto")  # auto: bf16 where the hardware has it (runtime.fast_bf16)
# What a run trains: everything, or only TFC's modules (`temporal.*`: sparse MSDA) with the
# SegFormer (encoder, decoder, classifier) frozen in eval mode.
TRAIN_ONLY = ("all", "tfc")


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
    # weight of the temporal-consistency term (losses.py; 0 = the paper's loss)
    consistency_weight: float = 0.0
    # weight of L_distill (losses.py: per-frame SegFormer as the teacher of MSDA's points;
    # needs train_only "tfc"; 0 = off)
    distill_weight: float = 0.0
    # what learns: "all", or "tfc" (TFC's modules only, on a frozen SegFormer from `init`)
    train_only: str = "all"
    seg_loss: str = "ce"  # ce | ohem | balanced (see training/losses.py)
    # Data: keyframe + (keyframe_interval - 1) following frames per clip
    train_split: str = "train"
    keyframe_interval: int = 4
    crop: int = 480
    base_size: tuple[int, int] = VSPW_FRAME_SIZE  # (H, W) that ratio_range scales
    ratio_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 0.75
    flip: bool = True
    photometric: bool = True
    # share of clips made at video rate from one labelled frame (data/motion.py), the rest real
    video_rate_share: float = 0.0
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
            # the message starts with the field it is about: the CLI shows it as its flag
            field = msg.split(" ", 1)[0]
            return TfcsegError(f"train config: {msg}", options=(field,) if hasattr(self, field) else ())

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
        if self.head_lr_mult <= 0 or not math.isfinite(self.head_lr_mult):
            raise bad(f"head_lr_mult must be a positive number, not {self.head_lr_mult}")
        if self.warmup_iters < 0 or self.eval_every < 0:
            raise bad("warmup_iters and eval_every must be >= 0")
        if not 0 < self.warmup_ratio <= 1:
            raise bad(f"warmup_ratio must be in (0, 1], not {self.warmup_ratio}")
        if self.seg_loss not in SEG_LOSSES:
            raise bad(f"seg_loss must be one of {', '.join(SEG_LOSSES)}, not {self.seg_loss!r}")
        if not 0.0 <= self.consistency_weight < math.inf:
            raise bad(f"consistency_weight must be a number >= 0, not {self.consistency_weight}")
        if self.train_only not in TRAIN_ONLY:
            raise bad(f"train_only must be one of {', '.join(TRAIN_ONLY)}, not {self.train_only!r}")
        if not 0.0 <= self.distill_weight < math.inf:
            raise bad(f"distill_weight must be a number >= 0, not {self.distill_weight}")
        if self.distill_weight and self.train_only != "tfc":
            raise bad("distill_weight needs train_only tfc: the teacher is the frozen SegFormer, run per frame")
        if self.train_only == "tfc" and not (self.init or self.resume):
            raise bad("train_only tfc trains TFC's modules on a frozen SegFormer: give the SegFormer "
                      "with --init")
        if self.train_only == "tfc" and self.keyframe_interval < 2:
            raise bad("train_only tfc needs clips with non-keyframes (a keyframe interval of 2 or more): sparse "
                      "MSDA runs only there")
        if not 0.0 <= self.video_rate_share <= 1.0:
            raise bad(f"video_rate_share must be in [0, 1], not {self.video_rate_share}")
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
    # A small dataset (e.g. CamVid, a few hundred frames) on a CPU, from scratch: B0, 2 frames
    # a clip (keyframe + 1 non-keyframe) at 256x256 crops of 360x480-sized frames, half of
    # the clips at video rate (data/motion.py), batch 8 at lr 1e-3 on every parameter, bf16
    # where the CPU has it, a short warmup. Chosen by controlled runs (weights/README.md).
    "cpu": {"crop": 256, "base_size": (360, 480), "keyframe_interval": 2, "iters": 2000,
            "batch_size": 8, "lr": 1e-3, "head_lr_mult": 1.0, "warmup_iters": 50, "amp": "auto",
            "video_rate_share": 0.5, "seg_loss": "ohem", "save_every": 50, "log_every": 10, "eval_every": 0,
            "eval_short_side": 360},
}


