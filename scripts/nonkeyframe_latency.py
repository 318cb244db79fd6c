"""Keyframe and non-keyframe latency of a model on real frames, with its shipped TFC config.

Times `model.keyframe` on frame 0 and `model.non_keyframe` on the next frames against it
(median over repeats), and reports the share of points sparse MSDA updated. Run it with two
checkouts of tfcseg to compare code versions on the same machine in one sitting:

    python scripts/nonkeyframe_latency.py --size 480x853 [--precision bf16]
    git worktree add /tmp/old <commit> && PYTHONPATH=/tmp/old python scripts/nonkeyframe_latency.py --size 480x853
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

import tfcseg
from tfcseg import load_model
from tfcseg.benchmark import video_clip
from tfcseg.segmenter import preprocess


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="checkpoint (default: the shipped model)")
    ap.add_argument("--video", default="examples/demo.mp4")
    ap.add_argument("--size", default="480x853", help="HxW at inference")
    ap.add_argument("--frames", type=int, default=9, help="frame 0 the keyframe, the rest non-keyframes")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: under CPU autocast")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.lower().split("x"))
    model = load_model(args.model).eval()
    frames = [preprocess(rgb, (h, w), torch.device("cpu"), torch.float32)
              for rgb in video_clip(args.video, (h, w), args.frames)]
    key_ms, non_ms, shares = [], [], []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
        model.keyframe(frames[0])  # warm-up
        for _ in range(args.repeats):
            t = time.perf_counter()
            _, state = model.keyframe(frames[0])
            key_ms.append(1e3 * (time.perf_counter() - t))
            for pixels in frames[1:]:
                t = time.perf_counter()
                _, info = model.non_keyframe(pixels, state)
                non_ms.append(1e3 * (time.perf_counter() - t))
                shares.append(info.msda_share)
    print(json.dumps({"tfcseg": tfcseg.__file__, "size": [h, w], "threads": args.threads, "precision": args.precision,
                      "keyframe_ms": statistics.median(key_ms), "non_keyframe_ms": statistics.median(non_ms),
                      "msda_share": float(np.mean(shares))}))


if __name__ == "__main__":
    main()
