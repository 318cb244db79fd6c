"""Run folders and exact resume: checkpoints written atomically, RNG states, the metrics log.

Run folder layout (only rank 0 writes):
    <out>/last/        config.json, model.safetensors, train_state.pt  (every --save-every, at the end)
    <out>/best/        config.json, model.safetensors, best.json       (best val mIoU, with --eval-every)
    <out>/metrics.jsonl one JSON object a line: training averages every --log-every, evaluations
    <out>/train_config.json the TrainConfig of the latest start
A checkpoint folder is written beside its final name and renamed into place, so a crash
never leaves a half-written `last/`. `train_state.pt` holds tensors and plain types only and
is loaded with `weights_only=True`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import TfcsegError, WriteError
from ..io.atomic import (atomic_path, atomic_write_text, describe_os_error, fsync_folder, sweep_stale,
                         write_error)
from ..models.checkpoint import save_checkpoint
from ..models.config import CONFIG_NAME, WEIGHTS_NAME

STATE_NAME = "train_state.pt"
METRICS_NAME = "metrics.jsonl"
BEST_NAME = "best.json"
CHECKPOINT_FILES = {CONFIG_NAME, WEIGHTS_NAME, STATE_NAME, BEST_NAME}  # what tfcseg writes there


# ---- random state ------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain types (loadable with weights_only)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _to_lists(x: Any) -> Any:
    return [_to_lists(v) for v in x] if isinstance(x, (tuple, list)) else x


def _to_tuples(x: Any) -> Any:
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ---- folders -----------------------------------------------------------------------------


def swap_in(tmp: Path, final: Path) -> None:
    """Replace folder `final` by folder `tmp`: final -> .old, tmp -> final, drop .old.
    Between the two renames only `.old` exists; a failed second rename puts it back at
    once, and `recover` does so after a crash."""
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except OSError:
        if old.exists() and not final.exists():
            os.replace(old, final)
        raise
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def recover(final: Path) -> None:
    """Undo a crash inside `swap_in` or a checkpoint write: keep the last complete folder."""
    old = final.with_name(f".{final.name}.old")
    tmp = final.with_name(f".{final.name}.tmp")
    if not final.exists() and old.exists():
        os.replace(old, final)
    for stale in (old, tmp):
        if stale.exists():
            shutil.rmtree(stale)


def prepare_out(out: Path, resume: bool, overwrite: bool) -> None:
    """Make `out` ready for a run (rank 0 only): recover from a crash inside a swap; refuse to
    mix with an existing run unless resuming or overwriting; on a fresh start, remove what an
    earlier run of ours left (never anything else)."""
    last = out / "last"
    recover(last)
    recover(out / "best")
    sweep_stale(out)  # temporaries of a run killed while writing train_config.json / metrics.jsonl
    has_last = (last / STATE_NAME).is_file()
    if resume and not has_last:
        raise TfcsegError(f"{last}: nothing to resume (no {STATE_NAME}); start without resume=True",
                          options=("resume",))
    has_run = has_last or (out / "best" / WEIGHTS_NAME).is_file()
    if has_run and not resume and not overwrite:
        raise TfcsegError(f"{out}: a training run exists already; use resume=True to continue it "
                          "or overwrite=True to start again", options=("resume", "overwrite"))
    if not resume and out.exists():
        # A fresh start: nothing of an earlier run (replaced with --overwrite, or one that
        # never reached its first checkpoint) may mix with this one.
        for name in ("last", "best"):
            folder = out / name
            if not folder.exists():
                continue
            if not folder.is_dir() or not {p.name for p in folder.iterdir()} <= CHECKPOINT_FILES:
                raise TfcsegError(f"{folder}: exists and is not a tfcseg checkpoint folder; "
                                  "choose another --out")
            shutil.rmtree(folder)
        (out / METRICS_NAME).unlink(missing_ok=True)


def write_checkpoint(model: torch.nn.Module, final: Path, extra: dict[str, Any] | None = None) -> None:
    """`final` = the model's checkpoint folder plus `extra` files (name -> tensors/plain data
    for `torch.save`, or str for text), written beside it, flushed to the disk and swapped in.

    A full disk or another OS error raises a one-line `WriteError` (its `reason` says what
    ran out); `final` is then the previous checkpoint, untouched, and no temporary is left."""
    tmp = final.with_name(f".{final.name}.tmp")
    try:
        if tmp.exists():
            shutil.rmtree(tmp)
        save_checkpoint(model, tmp, durable=True)
        for name, data in (extra or {}).items():
            if isinstance(data, str):
                atomic_write_text(tmp / name, data, durable=True)
            else:
                with atomic_path(tmp / name, durable=True) as part, open(part, "wb") as f:
                    _torch_save(data, f)
        swap_in(tmp, final)
        fsync_folder(final.parent)
    except OSError as exc:
        reason = describe_os_error(exc)
        raise WriteError(f"{final}: could not save the checkpoint: {reason}", reason=reason,
                         errno=exc.errno) from None
    except WriteError as exc:
        raise WriteError(f"{final}: could not save the checkpoint: {exc.reason}", reason=exc.reason,
                         errno=exc.errno) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _torch_save(data: Any, f) -> None:
    """`torch.save` into an open file, a failed write raised as its OSError (a full disk).

    Through a Python file the write's OSError reaches us, though torch's zip writer, failing
    to finish the file next, raises "unexpected pos" (a RuntimeError) on top of it."""
    try:
        torch.save(data, f)
    except RuntimeError as exc:
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__cause__ or cause.__context__
        if cause is None:
            raise
        raise cause from None


def read_state(out: Path) -> dict[str, Any]:
    """The saved training state of `<out>/last` (tensors and plain types only)."""
    path = out / "last" / STATE_NAME
    try:
        if path.stat().st_size == 0:
            raise ValueError("the file is empty")
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable state is the user's file
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TfcsegError(f"{path}: not a readable training state ({why})") from None
    if not isinstance(state, dict) or state.get("format") != "tfcseg-train-state":
        raise TfcsegError(f"{path}: not a tfcseg training state")
    return state


class MetricsLog:
    """`<out>/metrics.jsonl`: one JSON object a line, appended (rank 0)."""

    def __init__(self, out: Path) -> None:
        self.path = out / METRICS_NAME

    def write(self, record: dict[str, Any]) -> None:
        try:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise write_error(self.path, exc) from None

    def truncate(self, upto: int) -> None:
        """Drop records after iteration `upto` (a resumed run writes them again)."""
        if not self.path.is_file():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a crash
            if rec.get("iter", 0) <= upto:
                keep.append(line)
        atomic_write_text(self.path, "".join(k + "\n" for k in keep))
