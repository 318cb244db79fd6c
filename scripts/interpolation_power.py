"""An experiment, not a feature: TFC with its interpolation weight sharpened from w to w^p.

TFC keeps ŵ = clamp(w, 0, 1) of the keyframe's decoded features at each point (the paper's
soft interpolation). This script patches `tfcseg.models.temporal.interpolation_weight` to
use ŵ^p instead (inference only) and evaluates TFC at keyframe interval K on a VSPW-layout
split with MSDA off and on at each gate, printing mIoU, mVC8, flicker and pedestrian IoU (if
the dataset has that class). The model card's "lead for the next model" table:

    python scripts/interpolation_power.py --data-root ../shared/data/camvid --powers 1,2,4 --gates 3,6
"""

from __future__ import annotations

import argparse

import torch

import tfcseg.models.temporal as temporal
from tfcseg.evaluate import evaluate_model
from tfcseg.hub.resolve import load_model

POWER = {"p": 1.0}
_plain = temporal.interpolation_weight


def sharpened(similarity: torch.Tensor, options):
    if options.interpolation == "soft":
        return similarity.clamp(0.0, 1.0).pow(POWER["p"])
    return _plain(similarity, options)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("-k", "--keyframe-interval", type=int, default=4)
    ap.add_argument("--powers", default="1,2,4")
    ap.add_argument("--gates", default="3,6")
    args = ap.parse_args()
    temporal.interpolation_weight = sharpened
    model = load_model(args.model)
    for p in (float(v) for v in args.powers.split(",")):
        POWER["p"] = p
        for msda, gate in [(False, None)] + [(None, float(g)) for g in args.gates.split(",")]:
            with torch.inference_mode():
                r = evaluate_model(model, args.data_root, split=args.split, mode="tfc",
                                   keyframe_interval=args.keyframe_interval, progress=False, msda=msda, msda_gate=gate)
            ped = r["per_class_iou"].get("pedestrian")
            print(f"w^{p:g} msda={'off' if msda is False else 'config'} gate={gate} miou={100 * r['miou']:.2f} "
                  f"mvc8={100 * r['mvc8']:.2f} flicker={100 * r['flicker']:.2f}"
                  + (f" pedestrian={100 * ped:.1f}" if ped is not None else ""), flush=True)


if __name__ == "__main__":
    main()
