"""Choose sparse MSDA's similarity threshold on a validation video, by evidence.

For a trained model, evaluates TFC at keyframe interval K, for each interpolation power p
(`TFCOptions.interpolation_power`: the soft weight is clamp(w, 0, 1)^p), with MSDA off and
with MSDA on at each threshold and gate (`TFCOptions.msda_gate`: the logit margin a label
change by MSDA needs to stand), and reports mIoU, wIoU, mVC8, mVC16, flicker and the share
of points MSDA updated. The recommendation is the setting of highest mIoU among MSDA off at
each p and the MSDA settings that update at most --max-share of the points and are at least
as good as MSDA off at the same p in mIoU and mVC8 (the issue's rule for shipping MSDA on),
all above a stability floor: --min-mvc8, or with --over-segformer D per-frame SegFormer's
mVC8 (without label hysteresis) + D. None reaches the floor -> the same choice without it.

Label hysteresis (`tfcseg.postprocess.LabelHysteresis`) is part of the grid with --hysteresis
M:Q,...: each pair is a margin M and the power Q of motion-aware hysteresis (0: the same margin
everywhere), and every setting above runs under each pair; MSDA on is compared with MSDA off at
the same p and hysteresis. Without it, every run uses the model's own hysteresis.

    python scripts/calibrate_msda.py --model weights --data-root ../shared/data/camvid \
        --powers 8,16 --thresholds 0.6,0.65,0.7 --gates 6,8 --hysteresis 0.75:0,1:3,1:4 \
        --over-segformer 0.03 --json msda_calibration.json

With --write, the choice is written into the model folder's config.json ("msda",
"msda_threshold", "msda_gate" and "interpolation_power" of "tfc", and with --hysteresis
"label_hysteresis" and "label_hysteresis_power"), atomically.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from tfcseg.errors import check_hysteresis_power, check_margin, check_power
from tfcseg.evaluate import evaluate_model
from tfcseg.hub.resolve import load_model, resolve_model_source
from tfcseg.io.atomic import atomic_write_text
from tfcseg.models.config import CONFIG_NAME

KEYS = ("miou", "wiou", "mvc8", "mvc16", "flicker", "msda_share", "fps")


def _group(row: dict) -> tuple:
    """What an MSDA-on row is compared within: its power and its hysteresis (if the grid has one)."""
    return row["power"], tuple(row["hysteresis"]) if row.get("hysteresis") is not None else None


def choose(rows: list[dict], max_share: float, min_mvc8: float = 0.0) -> dict | None:
    """The settings the rows support (see the module docstring), or None where no row reaches
    min_mvc8. Rows: {"power", "msda" ("off" or a threshold), "gate", "miou", "mvc8",
    "msda_share"} and optionally "hysteresis" [margin, power], with an "off" row for every
    power (and hysteresis). Candidates: the MSDA-on rows that meet the rule against MSDA off at
    their power and hysteresis, and every MSDA-off row; the one of highest mIoU wins (ties:
    MSDA on, as the rule says, then the smaller share). The result holds the "tfc" settings,
    and "label_hysteresis" and "label_hysteresis_power" where the rows have a hysteresis."""
    offs = {_group(r): r for r in rows if r["msda"] == "off"}
    stable = [r for r in rows if r["mvc8"] >= min_mvc8]
    ok = [r for r in stable if r["msda"] == "off" or (
        (r["msda_share"] or 0) <= max_share
        and r["miou"] >= offs[_group(r)]["miou"] and r["mvc8"] >= offs[_group(r)]["mvc8"])]
    if not ok:
        return None
    best = max(ok, key=lambda r: (r["miou"], r["msda"] != "off", -(r["msda_share"] or 0)))
    if best["msda"] == "off":
        out = {"msda": False, "interpolation_power": best["power"]}
    else:
        out = {"msda": True, "msda_threshold": float(best["msda"]), "msda_gate": best["gate"],
               "interpolation_power": best["power"]}
    if best.get("hysteresis") is not None:
        out["label_hysteresis"], out["label_hysteresis_power"] = best["hysteresis"]
    return out


def parse_hysteresis(text: str | None) -> list[tuple[float, float]] | None:
    """--hysteresis "M:Q,M:Q" -> [(margin, power), ...] (checked); None -> None."""
    if text is None:
        return None
    pairs = []
    for item in text.split(","):
        margin, _, power = item.partition(":")
        pairs.append((check_margin(float(margin), "hysteresis"), check_hysteresis_power(float(power or 0))))
    return pairs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("-k", "--keyframe-interval", type=int, default=4)
    ap.add_argument("--thresholds", default="0.3,0.4,0.5,0.6,0.7,0.8")
    ap.add_argument("--gates", default="0", help="comma-separated msda_gate values (0: no gate)")
    ap.add_argument("--powers", default=None, help="comma-separated interpolation powers (default: the config's)")
    ap.add_argument("--hysteresis", default=None, metavar="M:Q,...",
                    help="label hysteresis margins M with motion-aware powers Q (default: the model's own)")
    ap.add_argument("--max-share", type=float, default=0.25)
    ap.add_argument("--min-mvc8", type=float, default=0.0, help="mVC8 floor (a fraction: 0.949)")
    ap.add_argument("--over-segformer", type=float, default=None, metavar="D",
                    help="mVC8 floor: per-frame SegFormer's (hysteresis 0) + D (a fraction: 0.03)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--write", action="store_true", help="write the choice into the model's config.json")
    args = ap.parse_args()

    model = load_model(args.model)
    base = model.config.tfc
    powers = [float(p) for p in args.powers.split(",")] if args.powers else [base.interpolation_power]
    rows = []
    segformer = None
    if args.over_segformer is not None:
        with torch.inference_mode():
            m = evaluate_model(model, args.data_root, split=args.split, mode="segformer", hysteresis=0.0,
                               progress=False)
        segformer = {k: m.get(k) for k in ("miou", "mvc8", "flicker")}
        args.min_mvc8 = max(args.min_mvc8, segformer["mvc8"] + args.over_segformer)
        print(f"per-frame SegFormer (no hysteresis): mIoU {segformer['miou']:.4f} mVC8 {segformer['mvc8']:.4f}; "
              f"mVC8 floor {args.min_mvc8:.4f}", flush=True)
    for p in powers:
        check_power(p)  # before any run
    hystereses = parse_hysteresis(args.hysteresis) or [None]
    settings = []  # (power, "off" or the threshold, gate, hysteresis, evaluate_model's options)
    for h in hystereses:
        own = {} if h is None else dict(hysteresis=h[0], hysteresis_power=h[1])
        for p in powers:
            settings += [(p, "off", None, h, dict(msda=False, interpolation_power=p, **own))]
            settings += [(p, t, float(g), h, dict(msda=float(t), msda_gate=float(g), interpolation_power=p, **own))
                         for t in args.thresholds.split(",") for g in args.gates.split(",")]
    for power, name, gate, h, options in settings:
        with torch.inference_mode():
            m = evaluate_model(model, args.data_root, split=args.split, mode="tfc",
                               keyframe_interval=args.keyframe_interval, progress=False, **options)
        row = {"power": power, "msda": name, "gate": gate, **{k: m.get(k) for k in KEYS}}
        if h is not None:
            row["hysteresis"] = list(h)
        rows.append(row)
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)

    picked = choose(rows, args.max_share, args.min_mvc8)
    if picked is None:
        print(f"no setting reaches the mVC8 floor {args.min_mvc8:.4f}: choosing without it")
        picked = choose(rows, args.max_share)
    said = (f", label hysteresis {picked['label_hysteresis']:g} (power {picked['label_hysteresis_power']:g})"
            if "label_hysteresis" in picked else "")
    if picked["msda"]:
        print(f"choice: p {picked['interpolation_power']:g}, MSDA on at threshold {picked['msda_threshold']:g}, "
              f"gate {picked['msda_gate']:g}{said}")
    else:
        print(f"choice: p {picked['interpolation_power']:g}, MSDA off (no MSDA setting qualifies){said}")
    if args.json is not None:
        atomic_write_text(args.json, json.dumps({"keyframe_interval": args.keyframe_interval,
                                                 "max_share": args.max_share, "min_mvc8": args.min_mvc8,
                                                 "segformer": segformer,
                                                 "rows": rows, "choice": picked}, indent=2) + "\n")
    if args.write and picked is not None:
        folder = resolve_model_source(args.model)
        path = folder / CONFIG_NAME
        data = json.loads(path.read_text())
        top = {k: picked.pop(k) for k in ("label_hysteresis", "label_hysteresis_power") if k in picked}
        data["tfc"].update(picked)
        data.update(top)
        atomic_write_text(path, json.dumps(data, indent=2) + "\n")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
