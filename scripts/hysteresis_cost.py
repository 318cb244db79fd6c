"""What motion-aware label hysteresis costs per frame, against the same margin everywhere.

Runs `VideoSegmenter` over the first frames of a video with label hysteresis margin M and
power 0 (the same margin everywhere) and power Q (motion-aware: each frame's unit features
and their similarity to the previous frame's on top), alternating, in one process, and
reports the median time per frame of each and their ratio, for TFC at K and per-frame
SegFormer. Timings include the labels at frame size, as `tfcseg segment` makes them.

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
    h, w = (int(v) for v in args.size.lower().split("x"))
    model = load_model(args.model).eval()
    with open_frames(args.video) as source:
        frames = []
        for f in source:
            frames.append(cv2.resize(f.rgb, (w, h), interpolation=cv2.INTER_AREA))
            if len(frames) == args.frames:
                break
    print(f"{len(frames)} frames at {h}x{w}, {torch.get_num_threads()} threads, margin {args.margin:g}")
    for mode in ("tfc", "segformer"):
        times: dict[float, list[float]] = {0.0: [], args.power: []}
        for _ in range(args.rounds):
            for power in times:
                seg = VideoSegmenter(model, keyframe_interval=args.keyframe_interval, mode=mode, short_side=0,
                                     threads=None, hysteresis=args.margin, hysteresis_power=power)
                seg.segment_frame(frames[0])  # warm-up (and the first keyframe)
                start = time.perf_counter()
                for frame in frames[1:]:
                    seg.segment_frame(frame)
                times[power].append((time.perf_counter() - start) / (len(frames) - 1) * 1000)
        uniform, motion = (statistics.median(v) for v in times.values())
        print(f"{mode}: same margin everywhere {uniform:.1f} ms/frame, motion-aware (power {args.power:g}) "
              f"{motion:.1f} ms/frame, ratio {motion / uniform:.3f}", flush=True)


if __name__ == "__main__":
    main()
