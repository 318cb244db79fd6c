"""TFC training on VSPW-layout data, one process or many (`torchrun`).

config.py       TrainConfig and presets
loop.py         Trainer: the loop (`run`), one step, evaluation, saving
losses.py       L = L_seg + L_bce
optim.py        AdamW groups, poly schedule with warmup, restoring them on resume
checkpoints.py  run folders, atomic checkpoints, training state, RNG, metrics log
distributed.py  processes and collectives; the resumable data order
"""

from .config import PRESETS, TrainConfig
from .loop import NonFiniteLoss, Trainer, train

__all__ = ["TrainConfig", "PRESETS", "Trainer", "train", "NonFiniteLoss"]
