"""Fault injection: what a hostile world does to `train`, `segment` and `eval`.

Kills (SIGKILL, SIGTERM) at random points, a second run on the same output at the same
time, a full disk, read-only targets, corrupt checkpoints and data. Every case checks the
exit status, the one line that says what happened, and what is on disk afterwards: nothing
lost (a rerun or `--resume` finishes the work, to the same result) and nothing stale (no
temporaries, no lock). Tiny models and data: the whole file runs in about a minute.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import imageio_ffmpeg
import pytest
import torch
from safetensors.torch import load_file, save_file

from tfcseg.cli import main
from tfcseg.data import read_mask
from tfcseg.io.lock import LOCK_NAME

from faultkit import (eval_data, fill, frames_dir, kill_at_random, long_frames_dir, model_dir, one_thread, read_only, rng,  # noqa: F401
                      error_line, sigterm_at_random, small_disk, start_cli, temporaries, train_args, train_data)

pytestmark = pytest.mark.faults

# What PyTorch imports lazily on first use (AdamW pulls in torch._dynamo), imported now: a
# SIGTERM raised inside such an import would leave it half-initialised in this test process,
# and every later test would fail on it (a real `tfcseg` process exits instead).
torch.optim.AdamW([torch.zeros(1, requires_grad=True)])

RUN_FILES = ["last", "metrics.jsonl", "train_config.json"]
CHECKPOINT_FILES = ["config.json", "model.safetensors", "train_state.pt"]


def iteration(out: Path) -> int:
    return torch.load(out / "last" / "train_state.pt", weights_only=True)["iteration"]


def same_weights(a: Path, b: Path) -> bool:
    x, y = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def logged_iterations(out: Path) -> list[int]:
    return [json.loads(line)["iter"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def decoded_frames(path: Path) -> int:
    reader = imageio_ffmpeg.read_frames(str(path))
    next(reader)
    return sum(1 for _ in reader)


def pngs(folder: Path, pattern: str = "*.png") -> list[Path]:
    """The PNGs under their final names (temporaries start with a dot)."""
    return sorted(p for p in folder.glob(pattern) if not p.name.startswith("."))


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ---- train ----------------------------------------------------------------------------------


def test_train_sigkill_at_a_random_point_and_a_second_run_meanwhile(train_data, tmp_path, rng, capsys):
    out = tmp_path / "run"
    args = train_args(train_data, out)
    proc = start_cli(args, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not (out / "last" / "train_state.pt").is_file() and proc.poll() is None:  # under way
            assert time.monotonic() < deadline, "the training never saved"
            time.sleep(0.02)
        # A second training into the live run's folder is refused at once, naming the holder,
        # whether it means to continue the run or to replace it.
        for extra in (["--resume"], ["--overwrite"], []):
            t0 = time.monotonic()
            assert main(args + extra) == 2
            line = error_line(capsys.readouterr().err)
            assert f"run: another training run (PID {proc.pid}) is writing to this folder" in line, line
            assert time.monotonic() - t0 < 10
        rc, _, err = kill_at_random(proc, lambda: True, signal.SIGKILL, rng, within=1.5)
    finally:
        proc.kill()
        proc.wait()
    print(f"exit status {rc}")  # -9: killed mid-run; 0: it finished first
    assert rc in (-signal.SIGKILL, 0), err
    if rc == -signal.SIGKILL:
        killed_at = iteration(out)  # the last complete checkpoint: `last/` is never half-written
        assert 1 <= killed_at <= 30
        stale = (out / LOCK_NAME).exists()  # not when the kill came after the run let go of it
        assert stale or killed_at == 30
        assert main(args + ["--resume"]) == 0
        err = capsys.readouterr().err
        if stale:
            assert f"took over the lock of training process {proc.pid}, which is no longer running" in err
    # Nothing lost: the run ends where an uninterrupted one ends, bit for bit; nothing stale.
    assert main(train_args(train_data, tmp_path / "full")) == 0
    assert iteration(out) == 30 and same_weights(out / "last", tmp_path / "full" / "last")
    assert logged_iterations(out) == list(range(1, 31))
    assert sorted(p.name for p in out.iterdir()) == RUN_FILES
    assert sorted(p.name for p in (out / "last").iterdir()) == CHECKPOINT_FILES


def test_train_sigterm_at_a_random_point_saves_and_exits_143(train_data, tmp_path, rng, capsys):
    out = tmp_path / "run"
    args = train_args(train_data, out, 20)
    with sigterm_at_random(rng, lambda: True, within=2.5):  # setup included
        rc = main(args)
    err = capsys.readouterr().err
    print(f"exit status {rc}: {err.strip().splitlines()[-1:]}")  # 143: stopped mid-run; 0: finished first
    assert rc in (143, 0), err
    said = [ln for ln in err.splitlines() if "interrupted" in ln or "terminated" in ln]
    if rc == 143:
        assert len(said) == 1 and "Traceback" not in err, err
        if "interrupted at iteration" in said[0]:  # stopped inside the loop: saved first
            k = int(said[0].split("interrupted at iteration ")[1].split(";")[0])
            assert iteration(out) == k and "continue with --resume" in said[0]
    assert not (out / LOCK_NAME).exists() and temporaries(tmp_path) == []
    if (out / "last" / "train_state.pt").is_file():
        assert main(args + ["--resume"]) == 0
    else:  # stopped before the first checkpoint: nothing to continue, so start again
        assert main(args + ["--overwrite"]) == 0
    assert iteration(out) == 20 and logged_iterations(out) == list(range(1, 21))
    assert sorted(p.name for p in out.iterdir()) == RUN_FILES


def test_train_on_a_full_disk_stops_in_one_line_and_resumes_once_space_is_free(train_data, small_disk, capsys):
    out = small_disk / "run"
    args = train_args(train_data, out, 4)
    filler = fill(small_disk, leave=1400 * 1024)  # room for one checkpoint (~0.9 MB), not two
    assert main(args) == 2
    line = error_line(capsys.readouterr().err)
    assert "run/last: could not save the checkpoint: the disk is full (no space left on device)" in line
    assert "the checkpoint of iteration 1" in line and "is intact; free some space and continue with --resume" in line
    assert sorted(p.name for p in out.iterdir()) == RUN_FILES  # no .last.tmp, no lock
    assert sorted(p.name for p in (out / "last").iterdir()) == CHECKPOINT_FILES and iteration(out) == 1
    filler.unlink()
    assert main(args + ["--resume"]) == 0
    assert iteration(out) == 4 and logged_iterations(out) == [1, 2, 3, 4]
    assert temporaries(small_disk) == []


# ---- segment --------------------------------------------------------------------------------


def segment_args(frames: Path, out: Path, model: Path, masks: Path) -> list[str]:
    return ["segment", str(frames), "-o", str(out), "-m", str(model), "--masks", str(masks), "-q",
            "--device", "cpu", "--overwrite"]


def check_segment_output(out: Path, masks: Path, frames: tuple[int, ...] = (150,)) -> None:
    """A whole video of one run's frames (150, or 500 for the long input), and whole masks
    of at least the first 150 frames."""
    assert decoded_frames(out) in frames
    masks_found = pngs(masks)
    assert {p.stem for p in masks_found} >= {f"{i:04d}" for i in range(150)}
    assert all(read_mask(p).shape == (64, 96) for p in masks_found)


def test_segment_sigkill_at_a_random_point_beside_a_second_run(frames_dir, long_frames_dir, model_dir, tmp_path,
                                                               rng, capsys):
    out, masks = tmp_path / "out.mp4", tmp_path / "masks"
    args = segment_args(frames_dir, out, model_dir, masks)
    proc = start_cli(segment_args(long_frames_dir, out, model_dir, masks), tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not any(tmp_path.glob(".out.mp4.*")) and proc.poll() is None:  # encoding
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert main(args) == 0  # a second run on the same output, at the same time
        rc, _, err = kill_at_random(proc, lambda: True, signal.SIGKILL, rng, within=1.5)
    finally:
        proc.kill()
        proc.wait()
    print(f"exit status {rc}")  # -9: killed mid-run; 0: it finished first
    assert rc in (-signal.SIGKILL, 0), err
    # Whatever the killed run left, the files under their final names are whole.
    check_segment_output(out, masks / "clip", (150, 500))
    capsys.readouterr()
    assert main(args) == 0  # a rerun removes the killed run's temporaries
    check_segment_output(out, masks / "clip")
    assert temporaries(tmp_path) == []


def test_segment_sigterm_at_a_random_point_leaves_no_temporaries(frames_dir, model_dir, tmp_path, rng, capsys):
    out, masks = tmp_path / "out.mp4", tmp_path / "masks"
    args = segment_args(frames_dir, out, model_dir, masks)
    with sigterm_at_random(rng, lambda: any(tmp_path.glob(".out.mp4.*")), within=1.2):  # once encoding
        rc = main(args)
    err = capsys.readouterr().err
    print(f"exit status {rc}: {err.strip().splitlines()[-1:]}")  # 143: stopped mid-run; 0: finished first
    assert rc in (143, 0), err
    if rc == 143:
        assert "terminated (SIGTERM)" in err and "Traceback" not in err
        assert not out.exists()  # never a partial video under the final name
        assert all(read_mask(p).shape == (64, 96) for p in pngs(masks / "clip"))
    assert temporaries(tmp_path) == []
    assert main(args) == 0
    check_segment_output(out, masks / "clip")


# ---- eval -----------------------------------------------------------------------------------


def eval_args(data: Path, model: Path, preds: Path, result: Path) -> list[str]:
    return ["eval", "--data-root", str(data), "--model", str(model), "--short-side", "0", "--device", "cpu",
            "--save-predictions", str(preds), "--json", str(result), "--overwrite", "-q"]


def check_predictions(preds: Path) -> None:
    for video in ("video_000", "video_001"):
        found = pngs(preds / video)
        assert [p.stem for p in found] == [f"{i:05d}" for i in range(40)]
        assert all(read_mask(p).shape == (48, 64) for p in found)


def test_eval_sigkill_at_a_random_point_beside_a_second_run(eval_data, model_dir, tmp_path, rng, capsys):
    preds = tmp_path / "preds"
    proc = start_cli(eval_args(eval_data, model_dir, preds, tmp_path / "a.json"), tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not any(preds.rglob("*.png")) and proc.poll() is None:  # predicting
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert main(eval_args(eval_data, model_dir, preds, tmp_path / "b.json")) == 0  # at the same time
        rc, _, err = kill_at_random(proc, lambda: True, signal.SIGKILL, rng, within=1.0)
    finally:
        proc.kill()
        proc.wait()
    print(f"exit status {rc}")  # -9: killed mid-run; 0: it finished first
    assert rc in (-signal.SIGKILL, 0), err
    check_predictions(preds)
    capsys.readouterr()
    assert main(eval_args(eval_data, model_dir, preds, tmp_path / "c.json")) == 0
    check_predictions(preds)
    b, c = (json.loads((tmp_path / n).read_text()) for n in ("b.json", "c.json"))
    assert (b["miou"], b["mvc8"], b["frames"]) == (c["miou"], c["mvc8"], c["frames"])
    assert temporaries(tmp_path) == []
    # the saved predictions score as the run did
    assert main(["eval", "--data-root", str(eval_data), "--predictions", str(preds), "--json",
                 str(tmp_path / "d.json"), "-q"]) == 0
    assert json.loads((tmp_path / "d.json").read_text())["miou"] == c["miou"]


def test_eval_sigterm_at_a_random_point_leaves_no_temporaries(eval_data, model_dir, tmp_path, rng, capsys):
    preds = tmp_path / "preds"
    args = eval_args(eval_data, model_dir, preds, tmp_path / "r.json")
    with sigterm_at_random(rng, lambda: any(preds.rglob("*.png")), within=1.0):  # once predicting
        rc = main(args)
    err = capsys.readouterr().err
    print(f"exit status {rc}: {err.strip().splitlines()[-1:]}")  # 143: stopped mid-run; 0: finished first
    assert rc in (143, 0), err
    if rc == 143:
        assert "terminated (SIGTERM)" in err and "Traceback" not in err
        assert not (tmp_path / "r.json").exists()
        assert all(read_mask(p).shape == (48, 64) for p in pngs(preds, "*/*.png"))
    assert temporaries(tmp_path) == []
    assert main(args) == 0
    check_predictions(preds)


# ---- full and read-only disks -----------------------------------------------------------------


def test_segment_and_eval_on_a_full_disk(frames_dir, eval_data, model_dir, small_disk, capsys):
    fill(small_disk, leave=16 * 1024)
    assert main(segment_args(frames_dir, small_disk / "out.mp4", model_dir, small_disk / "masks")) == 2
    line = error_line(capsys.readouterr().err)
    assert "out.mp4" in line or "masks" in line
    assert "no space left on device" in line.lower(), line
    assert not (small_disk / "out.mp4").exists()
    assert main(eval_args(eval_data, model_dir, small_disk / "preds", small_disk / "r.json")) == 2
    line = error_line(capsys.readouterr().err)
    assert "the disk is full (no space left on device)" in line, line
    assert temporaries(small_disk) == []


def test_read_only_targets_are_one_line_each(train_data, eval_data, frames_dir, model_dir, read_only, capsys):
    folder, reason = read_only
    runs = {
        "train": train_args(train_data, folder / "run", 2),
        "segment": ["segment", str(frames_dir), "-o", str(folder / "out.mp4"), "-m", str(model_dir), "-q"],
        "eval": eval_args(eval_data, model_dir, folder / "preds", folder.parent / "r.json"),
        "export": ["export", str(model_dir), "-o", str(folder / "pub")],
        "convert": ["convert", str(model_dir), "-o", str(folder / "converted")],
    }
    for name, args in runs.items():
        assert main(args) == 2, name
        line = error_line(capsys.readouterr().err)
        assert reason in line and str(folder) in line, (name, line)
    assert list(folder.iterdir()) == []


# ---- corrupt checkpoints and data ----------------------------------------------------------------


def test_corrupt_checkpoints_are_refused_in_one_line_and_left_as_they_are(train_data, frames_dir, tmp_path, capsys):
    out = tmp_path / "run"
    args = train_args(train_data, out, 2)
    assert main(args) == 0
    good = files(out)
    weights = out / "last" / "model.safetensors"
    state = out / "last" / "train_state.pt"
    sd = {k: v.clone() for k, v in load_file(str(weights)).items()}  # not a view of the file
    sd["decoder.classifier.weight"][0, 0] = float("nan")
    corruptions = {
        "truncated weights": (weights, good["last/model.safetensors"][:1000], "not a valid safetensors file"),
        "garbage state": (state, b"PK\x03\x04 not a zip", "not a readable training state"),
        "empty state": (state, b"", "not a readable training state"),
    }
    for what, (path, data, says) in corruptions.items():
        path.write_bytes(data)
        assert main(args + ["--resume", "--iters", "3"]) == 2, what
        line = error_line(capsys.readouterr().err)
        assert str(path) in line and says in line, (what, line)
        assert files(out) == {**good, str(path.relative_to(out)): data}, what  # nothing else touched
        path.write_bytes(good[str(path.relative_to(out))])
    save_file(sd, str(weights))
    assert main(args + ["--resume", "--iters", "3"]) == 2
    assert "non-finite weights (NaN or Inf) in 1 tensor(s): decoder.classifier.weight" in error_line(
        capsys.readouterr().err)
    # the same broken checkpoint never labels a video as class 0 without a word
    assert main(["segment", str(frames_dir), "-o", str(tmp_path / "o.mp4"), "-m", str(out / "last"), "-q"]) == 2
    assert "non-finite weights" in error_line(capsys.readouterr().err)
    assert not (tmp_path / "o.mp4").exists() and temporaries(tmp_path) == []


def test_corrupt_training_data_is_a_clean_warning_line(train_data, tmp_path, capsys):
    data = shutil.copytree(train_data, tmp_path / "data")
    (data / "data" / "video_001" / "origin" / "00003.jpg").write_bytes(b"")
    (data / "data" / "video_000" / "mask" / "00005.png").write_bytes(b"\x89PNG broken")
    assert main(train_args(data, tmp_path / "run", 14, "--save-every", "100")) == 0  # one epoch: every clip
    err = capsys.readouterr().err
    warned = [ln for ln in err.splitlines() if ln.startswith("warning:")]
    assert any("video_001/origin/00003.jpg: image is an empty (zero-byte) file" in ln for ln in warned), err
    assert any("video_000/mask/00005.png" in ln for ln in warned), err
    assert "DataWarning" not in err and "warnings.warn" not in err  # no Python warning format
    assert iteration(tmp_path / "run") == 14


def test_outputs_pointed_at_their_inputs_are_refused(frames_dir, eval_data, model_dir, tmp_path, capsys):
    frames, data, model = files(frames_dir), files(eval_data), files(model_dir)
    runs = {
        "is the folder of the input frames": segment_args(frames_dir, tmp_path / "o.mp4", model_dir,
                                                          frames_dir.parent),
        "is inside the dataset's data/ folder": eval_args(eval_data, model_dir, eval_data / "data",
                                                          tmp_path / "r.json"),
        "is the checkpoint's own folder": ["export", str(model_dir), "-o", str(model_dir), "--overwrite"],
        "holds the checkpoint": ["convert", str(model_dir), "-o", str(model_dir.parent), "--overwrite"],
    }
    for says, args in runs.items():
        assert main(args) == 2, says
        assert says in error_line(capsys.readouterr().err)
    assert (files(frames_dir), files(eval_data), files(model_dir)) == (frames, data, model)
    assert list(tmp_path.iterdir()) == []
