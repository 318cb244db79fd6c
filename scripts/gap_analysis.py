"""Where TFC loses accuracy against per-frame SegFormer, and what sparse MSDA could win back.

One pass over a VSPW-layout split with a trained model, without label hysteresis (the model's
own outputs), at a fixed keyframe interval K. Every frame runs per-frame SegFormer; each
non-keyframe also runs TFC with sparse MSDA as the config says and with MSDA off, against its
keyframe. Reported:

- mIoU (and pedestrian IoU, where the class exists) of each, per distance to the keyframe
  (0 = the keyframe itself, where all three are SegFormer), over the frames at that distance;
- an oracle for sparse MSDA: TFC with MSDA off, whose points below a similarity threshold T
  take per-frame SegFormer's logits instead (what a perfect repair of exactly the points MSDA
  sees would give), for each T, with the share of points below T; mIoU and mVC8;
- at the points below the config's threshold: how often TFC's label equals per-frame
  SegFormer's, with MSDA off and on, and the mean KL(SegFormer || TFC) of their class
  distributions.

    python scripts/gap_analysis.py --data-root ../shared/data/camvid --json gap.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from tfcseg.data.masks import remap_label
from tfcseg.data.vspw import VSPWDataset
from tfcseg.hub.resolve import load_model
from tfcseg.io.atomic import atomic_write_text
from tfcseg.metrics import ConfusionMatrix, VideoConsistency
from tfcseg.postprocess import labels_from_logits
from tfcseg.segmenter import inference_size, preprocess

METHODS = ("segformer", "tfc", "msda_off")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--split", default="val")
    ap.add_argument("-k", "--keyframe-interval", type=int, default=4)
    ap.add_argument("--oracle-thresholds", default="0.6,0.7,0.8,0.9")
    ap.add_argument("--msda-gate", type=float, default=None, help="MSDA's gate (default: the config's)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    model = load_model(args.model).eval()
    opts = model.config.tfc
    if args.msda_gate is not None:
        opts = dataclasses.replace(opts, msda_gate=args.msda_gate)
    off = dataclasses.replace(opts, msda=False)
    thresholds = [float(t) for t in args.oracle_thresholds.split(",")]
    ds = VSPWDataset(args.data_root, args.split)
    n, k = ds.num_classes, args.keyframe_interval
    per_distance = {m: [ConfusionMatrix(n) for _ in range(k)] for m in METHODS}
    overall = {m: ConfusionMatrix(n) for m in METHODS}
    oracle = {t: ConfusionMatrix(n) for t in thresholds}
    vc = {name: VideoConsistency(8) for name in (*METHODS, *thresholds)}
    shares = {t: [] for t in thresholds}
    agree = {"msda_off": [0, 0], "tfc": [0, 0]}  # [equal labels, points] at MSDA's points
    kl = {"msda_off": 0.0, "tfc": 0.0}
    dev = torch.device("cpu")
    for video in ds.videos:
        for v in vc.values():
            v.start_video()
        state = None
        for i, record in enumerate(ds.frames(video)):
            pair = ds.read_frame(record)
            if pair is None:
                continue
            rgb, gt_raw = pair
            gt = remap_label(gt_raw, n, record.mask)
            size = rgb.shape[:2]
            with torch.inference_mode():
                px = preprocess(rgb, inference_size(*size, model.config.inference_short_side), dev, torch.float32)
                x1, x2 = model.low_level(px)
                seg, own_state = model.keyframe_from_low_level(tuple(px.shape[-2:]), x1, x2)
                logits = {"segformer": seg}
                if i % k == 0:
                    state = own_state
                    logits["tfc"] = logits["msda_off"] = seg
                    sim = None
                else:
                    sim = model.similarity(x1, x2, state, opts)
                    logits["tfc"], _ = model.non_keyframe_from_low_level(x1, x2, state, opts, sim)
                    logits["msda_off"], _ = model.non_keyframe_from_low_level(x1, x2, state, off, sim)
            labels = {m: labels_from_logits(lg.float(), size)[0].numpy().astype(np.int64) for m, lg in logits.items()}
            for m in METHODS:
                per_distance[m][i % k].update(labels[m], gt)
                overall[m].update(labels[m], gt)
                vc[m].update(labels[m] + 1, gt_raw)
            for t in thresholds:
                if sim is None:
                    mixed = labels["segformer"]
                else:
                    below = (sim < t)[:, None]  # [1, 1, h4, w4]
                    shares[t].append(float(below.float().mean()))
                    mixed = labels_from_logits(torch.where(below, seg, logits["msda_off"]).float(), size)[0].numpy().astype(np.int64)
                oracle[t].update(mixed, gt)
                vc[t].update(mixed + 1, gt_raw)
            if sim is not None and opts.msda:
                sel = (sim < opts.msda_threshold)[0]  # [h4, w4]
                q = seg[0].float().log_softmax(0)[:, sel]  # [K, points]
                for m in ("msda_off", "tfc"):
                    p = logits[m][0].float().log_softmax(0)[:, sel]
                    agree[m][0] += int((p.argmax(0) == q.argmax(0)).sum())
                    agree[m][1] += int(sel.sum())
                    kl[m] += float((q.exp() * (q - p)).sum())
    names = ds.class_names
    walker = names.index("pedestrian") if "pedestrian" in names else None

    def iou(cm: ConfusionMatrix) -> dict:
        out = {"miou": float(cm.miou())}
        if walker is not None:
            out["pedestrian"] = float(cm.per_class_iou()[walker])
        return out

    result = {
        "keyframe_interval": k, "tfc": dataclasses.asdict(opts),
        "overall": {m: {**iou(overall[m]), "mvc8": float(vc[m].value())} for m in METHODS},
        "per_distance": {m: [iou(cm) for cm in per_distance[m]] for m in METHODS},
        "oracle": [{"threshold": t, "share": float(np.mean(shares[t])) if shares[t] else 0.0, **iou(oracle[t]),
                    "mvc8": float(vc[t].value())} for t in thresholds],
        "at_msda_points": {m: {"agreement": a / max(total, 1), "kl": kl[m] / max(total, 1)}
                           for m, (a, total) in agree.items()},
    }
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    print("overall (no hysteresis): " + "; ".join(f"{m} {pct(r['miou'])} / mVC8 {pct(r['mvc8'])}"
                                                for m, r in result["overall"].items()))
    for d in range(k):
        print(f"distance {d}: " + "; ".join(f"{m} {pct(result['per_distance'][m][d]['miou'])}" for m in METHODS)
              + ("" if walker is None else " | pedestrian " + " ".join(
                  pct(result['per_distance'][m][d]['pedestrian']) for m in METHODS)))
    for r in result["oracle"]:
        print(f"oracle below {r['threshold']:g} ({100 * r['share']:.1f}% of points): mIoU {pct(r['miou'])} "
              f"mVC8 {pct(r['mvc8'])}")
    for m, r in result["at_msda_points"].items():
        print(f"at MSDA's points, {m}: label = SegFormer's on {pct(r['agreement'])}%, KL {r['kl']:.3f}")
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
