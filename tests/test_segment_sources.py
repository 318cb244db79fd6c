"""`tfcseg segment` on the videos people have: audio, variable frame rate, pixel aspect,
rotation, URLs and live streams, many files, masks that never destroy the input, signals.

Videos are made here by ffmpeg (a few frames of its test pattern); the model is tiny and random.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import audio_seconds, ffmpeg_clip, http_server

from tfcseg import segment_video
from tfcseg.cli import main
from tfcseg.io.video import ffmpeg_exe, open_frames, probe_video


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main(["segment", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str, *needles: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith("error:"), err
    for needle in needles:
        assert needle in " ".join(err.split()), (needle, err)


def mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


def test_audio_kept_and_cut_json_to_stdout_output_folder(tmp_path, tiny_ckpt, capsys):
    src = ffmpeg_clip(tmp_path / "talk.mp4", 1.5, 30, audio="aac")
    (tmp_path / "out").mkdir()
    code, out, err = run_cli(capsys, src, "--model", tiny_ckpt, "--start", "0.5", "--end", "1.2",
                             "-o", tmp_path / "out", "--json", "-", "-q")
    assert code == 0, err
    summary = json.loads(out)  # stdout holds the JSON alone; the table went to stderr
    result = tmp_path / "out" / "talk_tfcseg.mp4"  # -o a folder: the default name inside
    assert summary["output"] == str(result) and "tfcseg segment" in err
    assert summary["frames"] == 21 and summary["audio_streams"] == 1
    assert summary["duration"] == pytest.approx(0.7)
    info = probe_video(result)
    assert info.audio == ("aac",) and info.duration == pytest.approx(0.7, abs=0.04)
    assert abs(audio_seconds(result) - 0.7) <= 1 / 30  # sound as long as the video, to a frame
    code, _, err = run_cli(capsys, src, "--model", tiny_ckpt, "--no-audio", "--end", "0.2",
                           "-o", tmp_path / "mute.mp4", "-q")
    assert code == 0, err
    assert probe_video(tmp_path / "mute.mp4").audio == ()


def test_variable_frame_rate_keeps_its_timing_and_times_select_what_is_shown(tmp_path, tiny_ckpt, capsys):
    # 15 frames at 30 fps, then 5 at 10 fps: 1.0 s. Read as constant 30 fps it would be 0.67 s.
    src = ffmpeg_clip(tmp_path / "vfr.mp4", 0.5, 30, then=(0.5, 10))
    code, _, err = run_cli(capsys, src, "--model", tiny_ckpt, "--json", tmp_path / "s.json", "-q")
    assert code == 0, err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] == 20 and summary["variable_frame_rate"] and summary["duration"] == 1
    out = tmp_path / "vfr_tfcseg.mp4"
    assert probe_video(out).duration == pytest.approx(1.0, abs=0.005)
    assert [f.time for f in open_frames(out)] == [f.time for f in open_frames(src)]
    # --start/--end as a player shows them: 0.6-0.8 s are frames 16 and 17 (not 18-23).
    code, _, err = run_cli(capsys, src, "--model", tiny_ckpt, "--start", "0.6", "--end", "0.8",
                           "--masks", tmp_path / "m", "-o", tmp_path / "cut.mp4", "-q")
    assert code == 0, err
    assert sorted(p.stem for p in (tmp_path / "m" / "vfr").iterdir()) == ["00016", "00017"]
    assert probe_video(tmp_path / "cut.mp4").duration == pytest.approx(0.2, abs=0.005)


def test_pixel_aspect_and_rotation_kept(tmp_path, tiny_ckpt, capsys):
    (tmp_path / "clips").mkdir()
    ffmpeg_clip(tmp_path / "clips" / "wide.mp4", 0.2, 30, size=(64, 48), sar="4/3")
    ffmpeg_clip(tmp_path / "clips" / "phone.mp4", 0.2, 30, size=(64, 48), rotate=90)
    code, _, err = run_cli(capsys, tmp_path / "clips", "--model", tiny_ckpt, "--output-dir", tmp_path / "out",
                           "--side-by-side", "--no-legend", "-q")
    assert code == 0, err
    wide = probe_video(tmp_path / "out" / "wide_tfcseg.mp4")
    assert (wide.width, wide.height, wide.sar) == (128, 48, Fraction(4, 3))
    assert wide.display_aspect == 2 * Fraction(16, 9)  # two 16:9 pictures side by side
    phone = tmp_path / "out" / "phone_tfcseg.mp4"
    info = probe_video(phone)
    assert (info.width, info.height) == (96, 64)  # upright: 48x64, twice
    head = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(phone)], capture_output=True, text=True).stderr
    assert "Video: h264" in head and "rotation of" not in head  # upright pixels, no rotation to apply
    upright = next(iter(open_frames(tmp_path / "clips" / "phone.mp4"))).rgb
    left = next(iter(open_frames(phone))).rgb[:, :48]
    assert mae(left, upright) < 0.5 * mae(left, upright[::-1, ::-1])


def test_url_source(tmp_path, tiny_ckpt, capsys, monkeypatch):
    ffmpeg_clip(tmp_path / "cam.mp4", 0.5, 30, audio="aac")
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    with http_server(tmp_path) as base:
        code, _, err = run_cli(capsys, f"{base}/cam.mp4", "--model", tiny_ckpt, "--json", "s.json", "-q")
    assert code == 0, err
    out = tmp_path / "here" / "cam_tfcseg.mp4"  # a URL's output: in the current folder
    summary = json.loads((tmp_path / "here" / "s.json").read_text())
    assert summary["frames"] == 15 and summary["audio_streams"] == 1
    assert probe_video(out).audio == ("aac",)


def test_live_stream_stopped_by_ctrl_c_gives_a_complete_output(tmp_path, tiny_ckpt):
    # 8 s: ffmpeg reads about 5 s of a stream before its first frame (its analysis), so a
    # shorter live stream may end before Ctrl-C can be pressed
    ffmpeg_clip(tmp_path / "live.ts", 8.0, 30, audio="aac", fmt="mpegts")
    out = tmp_path / "live.mp4"

    def press_ctrl_c() -> None:  # once the first frames are being written, under segment's handler
        deadline = time.time() + 60
        while time.time() < deadline and not (
                any(p.name.startswith(".live.mp4.") for p in tmp_path.iterdir())
                and signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
            time.sleep(0.05)
        time.sleep(0.1)
        if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:  # never into pytest itself
            os.kill(os.getpid(), signal.SIGINT)

    with http_server(tmp_path, live=tmp_path / "live.ts", seconds=8.0) as base:
        threading.Thread(target=press_ctrl_c, daemon=True).start()
        summary = segment_video(f"{base}/live", out, model=tiny_ckpt, progress=False)
    assert summary["interrupted"] and 0 < summary["frames"] < 240
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handlers restored
    frames = list(open_frames(out))
    assert len(frames) == summary["frames"]  # complete and playable
    assert probe_video(out).audio == ("aac",)
    assert abs(audio_seconds(out) - float(summary["duration"])) <= 1 / 30 + 0.03
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live.mp4", "live.ts"]


def test_many_videos_one_failure_reported_the_rest_done(tmp_path, tiny_ckpt, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    for name in ("a.mp4", "b.mov", "c.mkv"):
        ffmpeg_clip(folder / name, 0.2, 30)
    (folder / "broken.mp4").write_text("not a video\n" * 10)
    code, out, err = run_cli(capsys, folder, "--model", tiny_ckpt, "--output-dir", tmp_path / "out",
                             "--json", "-", "--classes", "class_1,3", "-q")
    assert code == 2
    results = json.loads(out)
    assert [Path(r["input"]).name for r in results] == ["a.mp4", "b.mov", "broken.mp4", "c.mkv"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a_tfcseg.mp4", "b_tfcseg.mp4", "c_tfcseg.mp4"]
    broken = results[2]
    assert broken["output"] is None and "not a readable video" in broken["error"]
    assert all(r["error"] is None and r["frames"] == 6 and r["classes"] == ["class_1", "class_3"]
               for r in results if r is not broken)
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "broken.mp4" in errors[0] and "Traceback" not in err
    # Several inputs with -o naming a file: refused, as is a class the model does not have.
    code, _, err = run_cli(capsys, folder / "a.mp4", folder / "b.mov", "-o", tmp_path / "x.mp4",
                           "--model", tiny_ckpt)
    assert code == 2
    one_line_error(err, "--output-dir")
    code, _, err = run_cli(capsys, folder / "a.mp4", "--model", tiny_ckpt, "--classes", "road",
                           "-o", tmp_path / "y.mp4", "-q")
    assert code == 2
    one_line_error(err, "--classes", "road", "class_0")


def test_a_batch_never_overwrites_its_own_masks(tmp_path, tiny_ckpt, capsys):
    """Two inputs of one name in different folders: the second's masks would land in the
    first's folder; refused for that video (even with --overwrite), the first's kept."""
    for sub in ("x", "y"):
        (tmp_path / sub).mkdir()
        ffmpeg_clip(tmp_path / sub / "clip.mp4", 0.1, 30)
    code, out, err = run_cli(capsys, tmp_path / "x" / "clip.mp4", tmp_path / "y" / "clip.mp4", "--model",
                             tiny_ckpt, "--masks", tmp_path / "masks", "--overwrite", "--json", "-", "-q")
    assert code == 2
    first, second = json.loads(out)
    assert first["error"] is None and len(list((tmp_path / "masks" / "clip").glob("*.png"))) == first["frames"]
    assert "wrote its masks there" in second["error"] and str(tmp_path / "y" / "clip.mp4") in second["error"]
    assert (tmp_path / "x" / "clip_tfcseg.mp4").is_file()  # outputs beside the inputs: no clash there


def _png_folder(folder: Path, n: int) -> dict[str, bytes]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:04d}.png"), rng.integers(0, 256, (32, 40, 3), dtype=np.uint8))
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_masks_never_replace_the_input_frames(tmp_path, tiny_ckpt, capsys):
    seq = tmp_path / "seq"
    before = _png_folder(seq, 3)
    # The reproduction: masks at the frames folder's parent would be <parent>/seq = the input.
    code, _, err = run_cli(capsys, seq, "--model", tiny_ckpt, "--masks", tmp_path, "--overwrite", "-q")
    assert code == 2
    one_line_error(err, "is the folder of the input frames")
    vspw = tmp_path / "video_1" / "origin"  # VSPW layout: masks at <root> would replace video_1/
    _png_folder(vspw, 2)
    code, _, err = run_cli(capsys, vspw, "--model", tiny_ckpt, "--masks", tmp_path, "--overwrite", "-q")
    assert code == 2
    one_line_error(err, "holds the input frames", "would delete them")
    code, _, err = run_cli(capsys, seq, "--model", tiny_ckpt, "--masks", seq, "-q")  # inside the input
    assert code == 2
    one_line_error(err, "is inside the folder of the input frames")
    (tmp_path / "preds" / "seq").mkdir(parents=True)
    (tmp_path / "preds" / "seq" / "notes.txt").write_text("mine")
    code, _, err = run_cli(capsys, seq, "--model", tiny_ckpt, "--masks", tmp_path / "preds", "--overwrite", "-q")
    assert code == 2
    one_line_error(err, "holds other files than masks")
    assert {p.name: p.read_bytes() for p in seq.iterdir()} == before
    assert (tmp_path / "preds" / "seq" / "notes.txt").read_text() == "mine"


def test_rerun_replaces_the_masks_whole(tmp_path, tiny_ckpt, capsys):
    src = ffmpeg_clip(tmp_path / "clip.mp4", 0.2, 30)
    code, _, err = run_cli(capsys, src, "--model", tiny_ckpt, "--masks", tmp_path / "preds", "-q")
    assert code == 0, err
    assert len(list((tmp_path / "preds" / "clip").iterdir())) == 6
    code, _, err = run_cli(capsys, src, "--model", tiny_ckpt, "--masks", tmp_path / "preds", "--end", "0.1",
                           "--overwrite", "-q")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "preds").iterdir()) == ["clip"]  # no temporary left
    assert sorted(p.stem for p in (tmp_path / "preds" / "clip").iterdir()) == ["00000", "00001", "00002"]


def test_sigterm_removes_the_temporary_file(tmp_path, tiny_ckpt):
    src = ffmpeg_clip(tmp_path / "long.mp4", 20.0, 30)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.Popen([sys.executable, "-m", "tfcseg", "segment", str(src), "--model", str(tiny_ckpt), "-q"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if any(p.name.startswith(".long_tfcseg.mp4.") for p in tmp_path.iterdir()):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4"]
