"""The model card's results table: a model on a VSPW-layout split in every mode that matters.

Rows: per-frame SegFormer and TFC at K=4 without label hysteresis (the paper's comparison),
then with the model's label hysteresis (what `tfcseg` runs by default): per-frame SegFormer,
feature reuse, TFC with MSDA off, on as shipped (interpolation power, threshold and gate from
the config), on without the gate and with the paper's interpolation weight (p = 1), at
keyframe intervals 4 and 8, and adaptive keyframes, and per-frame SegFormer and shipped TFC
with the same hysteresis margin everywhere (the previous release's 0.75, not motion-aware);
columns: mIoU,
wIoU, mVC8, mVC16, flicker, frames/s, keyframe share, MSDA share; then per-class IoU of
SegFormer and of the shipped setting. Writes markdown to stdout and everything to --json.

    python scripts/camvid_table.py --data-root ../shared/data/camvid --json camvid_table.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from tfcseg.evaluate import evaluate_model
from tfcseg.hub.resolve import load_model
from tfcseg.io.atomic import atomic_write_text

ROWS = [  # (label, mode, keyframe interval, msda, msda gate, hysteresis, interpolation power,
    # hysteresis power); None: the config's
    ("SegFormer per frame, no hysteresis", "segformer", 1, None, None, 0.0, None, None),
    ("TFC, K=4, MSDA as shipped, no hysteresis", "tfc", 4, None, None, 0.0, None, None),
    ("TFC, K=4, MSDA off, no hysteresis", "tfc", 4, False, None, 0.0, None, None),
    ("SegFormer per frame", "segformer", 1, None, None, None, None, None),
    ("Feature reuse, K=4", "reuse", 4, None, None, None, None, None),
    ("TFC, K=4, MSDA off", "tfc", 4, False, None, None, None, None),
    ("TFC, K=4, shipped settings", "tfc", 4, None, None, None, None, None),
    ("TFC, K=4, MSDA on, no gate", "tfc", 4, True, 0.0, None, None, None),
    ("TFC, K=4, the paper's interpolation weight (p = 1)", "tfc", 4, None, None, None, 1.0, None),
    ("SegFormer per frame, hysteresis 0.75 everywhere", "segformer", 1, None, None, 0.75, None, 0.0),
    ("TFC, K=4, shipped settings but hysteresis 0.75 everywhere", "tfc", 4, None, None, 0.75, None, 0.0),
    ("Feature reuse, K=8", "reuse", 8, None, None, None, None, None),
    ("TFC, K=8, MSDA off", "tfc", 8, False, None, None, None, None),
    ("TFC, K=8, MSDA on", "tfc", 8, True, None, None, None, None),
    ("TFC, auto keyframes", "tfc", "auto", None, None, None, None, None),
]
N_K4 = 11  # the rows before the K=8 ones (--msda-thresholds rows go after them)
SHIPPED = "TFC, K=4, shipped settings"
BASELINE = "SegFormer per frame, no hysteresis"


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("--msda-thresholds", default="", help="also TFC K=4 with MSDA on at these "
                    "thresholds, e.g. 0.6,0.7")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    model = load_model(args.model)
    shipped = model.config.tfc
    extra = [(f"TFC, K=4, MSDA on at {t}", "tfc", 4, float(t), None, None, None, None)
             for t in args.msda_thresholds.split(",") if t]
    rows = []
    for label, mode, k, msda, gate, hysteresis, power, hysteresis_power in ROWS[:N_K4] + extra + ROWS[N_K4:]:
        with torch.inference_mode():
            m = evaluate_model(model, args.data_root, split=args.split, mode=mode, keyframe_interval=k,
                               progress=False, msda=msda, msda_gate=gate, hysteresis=hysteresis,
                               hysteresis_power=hysteresis_power, interpolation_power=power)
        rows.append({"row": label, "mode": mode, "keyframe_interval": k,
                     "msda": (m["msda_threshold"] is not None) if mode == "tfc" else None, **m})
        print(f"{label}: mIoU {pct(m['miou'])} mVC8 {pct(m['mvc8'])} flicker {pct(m['flicker'])}", flush=True)
    motion = model.config.label_hysteresis_power
    print(f"\nlabel hysteresis: {model.config.label_hysteresis:g}"
          + (f" x (similarity to the previous frame)^{motion:g}" if motion else "")
          + " where not said otherwise; interpolation "
          f"weight clamp(w, 0, 1)^{shipped.interpolation_power:g}; "
          + (f"MSDA below {shipped.msda_threshold:g}, gate {shipped.msda_gate:g}" if shipped.msda else "MSDA off"))
    print("\n| method | mIoU | wIoU | mVC8 | mVC16 | flicker | frames/s | keyframes | MSDA share |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        share = r.get("msda_share")
        print(f"| {r['row']} | {pct(r['miou'])} | {pct(r['wiou'])} | {pct(r['mvc8'])} | {pct(r['mvc16'])} "
              f"| {pct(r['flicker'])} | {r['fps']:.2f} | {pct(r.get('keyframe_share'))}% "
              f"| {pct(share) + '%' if share else '-'} |")
    names = list(rows[0]["per_class_iou"])
    by_row = {r["row"]: r for r in rows}
    print("\n| class | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for r in (by_row[BASELINE], by_row["SegFormer per frame"], by_row[SHIPPED]):
        print(f"| {r['row']} | " + " | ".join(pct(r["per_class_iou"][n]) for n in names) + " |")
    if args.json is not None:
        atomic_write_text(args.json, json.dumps({"shipped_tfc": dataclasses.asdict(shipped),
                                                 "label_hysteresis": model.config.label_hysteresis,
                                                 "label_hysteresis_power": model.config.label_hysteresis_power,
                                                 "rows": rows},
                                                indent=2) + "\n")


if __name__ == "__main__":
    main()
