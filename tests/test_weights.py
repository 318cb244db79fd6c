"""The default model shipped in `weights/`: its config, its size, and a real prediction."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np

import tfcseg
from tfcseg.hub.refs import SHIPPED_WEIGHTS, find_shipped_weights

ROOT = Path(__file__).resolve().parent.parent
CAMVID = ["sky", "building", "pole", "road", "sidewalk", "tree", "sign", "fence", "car",
          "pedestrian", "bicyclist"]


def test_shipped_weights_config_and_size():
    assert (SHIPPED_WEIGHTS / "model.safetensors").stat().st_size <= 20 * 2 ** 20
    model = tfcseg.load_model(None)  # the default model
    cfg = model.config
    assert cfg.variant == "b0" and cfg.num_classes == 11 and cfg.class_names == CAMVID
    assert cfg.tfc_trained and len(cfg.palette) == 11
    assert not model.training


def test_road_in_the_demo_frame_is_labelled_road():
    frames = imageio_ffmpeg.read_frames(str(ROOT / "examples" / "demo.mp4"))
    meta = next(frames)
    w, h = meta["size"]
    first = np.frombuffer(next(frames), np.uint8).reshape(h, w, 3)
    frames.close()
    model = tfcseg.load_model(None)
    result = next(tfcseg.VideoSegmenter(model).segment([first]))
    road = model.config.class_names.index("road")
    # the lower middle of the first CamVid val frame is road in its ground truth
    patch = result.labels[280:360, 150:330]
    assert result.labels.shape == (360, 480)
    assert np.mean(patch == road) > 0.9
    assert result.labels[330, 240] == road


def test_a_built_package_carries_the_weights_and_finds_them(tmp_path):
    """What a wheel holds: setup.py's build step copies weights/ into the package, and the
    lookup prefers that copy; a clone's package finds the top-level weights/."""
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path),
                    "build_py", "--build-lib", str(tmp_path / "lib")], cwd=ROOT, check=True, capture_output=True)
    inside = tmp_path / "lib" / "tfcseg" / "weights"
    for name in ("config.json", "model.safetensors", "README.md"):
        assert filecmp.cmp(inside / name, ROOT / "weights" / name, shallow=False), name
    assert find_shipped_weights(tmp_path / "lib" / "tfcseg") == inside
    assert find_shipped_weights(ROOT / "tfcseg") == ROOT / "weights"
    assert find_shipped_weights(tmp_path / "none" / "tfcseg") == tmp_path / "none" / "tfcseg" / "weights"
