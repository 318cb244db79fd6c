"""Evaluation end to end: model runs, saved predictions, scoring, the `tfcseg eval` command."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import tiny_config
from test_metrics import _official_mvc

from tfcseg import TFCSegFormer, save_checkpoint
from tfcseg.cli import main
from tfcseg.data import DataWarning, make_synthetic_vspw, read_mask
from tfcseg.errors import TfcsegError
from tfcseg.evaluate import evaluate_model, score_predictions

CAMVID = Path("/work/shared/data/camvid")
if not CAMVID.is_dir():
    CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    # 32x48: the smallest size whose 1/4 map (8x12) fits the tiny model's 8x8 reduction.
    return make_synthetic_vspw(tmp_path_factory.mktemp("eval"), videos=2, frames=10, num_classes=4,
                               size=(32, 48), seed=0, splits={"val": [0, 1], "train": [0]})


@pytest.fixture(scope="module")
def model() -> TFCSegFormer:
    torch.manual_seed(0)
    return TFCSegFormer(tiny_config(num_classes=4)).eval()


@pytest.fixture(scope="module")
def run(data, model, tmp_path_factory):
    preds = tmp_path_factory.mktemp("preds")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the tiny model's TFC modules are untrained
        warnings.simplefilter("error", DataWarning)
        result = evaluate_model(model, data, keyframe_interval=4, short_side=0,
                                save_predictions=preds, progress=False)
    return result, preds


def test_model_run_result(run):
    result, preds = run
    for key in ("miou", "wiou", "mvc8", "pixel_accuracy", "fps", "msda_share"):
        assert 0.0 <= result[key] and (key == "fps" or result[key] <= 1.0), key
    assert result["mvc16"] is None and result["mvc16_windows"] == 0  # no video has > 16 frames
    assert result["mvc8_windows"] == 2 * (10 - 8)
    assert result["frames"] == 20 and result["videos"] == 2 and result["skipped_frames"] == 0
    assert result["keyframe_share"] == pytest.approx(6 / 20)  # frames 0, 4, 8 of each video
    assert set(result["per_class_iou"]) == {"background", "shape_1", "shape_2", "shape_3"}
    assert json.loads(json.dumps(result)) == result  # JSON-ready (no NaN)
    assert sorted(p.name for p in (preds / "video_001").iterdir()) == [f"{t:05d}.png" for t in range(10)]


def test_saved_predictions_round_trip_and_match_the_literal_definitions(run, data):
    result, preds = run
    scored = score_predictions(data, preds, progress=False)
    for key in ("miou", "wiou", "mvc8", "mvc16", "pixel_accuracy", "per_class_iou", "frames", "videos"):
        assert scored[key] == result[key], key
    # Recompute from the files with the definitions written out (VSPW encoding: k + 1).
    gts, prs, videos = [], [], []
    for video in ("video_000", "video_001"):
        g = [read_mask(p) for p in sorted((data / "data" / video / "mask").iterdir())]
        p = [read_mask(q) for q in sorted((preds / video).iterdir())]
        assert all(1 <= x.min() and x.max() <= 4 for x in p)
        videos.append((p, g))
        gts += g
        prs += p
    g = np.concatenate([x.ravel() for x in gts]).astype(int)
    p = np.concatenate([x.ravel() for x in prs]).astype(int)
    keep = (g >= 1) & (g <= 4)
    g, p = g[keep], p[keep]
    ious = [np.sum((g == c) & (p == c)) / np.sum((g == c) | (p == c)) for c in range(1, 5) if np.any(g == c)]
    assert result["miou"] == pytest.approx(np.mean(ious))
    assert result["mvc8"] == pytest.approx(_official_mvc(videos, 8))


def test_model_and_dataset_classes_must_agree(data):
    with pytest.raises(TfcsegError, match="the dataset has 4 classes but the model predicts 5"):
        evaluate_model(TFCSegFormer(tiny_config(num_classes=5)), data, progress=False)


def test_perfect_predictions_score_one(tmp_path):
    root = make_synthetic_vspw(tmp_path / "ds", videos=2, frames=18, num_classes=3, size=(16, 24), seed=4)
    for video in ("video_000", "video_001"):
        shutil.copytree(root / "data" / video / "mask", tmp_path / "gt" / video)
    result = score_predictions(root, tmp_path / "gt", progress=False)
    assert result["miou"] == result["wiou"] == result["pixel_accuracy"] == 1.0
    assert result["mvc8"] == result["mvc16"] == 1.0
    assert result["mvc8_windows"] == 2 * 10 and result["mvc16_windows"] == 2 * 2
    # flicker of the GT itself: pooled over each video's consecutive pairs (none across videos)
    pairs = []
    for video in ("video_000", "video_001"):
        masks = [read_mask(p) for p in sorted((root / "data" / video / "mask").glob("*.png"))]
        pairs += [np.mean(a != b) for a, b in zip(masks, masks[1:])]
    assert result["flicker"] == pytest.approx(np.mean(pairs))
    # The same predictions stored as class ids (k instead of k + 1).
    for png in (tmp_path / "gt").rglob("*.png"):
        raw = read_mask(png)
        out = tmp_path / "idx" / png.parent.name / png.name
        out.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out), np.where((raw >= 1) & (raw <= 3), raw - 1, 200).astype(np.uint8))
    assert score_predictions(root, tmp_path / "idx", encoding="index", progress=False)["miou"] == 1.0
    with pytest.warns(DataWarning, match=r"idx: 7\d\.\d% of the labelled pixels are predicted as values that "
                                         r"are no class in the vspw encoding .*the index encoding \(class k "
                                         r"stored as k\) fits them"):
        assert score_predictions(root, tmp_path / "idx", encoding="vspw", progress=False)["miou"] < 0.5


def test_scoring_bad_predictions(tmp_path):
    root = make_synthetic_vspw(tmp_path / "ds", videos=1, frames=4, num_classes=3, size=(16, 24), seed=1)
    preds = tmp_path / "preds" / "video_000"
    shutil.copytree(root / "data/video_000/mask", preds)
    (preds / "00002.png").unlink()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = score_predictions(root, preds.parent, progress=False)
    assert [str(w.message) for w in caught] == [  # one line for all missing frames
        f"{preds.parent}: no prediction for 1 of 4 frames (the first: {preds / '00002.png'}); those frames "
        "are skipped"]
    assert result["frames"] == 3 and result["skipped_frames"] == 1
    cv2.imwrite(str(preds / "00001.png"), np.ones((8, 8), np.uint8))
    with pytest.raises(TfcsegError, match=r"00001\.png: prediction is 8x8 but the mask"):
        score_predictions(root, preds.parent, progress=False)
    # a folder without predictions of this split: the error alone, no warning a frame
    with warnings.catch_warnings(record=True) as caught, \
            pytest.raises(TfcsegError, match="no prediction for any of the 4 frames of the val split"):
        warnings.simplefilter("always")
        score_predictions(root, tmp_path, progress=False)
    assert caught == []
    (tmp_path / "empty").mkdir()
    with pytest.raises(TfcsegError, match="empty: no prediction PNG in the folder"):
        score_predictions(root, tmp_path / "empty", progress=False)


@pytest.mark.skipif(not CAMVID.is_dir(), reason="../shared/data/camvid not present")
def test_camvid_ground_truth_as_predictions(tmp_path):
    # Real, temporally dense labels (101 frames at 15 Hz): the masks score 1 everywhere.
    pred = tmp_path / "pred"
    shutil.copytree(CAMVID / "data" / "0016E5_07959" / "mask", pred / "0016E5_07959")
    result = score_predictions(CAMVID, pred, progress=False)
    assert result["frames"] == 101 and result["num_classes"] == 11
    assert result["miou"] == 1.0 and result["mvc8"] == 1.0 and result["mvc16"] == 1.0
    assert result["mvc8_windows"] == 101 - 8 and result["mvc16_windows"] == 101 - 16


def test_auto_keyframes_counted_and_promoted_keyframes_are_keyframes(data, model):
    """keyframe_interval="auto": the maximum interval alone (no change ever counts), and every
    frame a change (threshold 1.0, share 0): then each frame is a keyframe run from its own
    stages 1-2, and the scores are per-frame SegFormer's exactly."""
    def run(**kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return evaluate_model(model, data, short_side=0, progress=False, **kw)

    capped = run(keyframe_interval="auto", keyframe_changed_share=1.0, max_keyframe_interval=3)
    assert capped["keyframe_interval"] == "auto" and capped["keyframes_on_change"] == 0
    assert capped["keyframes"] == 8 and capped["keyframe_share"] == pytest.approx(8 / 20)  # 0, 3, 6, 9
    assert capped["mean_keyframe_interval"] == 3.0
    assert capped["keyframe_policy"]["max_keyframe_interval"] == 3
    every = run(keyframe_interval="auto", keyframe_similarity=1.0, keyframe_changed_share=0.0)
    assert every["keyframes"] == 20 and every["keyframes_on_change"] == 18  # all but each video's first
    assert every["mean_keyframe_interval"] == 1.0
    segformer = run(mode="segformer")
    for key in ("miou", "wiou", "mvc8", "flicker", "pixel_accuracy"):
        assert every[key] == segformer[key], key
    assert segformer["keyframe_policy"] is None and segformer["keyframes_on_change"] is None
    with pytest.raises(TfcsegError, match="max_keyframe_interval: only with keyframe_interval auto") as info:
        run(keyframe_interval=4, max_keyframe_interval=8)
    assert info.value.options == ("max_keyframe_interval", "keyframe_interval")


# ---- the command ------------------------------------------------------------------------------


def test_cli_eval_end_to_end(data, model, tmp_path, capsys):
    save_checkpoint(model, tmp_path / "ckpt")
    damaged = shutil.copytree(data, tmp_path / "ds")
    (damaged / "data/video_001/origin/00003.jpg").write_bytes(b"")
    rc = main(["eval", "--dataset", "vspw", "--data-root", str(damaged), "--model", str(tmp_path / "ckpt"),
               "--short-side", "0", "--keyframe-interval", "4", "--save-predictions", str(tmp_path / "p"),
               "--json", str(tmp_path / "r.json"), "--per-class", "--device", "cpu", "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "mIoU (%)" in out and "mVC8 (%)" in out and "frames/s (model)" in out and "shape_3" in out
    assert "00003.jpg: image is an empty (zero-byte) file (frame skipped)" in err
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["frames"] == 19 and result["skipped_frames"] == 1 and result["mode"] == "tfc"
    assert 0 <= result["miou"] <= 1 and 0 <= result["mvc8"] <= 1 and result["fps"] > 0
    assert result["skipped"][0]["path"].endswith("video_001/origin/00003.jpg")

    rc = main(["eval", "--data-root", str(damaged), "--predictions", str(tmp_path / "p"),
               "--json", str(tmp_path / "s.json"), "-q"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    scored = json.loads((tmp_path / "s.json").read_text())
    for key in ("miou", "wiou", "mvc8", "frames", "skipped_frames"):
        assert scored[key] == result[key], key
    # --json -: the JSON alone on stdout (the table goes to stderr), no file named "-".
    rc = main(["eval", "--data-root", str(damaged), "--predictions", str(tmp_path / "p"), "--json", "-", "-q"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert json.loads(out)["miou"] == result["miou"] and "mIoU (%)" in err and not Path("-").exists()


def test_cli_eval_errors_are_one_line(data, tmp_path, capsys):
    bad = shutil.copytree(data, tmp_path / "ds")
    cv2.imwrite(str(bad / "data/video_000/mask/00004.png"), np.dstack([np.zeros((32, 48), np.uint8)] * 2
                                                                       + [np.full((32, 48), 9, np.uint8)]))
    shutil.copytree(bad / "data/video_000/mask", tmp_path / "p" / "video_000")
    shutil.copytree(bad / "data/video_001/mask", tmp_path / "p" / "video_001")
    rc = main(["eval", "--data-root", str(bad), "--predictions", str(tmp_path / "p"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "00004.png: a colour mask" in err and "Traceback" not in err
    rc = main(["eval", "--data-root", str(bad), "--split", "test", "--predictions", str(tmp_path / "p")])
    assert rc == 2 and "test.txt: split file not found" in capsys.readouterr().err
    rc = main(["eval", "--data-root", str(bad), "--dataset", "cityscapes", "--predictions", str(tmp_path / "p")])
    assert rc == 2 and "unknown dataset layout" in capsys.readouterr().err
    rc = main(["eval", "--data-root", str(bad), "--precision", "fp64", "--predictions", str(tmp_path / "p")])
    assert rc == 2 and "--precision fp64" in capsys.readouterr().err


def test_cli_eval_bf16(data, model, tmp_path, capsys):
    save_checkpoint(model, tmp_path / "ckpt")
    rc = main(["eval", "--data-root", str(data), "--model", str(tmp_path / "ckpt"), "--short-side", "0",
               "--precision", "bf16", "--json", str(tmp_path / "r.json"), "-q"])
    assert rc == 0, capsys.readouterr().err
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["precision"] == "bf16" and 0 <= result["miou"] <= 1


def test_cli_eval_refuses_and_warns_instead_of_scoring_silently(data, model, tmp_path, capsys):
    save_checkpoint(model, tmp_path / "ckpt")
    base = ["eval", "--data-root", str(data), "--model", str(tmp_path / "ckpt"), "-q"]
    assert main(base + ["--short-side", "-5"]) == 2
    err = capsys.readouterr().err
    assert "--short-side -5: must be 0" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(TfcsegError, match="short_side must be 0"):
        evaluate_model(model, data, short_side=-5, progress=False)
    # --save-predictions never replaces earlier predictions without --overwrite
    preds = tmp_path / "p"
    assert main(base + ["--short-side", "0", "--save-predictions", str(preds)]) == 0
    (preds / "video_000" / "notes.txt").write_text("mine")
    first = (preds / "video_000" / "00000.png").stat().st_mtime_ns
    capsys.readouterr()
    assert main(base + ["--short-side", "0", "--save-predictions", str(preds)]) == 2
    err = capsys.readouterr().err
    assert "video_000: holds predictions already (use --overwrite to replace them)" in err
    assert (preds / "video_000" / "00000.png").stat().st_mtime_ns == first
    assert main(base + ["--short-side", "0", "--save-predictions", str(preds), "--overwrite"]) == 0
    assert (preds / "video_000" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (preds / "video_000").iterdir()) == [f"{i:05d}.png" for i in range(10)] + ["notes.txt"]
    # a split video without frames is said, not dropped silently
    ds = shutil.copytree(data, tmp_path / "ds")
    (ds / "data" / "video_002" / "origin").mkdir(parents=True)
    (ds / "data" / "video_002" / "mask").mkdir()
    (ds / "val.txt").write_text("video_000\nvideo_001\nvideo_002\n")
    capsys.readouterr()
    assert main(["eval", "--data-root", str(ds), "--predictions", str(preds), "--json", str(tmp_path / "r.json")]) == 0
    err = capsys.readouterr().err
    assert "video_002: listed in val.txt but holds no frames (video skipped)" in err
    assert json.loads((tmp_path / "r.json").read_text())["empty_videos"] == ["video_002"]
    # predictions written in the index encoding, scored as vspw: a warning, not a silent 0.00
    idx = tmp_path / "idx"
    for png in preds.rglob("*.png"):
        (idx / png.parent.name).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(idx / png.parent.name / png.name), (read_mask(png) - 1).astype(np.uint8))
    assert main(["eval", "--data-root", str(data), "--predictions", str(idx), "-q"]) == 0
    err = capsys.readouterr().err
    assert "no class in the vspw encoding" in err and "the index encoding (class k stored as k) fits them" in err
    assert main(["eval", "--data-root", str(data), "--predictions", str(idx), "--prediction-encoding", "index",
                 "-q"]) == 0
    assert "warning" not in capsys.readouterr().err


def test_cli_eval_auto_keyframes(data, model, tmp_path, capsys):
    save_checkpoint(model, tmp_path / "ckpt")
    rc = main(["eval", "--data-root", str(data), "--model", str(tmp_path / "ckpt"), "--short-side", "0",
               "-k", "auto", "--max-keyframe-interval", "3", "--keyframe-changed-share", "1",
               "--json", str(tmp_path / "r.json"), "-q"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["keyframe_interval"] == "auto" and result["keyframes"] == 8
    assert "auto: 0 on a change" in " ".join(out.split())
    rc = main(["eval", "--data-root", str(data), "--model", str(tmp_path / "ckpt"), "-k", "auto",
               "--keyframe-changed-share", "2", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "--keyframe-changed-share must be a share" in " ".join(err.split())


def _eval_json(capsys, data, model_dir, json_path, *options):
    """`tfcseg eval` of `model_dir` on `data` at the frames' own size with `options`: its JSON
    result and the table it printed."""
    rc = main(["eval", "--data-root", str(data), "-m", str(model_dir), "--short-side", "0", *options,
               "--json", str(json_path)])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(json_path.read_text()), out


def test_cli_eval_msda_choice(data, tmp_path, capsys):
    """--msda off|on|T overrides the config's sparse MSDA for one run: the JSON says which
    threshold ran and how many points it updated; a lower threshold updates fewer points."""
    torch.manual_seed(0)
    save_checkpoint(TFCSegFormer(tiny_config(num_classes=4, tfc_trained=True)), tmp_path / "m")
    runs = {}
    for choice in ("off", "0.5", "on", "model"):
        rc = main(["eval", "--data-root", str(data), "-m", str(tmp_path / "m"), "--short-side", "0",
                   "--msda", choice, "--json", str(tmp_path / f"{choice}.json"), "-q"])
        assert rc == 0, capsys.readouterr().err
        runs[choice] = json.loads((tmp_path / f"{choice}.json").read_text())
    assert runs["off"]["msda_threshold"] is None and runs["off"]["msda_share"] == 0.0
    assert runs["0.5"]["msda_threshold"] == 0.5
    threshold = tiny_config(num_classes=4).tfc.msda_threshold
    assert runs["on"]["msda_threshold"] == threshold
    assert 0 < runs["0.5"]["msda_share"] <= runs["on"]["msda_share"]
    assert runs["model"]["msda_threshold"] == (threshold if tiny_config().tfc.msda else None)
    for bad in ("2", "maybe", "0"):
        rc = main(["eval", "--data-root", str(data), "-m", str(tmp_path / "m"), "--msda", bad, "-q"])
        err = capsys.readouterr().err
        assert rc == 2 and f"--msda {bad}: expected model, on, off" in err and "Traceback" not in err
    # --msda-gate: the JSON and the table say it; a huge gate undoes every label change MSDA makes
    gated = {}
    for gate in ("0", "1000"):
        gated[gate], out = _eval_json(capsys, data, tmp_path / "m", tmp_path / f"g{gate}.json",
                                      "--msda", "on", "--msda-gate", gate)
        assert gated[gate]["msda_gate"] == float(gate)
    assert "sparse MSDA" in out and "margin" in out and "1000" in out  # (the row may wrap)
    assert gated["0"]["miou"] == runs["on"]["miou"]
    assert gated["1000"]["flicker"] < gated["0"]["flicker"]  # MSDA's label changes undone: steadier
    rc = main(["eval", "--data-root", str(data), "-m", str(tmp_path / "m"), "--msda-gate", "-1", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "--msda-gate -1.0: expected a logit margin >= 0" in " ".join(err.split()) and "Traceback" not in err


def test_cli_eval_interpolation_power(data, tmp_path, capsys):
    """--interpolation-power P: the JSON says it (None outside TFC's soft interpolation), it
    changes TFC's labels and not SegFormer mode's; a bad power is one clean line."""
    torch.manual_seed(0)
    save_checkpoint(TFCSegFormer(tiny_config(num_classes=4, tfc_trained=True)), tmp_path / "m")
    runs = {}
    for power in ("1", "40"):
        runs[power], _ = _eval_json(capsys, data, tmp_path / "m", tmp_path / f"p{power}.json",
                                    "--msda", "off", "--interpolation-power", power)
        assert runs[power]["interpolation_power"] == float(power)
    assert runs["1"]["interpolation_power"] == tiny_config().tfc.interpolation_power
    # a sharper weight keeps less of the keyframe: the frames between keyframes change more
    assert runs["40"]["flicker"] > runs["1"]["flicker"]
    seg, _ = _eval_json(capsys, data, tmp_path / "m", tmp_path / "seg.json", "--mode", "segformer",
                        "--interpolation-power", "40")
    plain, _ = _eval_json(capsys, data, tmp_path / "m", tmp_path / "plain.json", "--mode", "segformer")
    assert seg["interpolation_power"] is None and seg["miou"] == plain["miou"]
    rc = main(["eval", "--data-root", str(data), "-m", str(tmp_path / "m"), "--interpolation-power", "0.5", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "--interpolation-power 0.5: expected a power >= 1" in " ".join(err.split())
    assert "Traceback" not in err


def test_cli_eval_hysteresis(data, tmp_path, capsys):
    """--hysteresis H: the JSON and the table say it, flicker falls; the model's config gives
    the default; a bad margin (option or config) is one clean line."""
    torch.manual_seed(0)
    model = TFCSegFormer(tiny_config(num_classes=4, tfc_trained=True))
    save_checkpoint(model, tmp_path / "m")
    runs = {}
    for h in ("0", "1000"):
        runs[h], out = _eval_json(capsys, data, tmp_path / "m", tmp_path / f"h{h}.json",
                                  "--mode", "segformer", "--hysteresis", h)
        assert runs[h]["label_hysteresis"] == float(h)
    assert "label hysteresis" in out and "1000" in out
    assert runs["1000"]["label_hysteresis_power"] == 0.0
    # motion-aware: the margin scaled by the similarity to the previous frame ^ Q
    moving, out = _eval_json(capsys, data, tmp_path / "m", tmp_path / "q.json", "--mode", "segformer",
                             "--hysteresis", "1000", "--hysteresis-power", "2")
    assert moving["label_hysteresis_power"] == 2.0 and "previous frame ^ 2" in out
    assert runs["1000"]["flicker"] < moving["flicker"]  # the margin fades where the frames differ
    rc = main(["eval", "--data-root", str(data), "-m", str(tmp_path / "m"), "--hysteresis-power", "-1", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "--hysteresis-power -1.0: expected a power >= 0" in " ".join(err.split()) and "Traceback" not in err
    assert runs["0"]["flicker"] > 0 and runs["1000"]["flicker"] < runs["0"]["flicker"]
    model.config.label_hysteresis = 1000.0
    save_checkpoint(model, tmp_path / "m2")
    rc = main(["eval", "--data-root", str(data), "-m", str(tmp_path / "m2"), "--short-side", "0",
               "--mode", "segformer", "--json", str(tmp_path / "default.json"), "-q"])
    assert rc == 0, capsys.readouterr().err
    assert json.loads((tmp_path / "default.json").read_text())["flicker"] == runs["1000"]["flicker"]
    rc = main(["eval", "--data-root", str(data), "-m", str(tmp_path / "m"), "--hysteresis", "-2", "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "hysteresis -2.0: expected a logit margin >= 0" in " ".join(err.split()) and "Traceback" not in err
    cfg = json.loads((tmp_path / "m2" / "config.json").read_text())
    cfg["label_hysteresis"] = -1
    (tmp_path / "m2" / "config.json").write_text(json.dumps(cfg))
    rc = main(["eval", "--data-root", str(data), "-m", str(tmp_path / "m2"), "-q"])
    err = capsys.readouterr().err
    assert rc == 2 and "label_hysteresis must be a logit margin >= 0" in err and "Traceback" not in err
