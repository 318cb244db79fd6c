"""Choose sparse MSDA's similarity threshold on a validation video, by evidence.

For a trained model, evaluates TFC at keyframe interval K with MSDA off and with MSDA on at
each threshold and gate (`TFCOptions.msda_gate`: the logit margin a label change by MSDA
needs to stand), and reports mIoU, wIoU, mVC8, mVC16, flicker and the share of points MSDA
updated. The recommendation is the setting of highest mIoU among those that update at most
--max-share of the points and are at least as good as MSDA off in mIoU and mVC8 (the issue's
rule for shipping MSDA on); none qualifies -> MSDA off.

    python scripts/calibrate_msda.py --model weights --data-root ../shared/data/camvid \
        --thresholds 0.5,0.6,0.7,0.8 --gates 0,1,2,3 --json msda_calibration.json

With --write, the choice is written into the model folder's config.json ("msda",
"msda_threshold" and "msda_gate" of "tfc"), atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import torch

from tfcseg.evaluate import evaluate_model
from tfcseg.hub.resolve import load_model, resolve_model_source
from tfcseg.io.atomic import atomic_write_text
from tfcseg.models.config import CONFIG_NAME

KEYS = ("miou", "wiou", "mvc8", "mvc16", "flicker", "msda_share", "fps")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("-k", "--keyframe-interval", type=int, default=4)
    ap.add_argument("--thresholds", default="0.3,0.4,0.5,0.6,0.7,0.8")
    ap.add_argument("--gates", default="0", help="comma-separated msda_gate values (0: no gate)")
    ap.add_argument("--max-share", type=float, default=0.25)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--write", action="store_true", help="write the choice into the model's config.json")
    args = ap.parse_args()

    model = load_model(args.model)
    base = model.config.tfc
    rows = []
    settings = [("off", None, dataclasses.replace(base, msda=False))]
    settings += [(t, float(g), dataclasses.replace(base, msda=True, msda_threshold=float(t), msda_gate=float(g)))
                 for t in args.thresholds.split(",") for g in args.gates.split(",")]
    for name, gate, options in settings:
        model.config.tfc = options  # what VideoSegmenter and TemporalFusion read
        with torch.inference_mode():
            m = evaluate_model(model, args.data_root, split=args.split, mode="tfc",
                               keyframe_interval=args.keyframe_interval, progress=False)
        row = {"msda": name, "gate": gate, **{k: m.get(k) for k in KEYS}}
        rows.append(row)
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)
    model.config.tfc = base

    off = rows[0]
    ok = [r for r in rows[1:] if (r["msda_share"] or 0) <= args.max_share
          and r["miou"] >= off["miou"] and r["mvc8"] >= off["mvc8"]]
    choice = max(ok, key=lambda r: (r["miou"], -r["msda_share"])) if ok else None
    print("choice:", f"MSDA on at threshold {choice['msda']}, gate {choice['gate']:g}" if choice
          else "MSDA off (no setting qualifies)")
    if args.json is not None:
        atomic_write_text(args.json, json.dumps({"keyframe_interval": args.keyframe_interval,
                                                 "max_share": args.max_share, "rows": rows,
                                                 "choice": choice and {"msda_threshold": float(choice["msda"]),
                                                                       "msda_gate": choice["gate"]}},
                                                indent=2) + "\n")
    if args.write:
        folder = resolve_model_source(args.model)
        path = folder / CONFIG_NAME
        data = json.loads(path.read_text())
        data["tfc"]["msda"] = choice is not None
        if choice is not None:
            data["tfc"]["msda_threshold"] = float(choice["msda"])
            data["tfc"]["msda_gate"] = choice["gate"]
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
