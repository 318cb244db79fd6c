"""The default model shipped in `weights/`: its config, its size, and a real prediction."""

from __future__ import annotations

import filecmp
import json
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


def test_shipped_settings_are_the_calibrations_choice():
    """weights/config.json's inference settings are what the rule chose in the saved calibration
    (scripts/calibrate_msda.py --write), and the saved results table ran with them: editing one
    without regenerating the evidence fails here."""
    evidence = ROOT / "weights" / "evidence"
    choice = json.loads((evidence / "msda_calibration_k4.json").read_text())["choice"]
    config = json.loads((SHIPPED_WEIGHTS / "config.json").read_text())
    tfc = config["tfc"]
    assert tfc["msda"] == choice["msda"]
    assert tfc["interpolation_power"] == choice["interpolation_power"]
    assert config["label_hysteresis"] == choice["label_hysteresis"]
    assert config["label_hysteresis_power"] == choice["label_hysteresis_power"]
    if choice["msda"]:
        assert (tfc["msda_threshold"], tfc["msda_gate"]) == (choice["msda_threshold"], choice["msda_gate"])
    rows = json.loads((evidence / "camvid_table.json").read_text())["rows"]
    shipped = next(r for r in rows if r["row"] == "TFC, K=4, shipped settings")
    assert shipped["interpolation_power"] == tfc["interpolation_power"]
    assert shipped["label_hysteresis"] == config["label_hysteresis"]
    assert shipped["label_hysteresis_power"] == config["label_hysteresis_power"]
    assert shipped["msda_threshold"] == (tfc["msda_threshold"] if tfc["msda"] else None)
    assert shipped["msda_gate"] == (tfc["msda_gate"] if tfc["msda"] else None)


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
