"""What the fault-injection suite (test_faults.py) shares: tiny data and models, subprocess runs of the CLI,
kills at random points, tiny and read-only file systems.

The random points come from one seed per test, shown on failure; set TFCSEG_FAULT_SEED to
replay a run."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
TINY = {"hidden_sizes": [8, 16, 24, 32], "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 4],
        "decoder_dim": 32, "tfc": {"msda_heads": 2, "msda_points": 2}}


@pytest.fixture(autouse=True)
def one_thread():
    """As the subprocesses run (OMP_NUM_THREADS=1): the same results, bit for bit."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def rng(request) -> random.Random:
    seed = int(os.environ.get("TFCSEG_FAULT_SEED") or random.randrange(2**31))
    request.node.user_properties.append(("fault_seed", seed))
    print(f"fault seed {seed} (TFCSEG_FAULT_SEED={seed} replays it)")
    return random.Random(seed)


# ---- data and models ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def train_data(tmp_path_factory) -> Path:
    from tfcseg.data import make_synthetic_vspw

    return make_synthetic_vspw(tmp_path_factory.mktemp("train-data"), videos=2, frames=8, num_classes=4,
                               size=(64, 96), seed=0)


@pytest.fixture(scope="session")
def eval_data(tmp_path_factory) -> Path:
    from tfcseg.data import make_synthetic_vspw

    return make_synthetic_vspw(tmp_path_factory.mktemp("eval-data"), videos=2, frames=40, num_classes=4,
                               size=(48, 64), seed=1, splits={"val": [0, 1]})


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A tiny random 4-class model that infers at the frames' own size."""
    from conftest import tiny_config

    from tfcseg import TFCSegFormer, save_checkpoint

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "tiny"
    save_checkpoint(TFCSegFormer(tiny_config(num_classes=4, tfc_trained=True, inference_short_side=0)), folder)
    return folder


def _frames(folder: Path, n: int) -> Path:
    folder.mkdir(parents=True)
    small = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    for i in range(n):
        cv2.imwrite(str(folder / f"{i:04d}.png"),
                    cv2.resize(np.roll(small, i, axis=1), (96, 64), interpolation=cv2.INTER_CUBIC))
    return folder


@pytest.fixture(scope="session")
def frames_dir(tmp_path_factory) -> Path:
    """150 PNG frames of 96x64 named `clip` (about 3 s of segmenting on one core)."""
    return _frames(tmp_path_factory.mktemp("frames") / "clip", 150)


@pytest.fixture(scope="session")
def long_frames_dir(tmp_path_factory) -> Path:
    """The same 150 frames and 350 more, also named `clip` (a run that outlasts another)."""
    return _frames(tmp_path_factory.mktemp("long-frames") / "clip", 500)


def train_args(data: Path, out: Path, iters: int = 30, *extra: str) -> list[str]:
    return ["train", "--data-root", str(data), "--out", str(out), "--iters", str(iters), "--crop", "32",
            "--base-size", "48x64", "--clip-len", "2", "--warmup", "1", "--save-every", "1",
            "--log-every", "1", "--model-config", json.dumps(TINY), "--workers", "0", "--no-progress",
            *extra]


# ---- running the CLI --------------------------------------------------------------------------


def start_cli(args: list[str], cwd: Path) -> subprocess.Popen:
    """`python -m tfcseg ARGS` in its own process, offline, on one thread."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "tfcseg", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_at_random(proc: subprocess.Popen, ready: Callable[[], bool], sig: int, rng: random.Random,
                   within: float, timeout: float = 60.0) -> tuple[int, str, str]:
    """Once `ready()` (the run is under way), wait a random time up to `within` seconds and
    send `sig`; (exit status, stdout, stderr). A run that ends first is not signalled."""
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("the run never got under way")
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, within))
    if proc.poll() is None:
        proc.send_signal(sig)
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


@contextlib.contextmanager
def sigterm_at_random(rng: random.Random, ready: Callable[[], bool], within: float) -> Iterator[None]:
    """SIGTERM to this very process at a random point of the block (once `ready()`): for
    in-process `main()` runs, whose handler turns it into a clean exit. A signal that comes
    after the block is caught here and ignored."""
    done = threading.Event()
    late: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: late.append(s))

    def fire() -> None:
        while not ready() and not done.is_set():
            time.sleep(0.01)
        if not done.wait(rng.uniform(0.0, within)):
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=fire, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        time.sleep(0.05)  # a signal sent just now is handled here, not later
        signal.signal(signal.SIGTERM, previous)


def error_line(err: str) -> str:
    """The one `error:` line of a run's stderr (asserting there is exactly one, and no traceback)."""
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def temporaries(folder: Path) -> list[Path]:
    """Anything tfcseg writes under a temporary name, anywhere below `folder`."""
    return sorted(p for p in folder.rglob("*") if ".tmp" in p.name or p.name.endswith(".old"))


# ---- file systems -------------------------------------------------------------------------------


def _mount_tmpfs(where: Path, options: str) -> str | None:
    """Mount a tmpfs at `where`; None, or why it cannot be done here."""
    if os.name != "posix" or not sys.platform.startswith("linux"):
        return "tmpfs mounts need Linux"
    if os.geteuid() != 0:
        return f"mounting a tmpfs needs root (id -u is {os.geteuid()})"
    if shutil.which("mount") is None:
        return "no mount command"
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, f"tfcseg-{uuid.uuid4().hex[:6]}", str(where)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return f"mount -t tmpfs failed: {proc.stderr.strip() or proc.returncode}"
    return None


def _unmount(where: Path) -> None:
    subprocess.run(["umount", "-l", str(where)], capture_output=True)


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A 4 MiB tmpfs (needs root; skipped with the reason otherwise)."""
    where = tmp_path / "small-disk"
    why = _mount_tmpfs(where, "size=4m,mode=0755")
    if why:
        pytest.skip(why)
    try:
        yield where
    finally:
        _unmount(where)


def fill(disk: Path, leave: int) -> Path:
    """Fill `disk` up to `leave` free bytes with one file (the one to delete to free space)."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave))
    return filler


@pytest.fixture
def read_only(tmp_path) -> Iterator[tuple[Path, str]]:
    """(a read-only folder, what the error says): a read-only tmpfs as root, else a folder
    without write permission."""
    where = tmp_path / "read-only"
    if os.name == "posix" and os.geteuid() == 0:
        why = _mount_tmpfs(where, "ro,size=1m")
        if why:
            pytest.skip(why)
        try:
            yield where, "the file system is read-only"
        finally:
            _unmount(where)
    else:
        where.mkdir()
        where.chmod(0o555)
        try:
            try:
                (where / "probe").touch()
            except OSError:
                pass
            else:
                pytest.skip("a folder without write permission is writable here (CAP_DAC_OVERRIDE?)")
            yield where, "permission denied"
        finally:
            where.chmod(0o755)
