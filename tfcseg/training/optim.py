"""The optimiser and learning-rate schedule of SegFormer's recipe (AdamW, poly with warmup)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .config import TrainConfig


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


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over `param_groups` and its poly-with-warmup LambdaLR."""
    optimizer = torch.optim.AdamW(param_groups(model, cfg.lr, cfg.weight_decay, cfg.head_lr_mult),
                                  lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, PolyWarmup(cfg.iters, cfg.poly_power, cfg.min_lr_ratio, cfg.warmup_iters, cfg.warmup_ratio))
    return optimizer, scheduler


def restore_optimizer(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR,
                      optimizer_state: dict[str, Any], scheduler_state: dict[str, Any],
                      cfg: TrainConfig) -> None:
    """Load saved optimizer and scheduler states, with the lr, weight decay and betas taken
    from the current config (the same values when it is unchanged; a longer --iters, say,
    re-plans the rest of the schedule). The schedule's factor is never unpickled: it comes
    from the config too."""
    optimizer.load_state_dict(optimizer_state)
    sched = dict(scheduler_state)
    sched["lr_lambdas"] = [None] * len(optimizer.param_groups)
    scheduler.load_state_dict(sched)
    factor = scheduler.lr_lambdas[0]
    scheduler.base_lrs = [cfg.lr * (cfg.head_lr_mult if g["name"].startswith("head") else 1.0)
                          for g in optimizer.param_groups]
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
        group["initial_lr"] = base
        group["lr"] = base * factor(scheduler.last_epoch)  # as LambdaLR computes it
        group["betas"] = tuple(cfg.betas)
        if not group["name"].endswith("_no_decay"):
            group["weight_decay"] = cfg.weight_decay
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
