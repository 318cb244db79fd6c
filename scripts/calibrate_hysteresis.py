"""Choose the label hysteresis margin of a model on a validation video, by evidence.

Evaluates per-frame SegFormer (and TFC at keyframe interval K, as the config says) with label
hysteresis at each margin, the same everywhere (not motion-aware: calibrate_msda.py --hysteresis
calibrates that jointly with TFC's settings) (`tfcseg.postprocess.LabelHysteresis`: a pixel keeps its previous
label unless another class leads it by the margin, in logits) and reports mIoU, mVC8, mVC16
and flicker. The recommended margin is the largest one whose per-frame SegFormer mIoU is at
most --max-miou-loss points below no hysteresis: stability that costs no accuracy.

    python scripts/calibrate_hysteresis.py --model weights --data-root ../shared/data/camvid \
        --margins 0,0.25,0.5,0.75,1 --json hysteresis_calibration.json

With --write, the choice is written into the model folder's config.json ("label_hysteresis",
with "label_hysteresis_power" 0: the same margin everywhere), atomically. Calibrated on labelled video at the frame rate the model will see (the margin
holds labels frame to frame, so its effect depends on the motion between frames).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from tfcseg.evaluate import evaluate_model
from tfcseg.hub.resolve import load_model, resolve_model_source
from tfcseg.io.atomic import atomic_write_text
from tfcseg.models.config import CONFIG_NAME

KEYS = ("miou", "wiou", "mvc8", "mvc16", "flicker", "msda_share")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("-k", "--keyframe-interval", type=int, default=4)
    ap.add_argument("--margins", default="0,0.25,0.5,0.75,1")
    ap.add_argument("--max-miou-loss", type=float, default=0.1, help="points of mIoU (default 0.1)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--write", action="store_true", help="write the choice into the model's config.json")
    args = ap.parse_args()

    model = load_model(args.model)
    margins = sorted({float(m) for m in args.margins.split(",")} | {0.0})
    rows = []
    for mode in ("segformer", "tfc"):
        for margin in margins:
            with torch.inference_mode():
                m = evaluate_model(model, args.data_root, split=args.split, mode=mode,
                                   keyframe_interval=args.keyframe_interval, progress=False, hysteresis=margin,
                                   hysteresis_power=0.0)  # the same margin everywhere
            row = {"mode": mode, "margin": margin, **{k: m.get(k) for k in KEYS}}
            rows.append(row)
            print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    per_frame = [r for r in rows if r["mode"] == "segformer"]
    floor = per_frame[0]["miou"] - args.max_miou_loss / 100
    choice = max(r["margin"] for r in per_frame if r["miou"] >= floor)
    print(f"choice (the same margin everywhere): label hysteresis {choice:g}")
    if args.json is not None:
        atomic_write_text(args.json, json.dumps({"keyframe_interval": args.keyframe_interval,
                                                 "max_miou_loss": args.max_miou_loss, "rows": rows,
                                                 "choice": choice}, indent=2) + "\n")
    if args.write:
        path = resolve_model_source(args.model) / CONFIG_NAME
        data = json.loads(path.read_text())
        data["label_hysteresis"] = choice
        data["label_hysteresis_power"] = 0.0  # the margin this table calibrated: the same everywhere
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
