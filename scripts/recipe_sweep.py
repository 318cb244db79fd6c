"""Controlled training runs (the evidence behind `--preset cpu`).

Each run: a 20-iteration throughput probe, then `iters = rate x minutes` so that the poly
schedule ends when the time is up (`max_minutes` as a safety), then `tfcseg eval` on val in
SegFormer mode and TFC K=4. A run whose overrides give `iters` skips the probe and runs
exactly that many iterations (equal samples: comparable to a timed run of the same batch
size whatever else the machine is doing). One JSON line per run is appended to
--out/sweep.jsonl.

    python scripts/recipe_sweep.py --data-root ../shared/data/camvid --out runs/sweep \
        --minutes 10 --runs base,lr1e-3_b8,lr1e-3_b8_bf16

Run it alone on the machine: equal minutes mean nothing when another job shares the cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import time
from pathlib import Path

import torch

from tfcseg.training import PRESETS, TrainConfig, Trainer
from tfcseg.evaluate import evaluate_model

# name -> TrainConfig overrides on top of --preset cpu as it stood before the sweep
BASE = {"crop": 256, "base_size": (360, 480), "keyframe_interval": 2, "warmup_iters": 100,
        "lr": 2e-4, "batch_size": 2, "save_every": 10**9, "log_every": 25, "eval_every": 0,
        "eval_short_side": 360, "workers": 1, "progress": False}
RUNS = {
    "base": {},
    "lr1e-3_b8": {"lr": 1e-3, "head_lr_mult": 1.0, "batch_size": 8, "warmup_iters": 50},
    "lr1e-3_b8_bf16": {"lr": 1e-3, "head_lr_mult": 1.0, "batch_size": 8, "warmup_iters": 50, "amp": "bf16"},
    "lr1e-3_b4_bf16": {"lr": 1e-3, "head_lr_mult": 1.0, "batch_size": 4, "warmup_iters": 50, "amp": "bf16"},
    "lr3e-4x10_b8_bf16": {"lr": 3e-4, "head_lr_mult": 10.0, "batch_size": 8, "warmup_iters": 50, "amp": "bf16"},
    "lr2e-3_b8_bf16": {"lr": 2e-3, "head_lr_mult": 1.0, "batch_size": 8, "warmup_iters": 50, "amp": "bf16"},
}


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        name = next(l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name"))
        flags = next(l for l in out.splitlines() if l.startswith("Flags"))
        extra = [f for f in ("avx512_bf16", "amx_bf16") if f in flags.split()]
        return f"{name} ({', '.join(extra) or 'no bf16 units'})"
    except Exception:  # noqa: BLE001
        return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--out", default="runs/sweep")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--runs", default=",".join(RUNS), help="names from RUNS, or JSON objects of "
                    "overrides (with a \"tag\"), separated by ';'")
    ap.add_argument("--extra", default="{}", help="JSON of TrainConfig overrides for every run")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    extra = json.loads(args.extra)
    for name in (args.runs.split(";") if args.runs.lstrip().startswith("{") else args.runs.split(",")):
        over = {**BASE, **RUNS[name], **extra} if name in RUNS else {**BASE, **json.loads(name), **extra}
        over = {k: tuple(v) if isinstance(v, list) else v for k, v in over.items()}
        tag = name if name in RUNS else over.pop("tag", "custom")
        if "iters" in over:
            iters, budget = int(over.pop("iters")), None
        else:
            probe = TrainConfig(data_root=args.data_root, out=str(out / f"{tag}.probe"), iters=10**6,
                                stop_at=20, overwrite=True, **over)
            t = Trainer(probe)
            t.run()
            iters = max(50, int(t.summary["it_per_s"] * 60 * args.minutes))
            budget = args.minutes * 1.1
        cfg = TrainConfig(data_root=args.data_root, out=str(out / tag), iters=iters, overwrite=True,
                          max_minutes=budget, **over)
        t0 = time.monotonic()
        tr = Trainer(cfg)
        tr.run()
        minutes = (time.monotonic() - t0) / 60
        model = tr.model.eval()
        rec = {"run": tag, "overrides": {k: v for k, v in over.items() if k not in BASE or BASE[k] != v},
               "cpu": cpu_name(), "torch_threads": torch.get_num_threads(), "minutes": round(minutes, 2),
               "iters": tr.iteration, "planned_iters": iters, "it_per_s": round(tr.summary["it_per_s"], 3)}
        with torch.no_grad():
            for mode in ("segformer", "tfc"):
                m = evaluate_model(model, args.data_root, split="val", mode=mode, keyframe_interval=4,
                                   short_side=360, progress=False)
                rec[mode] = {k: m[k] for k in ("miou", "wiou", "mvc8", "mvc16")}
                rec[mode]["per_class_iou"] = m["per_class_iou"]
                if mode == "tfc":
                    rec[mode]["msda_share"] = m.get("msda_share")
        with (out / "sweep.jsonl").open("a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps({k: rec[k] for k in ("run", "minutes", "iters")}), rec["segformer"]["miou"],
              rec["tfc"]["miou"], flush=True)


if __name__ == "__main__":
    main()
