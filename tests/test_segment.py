"""`tfcseg segment` end to end on videos generated here, with a tiny random model."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest
import torch
from conftest import CUT_POLICY, NTSC, randomise_bn, spliced_video, tiny_config
from conftest import write_video as _write_video

from tfcseg import TFCSegFormer, load_model, save_checkpoint, segment_video
from tfcseg.cli import main
from tfcseg.io.overlay import OverlayRenderer
from tfcseg.segmenter import VideoSegmenter
from tfcseg.io.video import open_frames, probe_video



@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A tiny random model with trained-TFC flags (so MSDA runs), inferring at frame size."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny") / "model"
    save_checkpoint(TFCSegFormer(tiny_config(tfc_trained=True, inference_short_side=0)), folder)
    return folder


def write_video(path: Path, frames, **kw) -> Path:
    return _write_video(path, frames, quality=9, **kw)


def noise_frames(n: int, w: int, h: int, seed: int = 0) -> list[np.ndarray]:
    """Smooth random frames drifting over time (compress well, and differ between frames)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n + 4, max(2, h // 8), max(2, w // 8), 3), dtype=np.uint8)
    return [cv2.resize(small[i], (w, h), interpolation=cv2.INTER_CUBIC) for i in range(n)]


def read_back(path: Path) -> tuple[dict, int]:
    """imageio-ffmpeg's view of a file: its metadata and how many frames it decodes."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return meta, sum(1 for _ in reader)


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["segment", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *needles: str) -> None:
    assert "Traceback" not in err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for needle in needles:
        assert needle in lines[0], (needle, err)


def test_ntsc_video_end_to_end_overlay_masks_and_json(tmp_path, ckpt, capsys):
    src = write_video(tmp_path / "street.mp4", noise_frames(6, 70, 94))  # 70x94: not /16
    code, out, err = run_cli(capsys, src, "--model", ckpt, "--masks", tmp_path / "preds",
                             "--json", tmp_path / "s.json", "--opacity", "0.6", "-k", "3")
    assert code == 0, err
    out_path = tmp_path / "street_tfcseg.mp4"  # the default name, beside the input
    info = probe_video(out_path)
    assert (info.width, info.height, info.fps) == (70, 94, NTSC)
    assert info.codec == "h264" and info.pix_fmt == "yuv420p"
    meta, n = read_back(out_path)
    assert n == 6 and meta["codec"] == "h264" and meta["size"] == (70, 94)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] == 6 and summary["keyframes"] == 2 and summary["lost_frames"] == 0
    assert summary["output"] == str(out_path) and summary["frame_rate"] == "30000/1001"
    assert 0.0 < summary["mean_msda_share"] <= 1.0 and summary["fps"] > 0
    assert "frames/s" in out and "street_tfcseg.mp4" in out

    # Independent check: decode the input, segment it with the same model, compare.
    model = load_model(ckpt)
    frames = [f.rgb for f in open_frames(src)]
    results = list(VideoSegmenter(model, keyframe_interval=3).segment(frames))
    # flicker: the mean share of pixels changing label between consecutive frames
    labels = [r.labels for r in results]
    expected_flicker = np.mean([np.mean(a != b) for a, b in zip(labels, labels[1:])])
    assert summary["flicker"] == pytest.approx(expected_flicker) and "flicker" in out
    assert [r.is_keyframe for r in results] == [True, False, False] * 2
    masks = sorted((tmp_path / "preds" / "street").glob("*.png"))
    assert [m.name for m in masks] == [f"{i:05d}.png" for i in range(6)]
    render = OverlayRenderer(model.config.palette, model.config.class_names, opacity=0.6)
    decoded = [f.rgb for f in open_frames(out_path)]
    expected = [render(f, r.labels) for f, r in zip(frames, results)]
    for i, (result, mask, got) in enumerate(zip(results, masks, decoded)):
        png = cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)
        assert png.dtype == np.uint8
        np.testing.assert_array_equal(png, result.labels.astype(np.uint8) + 1)  # VSPW: id + 1
        # H.264 is lossy (and this random model's labels are noise), so: the decoded frame is
        # close to its own overlay, and far closer to it than to a neighbour's or to BGR.
        err = mae(got, expected[i])
        assert err < 10
        assert err < 0.6 * mae(got, expected[i][..., ::-1])
        assert err < 0.6 * min(mae(got, e) for j, e in enumerate(expected) if j != i)


def test_odd_size_padded_one_pixel_side_by_side(tmp_path, ckpt, capsys):
    frames = noise_frames(3, 71, 35, seed=1)
    src = write_video(tmp_path / "odd.mp4", frames, fps=25, pix_fmt="yuv444p")
    out_path = tmp_path / "out" / "odd.mp4"
    code, _, err = run_cli(capsys, src, "-o", out_path, "--model", ckpt, "--side-by-side",
                           "--no-legend", "-q")
    assert code == 0, err
    info = probe_video(out_path)
    assert (info.width, info.height) == (142, 36)  # 2 x 71 wide, 35 + 1 high: padded, not scaled
    assert info.fps == 25 and info.pix_fmt == "yuv420p"
    decoded = [f.rgb for f in open_frames(out_path)]
    assert len(decoded) == 3
    original = [f.rgb for f in open_frames(src)]
    left = decoded[1][:35, :70]  # column 70 shares its chroma with the overlay's column 71
    assert mae(left, original[1][:, :70]) < 0.5 * mae(left, original[0][:, :70])  # the original


def test_single_frame_video(tmp_path, ckpt, capsys):
    src = write_video(tmp_path / "one.mp4", noise_frames(1, 48, 32), fps=NTSC)
    code, _, err = run_cli(capsys, src, "--model", ckpt, "--json", tmp_path / "s.json", "-q")
    assert code == 0, err
    meta, n = read_back(tmp_path / "one_tfcseg.mp4")
    assert n == 1 and meta["size"] == (48, 32)
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] == 1 and summary["keyframes"] == 1 and summary["mean_msda_share"] is None


def test_bf16_precision(tmp_path, ckpt, capsys):
    src = write_video(tmp_path / "a.mp4", noise_frames(3, 48, 40), fps=NTSC)
    code, out, err = run_cli(capsys, src, "--model", ckpt, "--precision", "bf16", "-k", "2",
                             "--json", tmp_path / "s.json", "-q")
    assert code == 0, err
    assert read_back(tmp_path / "a_tfcseg.mp4")[1] == 3
    assert json.loads((tmp_path / "s.json").read_text())["precision"] == "bf16"
    assert "bf16" in out


def test_folder_of_png_frames_with_python_api(tmp_path, ckpt):
    folder = tmp_path / "clip01" / "origin"  # VSPW layout: the video is named clip01
    folder.mkdir(parents=True)
    for i, f in enumerate(noise_frames(5, 40, 30, seed=2)):
        cv2.imwrite(str(folder / f"{i * 3:08d}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    summary = segment_video(folder, model=load_model(ckpt), masks_dir=tmp_path / "preds",
                            fps="15", keyframe_interval=2, progress=False)
    out_path = tmp_path / "clip01" / "clip01_tfcseg.mp4"
    assert summary["output"] == str(out_path) and summary["frames"] == 5
    assert summary["keyframes"] == 3 and summary["frame_rate"] == "15"
    info = probe_video(out_path)
    assert (info.width, info.height, info.fps, info.codec) == (40, 30, 15, "h264")
    assert read_back(out_path)[1] == 5
    assert sorted(p.name for p in (tmp_path / "preds" / "clip01").iterdir()) == [
        f"{i * 3:08d}.png" for i in range(5)]


def test_start_end_stride_keep_duration(tmp_path, ckpt, capsys):
    src = write_video(tmp_path / "long.mp4", noise_frames(30, 40, 32, seed=3))
    code, _, err = run_cli(capsys, src, "--model", ckpt, "--start", "0.1", "--end", "0:00.5",
                           "--stride", "2", "--masks", tmp_path / "m", "-q")
    assert code == 0, err
    # Frames 3 (0.1 s * 29.97 -> 3) .. 14 (< 0.5 s * 29.97 = 14.99), every 2nd.
    names = sorted(p.stem for p in (tmp_path / "m" / "long").iterdir())
    assert names == [f"{i:05d}" for i in range(3, 15, 2)]
    info = probe_video(tmp_path / "long_tfcseg.mp4")
    assert info.fps == NTSC / 2 and read_back(tmp_path / "long_tfcseg.mp4")[1] == 6


# ---- bad input ---------------------------------------------------------------------------------


def test_missing_file(tmp_path, ckpt, capsys):
    code, _, err = run_cli(capsys, tmp_path / "nope.mp4", "--model", ckpt)
    assert code == 2
    one_line_error(err, "nope.mp4", "no such file")


def test_not_a_video(tmp_path, ckpt, capsys):
    (tmp_path / "notes.mp4").write_text("these are my notes, not a video\n" * 10)
    code, _, err = run_cli(capsys, tmp_path / "notes.mp4", "--model", ckpt)
    assert code == 2
    one_line_error(err, "notes.mp4", "not a readable video")
    assert not (tmp_path / "notes_tfcseg.mp4").exists()


def test_zero_frames(tmp_path, ckpt, capsys):
    full = write_video(tmp_path / "full.mp4", noise_frames(4, 40, 32), faststart=True).read_bytes()
    (tmp_path / "zero.mp4").write_bytes(full[: full.index(b"mdat") + 4])  # index, no frame data
    code, _, err = run_cli(capsys, tmp_path / "zero.mp4", "--model", ckpt)
    assert code == 2
    one_line_error(err, "zero.mp4", "no frames")
    (tmp_path / "frames").mkdir()
    code, _, err = run_cli(capsys, tmp_path / "frames", "--model", ckpt)
    assert code == 2
    one_line_error(err, "frames", "no image frames")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "full.mp4", "zero.mp4"]


def test_truncated_video_writes_what_could_be_read(tmp_path, ckpt, capsys):
    data = write_video(tmp_path / "full.mp4", noise_frames(40, 40, 32, seed=4), faststart=True).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(capsys, tmp_path / "cut.mp4", "--model", ckpt, "--json",
                           tmp_path / "s.json", "-q")
    assert code == 0, err
    summary = json.loads((tmp_path / "s.json").read_text())
    n, lost = summary["frames"], summary["lost_frames"]
    assert 0 < n < 40 and lost == 40 - n
    warning = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert len(warning) == 1 and "cut.mp4" in warning[0] and f"{lost} lost" in warning[0]
    assert "Traceback" not in err
    assert read_back(tmp_path / "cut_tfcseg.mp4")[1] == n


def test_unwritable_output_folder(tmp_path, ckpt, capsys):
    src = write_video(tmp_path / "a.mp4", noise_frames(2, 40, 32))
    (tmp_path / "blocker").write_text("a file where a folder should be")
    code, _, err = run_cli(capsys, src, "-o", tmp_path / "blocker" / "out.mp4", "--model", ckpt)
    assert code == 2
    one_line_error(err, "blocker", "cannot write")
    code, _, err = run_cli(capsys, src, "--masks", tmp_path / "blocker" / "m", "--model", ckpt)
    assert code == 2
    one_line_error(err, "blocker", "cannot write")
    assert not (tmp_path / "a_tfcseg.mp4").exists()


def test_existing_output_needs_overwrite(tmp_path, ckpt, capsys):
    src = write_video(tmp_path / "a.mp4", noise_frames(2, 40, 32))
    (tmp_path / "a_tfcseg.mp4").write_bytes(b"precious")
    code, _, err = run_cli(capsys, src, "--model", ckpt)
    assert code == 2
    one_line_error(err, "a_tfcseg.mp4", "--overwrite")
    assert (tmp_path / "a_tfcseg.mp4").read_bytes() == b"precious"
    code, _, err = run_cli(capsys, src, "--model", ckpt, "--overwrite", "-q")
    assert code == 0, err
    assert probe_video(tmp_path / "a_tfcseg.mp4").codec == "h264"


def test_failure_mid_video_leaves_no_output(tmp_path, ckpt, capsys):
    folder = tmp_path / "seq"
    folder.mkdir()
    for i, f in enumerate(noise_frames(4, 40, 32, seed=5)):
        cv2.imwrite(str(folder / f"{i}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(folder / "4.png"), np.zeros((20, 32, 3), np.uint8))  # another size, last
    code, _, err = run_cli(capsys, folder, "--model", ckpt, "-q")
    assert code == 2
    one_line_error(err, "4.png", "differs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seq"]  # no output, no temporary


def test_bad_options(tmp_path, ckpt, capsys):
    src = write_video(tmp_path / "a.mp4", noise_frames(2, 40, 32))
    for args, needle in [(["--opacity", "1.5"], "--opacity"), (["--mode", "fast"], "--mode"),
                         (["--start", "soon"], "--start"), (["--stride", "0"], "--stride"),
                         (["--precision", "int8"], "--precision"),
                         (["-k", "often"], "--keyframe-interval often: a whole number"),
                         (["--max-keyframe-interval", "8"], "--max-keyframe-interval: only with --keyframe-interval auto"),
                         (["-k", "auto", "--keyframe-similarity", "2"], "--keyframe-similarity must be"),
                         (["-k", "auto", "--min-keyframe-interval", "9", "--max-keyframe-interval", "4"],
                          "--min-keyframe-interval (9) is above --max-keyframe-interval (4)"),
                         (["-o", tmp_path / "a.webm"], "unsupported output format")]:
        code, _, err = run_cli(capsys, src, "--model", ckpt, *args)
        assert code == 2, args
        one_line_error(err, needle)


def test_default_model_not_shipped_is_a_clear_error(tmp_path, capsys, monkeypatch):
    import tfcseg.hub.refs

    monkeypatch.setattr(tfcseg.hub.refs, "SHIPPED_WEIGHTS", tmp_path / "weights")  # an install without weights
    src = write_video(tmp_path / "a.mp4", noise_frames(2, 40, 32))
    code, _, err = run_cli(capsys, src)
    assert code == 2
    one_line_error(err, "weights")
    assert not (tmp_path / "a_tfcseg.mp4").exists()


def test_masks_are_scored_by_eval(tmp_path, ckpt):
    """`--masks` output in the VSPW layout is what `tfcseg eval --predictions` reads."""
    from tfcseg.data import make_synthetic_vspw
    from tfcseg.evaluate import score_predictions

    root = make_synthetic_vspw(tmp_path / "ds", videos=1, frames=3, num_classes=5, size=(40, 56))
    origin = root / "data" / "video_000" / "origin"
    segment_video(origin, output=tmp_path / "o.mp4", model=ckpt, masks_dir=tmp_path / "preds",
                  progress=False)
    assert sorted(p.name for p in (tmp_path / "preds" / "video_000").iterdir()) == [
        p.stem + ".png" for p in sorted(origin.iterdir())]
    result = score_predictions(root, tmp_path / "preds", split="val", progress=False)
    assert result["frames"] == 3 and result["skipped_frames"] == 0
    assert 0.0 <= result["miou"] <= 1.0


def test_drawing_thread_reraises_and_stops():
    from tfcseg.segment import _DrawingThread

    drawn = []

    def draw(frame, labels):
        if frame == 3:
            raise OSError("disk full")
        drawn.append(frame)

    sink = _DrawingThread(draw, maxsize=2)
    with pytest.raises(OSError, match="disk full"):
        for i in range(50):
            sink.put(i, None)
        sink.finish()
    assert drawn == [0, 1, 2]
    sink.abort()
    ok = _DrawingThread(lambda f, l: drawn.append(f))
    for i in range(10, 13):
        ok.put(i, None)
    ok.finish()
    assert drawn[-3:] == [10, 11, 12]


def test_summary_lists_keyframes_fixed_and_auto(tmp_path, capsys):
    """A folder of frames with a scene cut at frame 5: the summary and its JSON list the
    keyframes (auto: the cut is one) and the mean interval between them."""
    torch.manual_seed(0)
    model = TFCSegFormer(tiny_config(tfc_trained=True, inference_short_side=0))
    randomise_bn(model)
    ckpt = save_checkpoint(model.eval(), tmp_path / "model")
    frames = tmp_path / "cut"
    frames.mkdir()
    for i, rgb in enumerate(spliced_video(cut=5, n=12)):  # PNG: lossless, the cut as made
        cv2.imwrite(str(frames / f"{i:03d}.png"), rgb[..., ::-1])
    fixed = segment_video(frames, output=tmp_path / "fixed.mp4", model=model, keyframe_interval=4,
                          progress=False)
    assert fixed["keyframe_indices"] == [0, 4, 8] and fixed["mean_keyframe_interval"] == 4.0
    assert fixed["keyframe_policy"] is None and fixed["keyframes_on_change"] is None

    auto_args = ["-k", "auto", "--keyframe-similarity", "0.5", "--keyframe-changed-share", "0.5",
                 "--max-keyframe-interval", "8"]
    assert CUT_POLICY == {"keyframe_interval": "auto", "keyframe_similarity": 0.5,
                          "keyframe_changed_share": 0.5, "max_keyframe_interval": 8}  # the same
    code, out, err = run_cli(capsys, frames, "--model", ckpt, "-o", tmp_path / "auto.mp4",
                             "--json", tmp_path / "auto.json", *auto_args)
    assert code == 0, err
    s = json.loads((tmp_path / "auto.json").read_text())
    assert s["keyframe_interval"] == "auto" and s["keyframe_indices"] == [0, 5]
    assert s["keyframes"] == 2 and s["keyframes_on_change"] == 1 and s["mean_keyframe_interval"] == 5.0
    assert s["keyframe_policy"] == {"keyframe_similarity": 0.5, "keyframe_changed_share": 0.5,
                                    "max_keyframe_interval": 8, "min_keyframe_interval": 1}
    text = " ".join(out.split())
    assert "auto: 1 on a change" in text and "mean interval 5.0" in text and "0, 5" in text


def test_msda_choice_reaches_the_summary(tmp_path, ckpt, capsys):
    src = write_video(tmp_path / "a.mp4", noise_frames(4, 48, 40), fps=NTSC)
    shares = {}
    for choice, threshold in (("off", None), ("0.3", 0.3), ("on", "config")):
        code, out, err = run_cli(capsys, src, "-o", tmp_path / f"{choice}.mp4", "--model", ckpt, "-k", "4",
                                 "--msda", choice, "--json", tmp_path / "s.json", "-q")
        assert code == 0, err
        s = json.loads((tmp_path / "s.json").read_text())
        expected = json.loads((ckpt / "config.json").read_text())["tfc"]["msda_threshold"] if threshold == "config" else threshold
        assert s["msda_threshold"] == expected
        shares[choice] = s["mean_msda_share"]
    assert not shares["off"] and shares["0.3"] <= shares["on"]
    assert s["label_hysteresis"] == 0.0  # the checkpoint's (none in its config)
    flicker = {}
    for margin in ("0", "1000"):
        code, out, err = run_cli(capsys, src, "-o", tmp_path / "h.mp4", "--model", ckpt, "--hysteresis", margin,
                                 "--overwrite", "--json", tmp_path / "h.json")
        assert code == 0, err
        h = json.loads((tmp_path / "h.json").read_text())
        assert h["label_hysteresis"] == float(margin) and "label hysteresis" in out
        flicker[margin] = h["flicker"]
    assert flicker["0"] > 0 and flicker["1000"] < flicker["0"]
    assert h["label_hysteresis_power"] == 0.0
    code, out, err = run_cli(capsys, src, "-o", tmp_path / "h.mp4", "--model", ckpt, "--hysteresis", "1000",
                             "--hysteresis-power", "3", "--overwrite", "--json", tmp_path / "q.json")
    assert code == 0, err
    q = json.loads((tmp_path / "q.json").read_text())
    assert q["label_hysteresis_power"] == 3.0 and "previous frame ^ 3" in out
    assert flicker["1000"] < q["flicker"]  # the margin fades where the frames differ
    code, out, err = run_cli(capsys, src, "--model", ckpt, "--hysteresis-power", "nan")
    assert code == 2 and "--hysteresis-power nan: expected a power >= 0" in err and "Traceback" not in err
    code, out, err = run_cli(capsys, src, "--model", ckpt, "--hysteresis", "-1")
    assert code == 2 and "--hysteresis -1.0: expected a logit margin >= 0" in err and "Traceback" not in err
    code, out, err = run_cli(capsys, src, "--model", ckpt, "--msda", "sometimes")
    assert code == 2 and "--msda sometimes" in err
    # --interpolation-power reaches the JSON; a bad one is one line
    code, out, err = run_cli(capsys, src, "-o", tmp_path / "p.mp4", "--model", ckpt, "--interpolation-power", "3",
                             "--overwrite", "--json", tmp_path / "p.json", "-q")
    assert code == 0, err
    assert json.loads((tmp_path / "p.json").read_text())["interpolation_power"] == 3.0
    code, out, err = run_cli(capsys, src, "--model", ckpt, "--interpolation-power", "0")
    assert code == 2 and "--interpolation-power 0.0: expected a power >= 1" in " ".join(err.split())
    assert "Traceback" not in err
