"""What label hysteresis costs per frame: off, the same margin everywhere, and motion-aware.

Runs `VideoSegmenter` over the first frames of a video without label hysteresis, with margin M
the same everywhere (power 0) and with motion-aware hysteresis (power Q: each frame's unit
features and their similarity to the previous frame's on top), taking turns, in one process,
and reports the median time per frame of each and the ratios to no hysteresis, for TFC at K
and per-frame SegFormer. Timings include the labels at frame size, as `tfcseg segment` makes
them.

    python scripts/hysteresis_cost.py --video examples/demo.mp4 --size 480x853 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import cv2
import torch

from tfcseg.hub.resolve import load_model
from tfcseg.io.video import open_frames
from tfcseg.segmenter import VideoSegmenter


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--video", required=True)
    ap.add_argument("--size", default="480x853", help="HxW the frames are resized to (their inference size)")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-k", "--keyframe-interval", type=int, default=4)
    ap.add_argument("--margin", type=float, default=1.0)
    ap.add_argument("--power", type=float, default=4.0)
    args = ap.parse_args()
    if not args.power > 0:
        ap.error(f"--power {args.power}: compare a power above 0 with the same margin everywhere (0)")
    h, w = (int(v) for v in args.size.lower().split("x"))
    model = load_model(args.model).eval()
    with open_frames(args.video) as source:
        frames = []
        for f in source:
            frames.append(cv2.resize(f.rgb, (w, h), interpolation=cv2.INTER_AREA))
            if len(frames) == args.frames:
                break
    print(f"{len(frames)} frames at {h}x{w}, {torch.get_num_threads()} threads, margin {args.margin:g}")
    settings = {"off": (0.0, 0.0), "uniform": (args.margin, 0.0), "motion-aware": (args.margin, args.power)}
    for mode in ("tfc", "segformer"):
        times: dict[str, list[float]] = {name: [] for name in settings}
        for _ in range(args.rounds):
            for name, (margin, power) in settings.items():
                seg = VideoSegmenter(model, keyframe_interval=args.keyframe_interval, mode=mode, short_side=0,
                                     threads=None, hysteresis=margin, hysteresis_power=power)
                seg.segment_frame(frames[0])  # warm-up (and the first keyframe)
                start = time.perf_counter()
                for frame in frames[1:]:
                    seg.segment_frame(frame)
                times[name].append((time.perf_counter() - start) / (len(frames) - 1) * 1000)
        med = {name: statistics.median(v) for name, v in times.items()}
        print(f"{mode}: " + ", ".join(f"{name} {ms:.1f} ms/frame ({ms / med['off']:.3f})" for name, ms in med.items()),
              flush=True)

if __name__ == "__main__":
    main()
