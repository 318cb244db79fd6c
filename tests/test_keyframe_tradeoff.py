"""scripts/keyframe_tradeoff.py (the table behind the README's adaptive keyframes), without
matplotlib: runs, the MACs per frame, the table and the default marked."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config

from tfcseg import TFCSegFormer, save_checkpoint
from tfcseg.data import make_synthetic_vspw
from tfcseg.segmenter import KeyframePolicy

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "keyframe_tradeoff.py"


def _script():
    spec = importlib.util.spec_from_file_location("keyframe_tradeoff", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parse_setting():
    kt = _script()
    assert kt.parse_setting("4") == {"keyframe_interval": 4}
    assert kt.parse_setting("auto") == {"keyframe_interval": "auto"}
    assert kt.parse_setting("auto:0.5:0.1:8:2") == {
        "keyframe_interval": "auto", "keyframe_similarity": 0.5, "keyframe_changed_share": 0.1,
        "max_keyframe_interval": 8, "min_keyframe_interval": 2}


def test_runs_and_table(tmp_path, monkeypatch, capsys):
    kt = _script()
    data = make_synthetic_vspw(tmp_path / "ds", videos=1, frames=6, num_classes=4, size=(32, 48), seed=0,
                               splits={"val": [0]})
    torch.manual_seed(0)
    save_checkpoint(TFCSegFormer(tiny_config(num_classes=4, inference_short_side=0)), tmp_path / "ck")
    out = tmp_path / "runs"
    argv = ["keyframe_tradeoff.py", "--data-root", str(data), "--model", str(tmp_path / "ck"), "--out", str(out),
            "--device", "cpu", "--settings", "1,3,auto,auto:0.7:0.3:16,auto:1.0:0.0:4"]
    monkeypatch.setattr(sys, "argv", argv)
    kt.main()
    rows = kt.load_rows(out)
    # "auto" and the default's options spelt out are one row (the latest), marked default;
    # fixed intervals by K, then auto by falling cost
    assert [r["setting"] for r in rows] == ["1", "3", "auto:1.0:0.0:4", "auto:0.7:0.3:16"]
    assert [r["default"] for r in rows] == [False, False, False, True]
    one, three, every, default = rows
    assert one["relative_macs"] == pytest.approx(1.0) and one["keyframe_share"] == 1.0
    macs = three["macs"]
    assert three["relative_macs"] == pytest.approx((2 * macs["keyframe"] + 4 * macs["non_keyframe"])
                                                   / (6 * macs["keyframe"]))  # keyframes 0 and 3
    # every frame a change: each keyframe after the first costs a little over a keyframe
    assert every["keyframes_on_change"] == 5 and every["relative_macs"] > 1.0
    assert default["keyframe_policy"] == KeyframePolicy().as_dict()
    assert every["miou"] == one["miou"]
    text = (out / "table.md").read_text()
    assert text == kt.table(rows) and text.count("\n") == 2 + 4
    assert "**(default)** |" in text and "| `-k auto` |" in text and "`-k 3`" in text
    assert "`-k auto --keyframe-similarity 1 --keyframe-changed-share 0 --max-keyframe-interval 4`" in text
    assert all(json.loads(line)["cpu"] for line in (out / "runs.jsonl").read_text().splitlines())
