"""Stream a video through TFC and use the labels: the share of road per frame.

    python examples/stream_video.py examples/demo.mp4

Loads the default model (weights/), decodes the video one frame at a time, and prints for
every frame whether it was a keyframe and how much of it is road, then the mean.
"""

from __future__ import annotations

import sys

import numpy as np

import tfcseg
from tfcseg.io.video import open_frames


def main(path: str) -> None:
    model = tfcseg.load_model(None)  # None: the model shipped in weights/; or a path / Hub id
    road = model.config.class_names.index("road")
    session = tfcseg.VideoSegmenter(model, keyframe_interval=4, mode="tfc")
    frames = (frame.rgb for frame in open_frames(path))  # H x W x 3 uint8 RGB, streamed
    shares = []
    for result in session.segment(frames):
        share = float(np.mean(result.labels == road))
        shares.append(share)
        kind = "keyframe" if result.is_keyframe else "TFC     "
        print(f"frame {result.index:4d}  {kind}  road {100 * share:5.1f}%")
    print(f"{len(shares)} frames, mean road share {100 * np.mean(shares):.1f}%")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "examples/demo.mp4")
