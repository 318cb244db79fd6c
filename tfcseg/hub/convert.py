"""The cache of Hub `transformers` SegFormers converted to tfcseg format.

A Hub repo holding a `transformers` SegFormer is converted once (`convert_checkpoint`) into
`tfcseg.runtime.cache_root()` (default `~/.cache/tfcseg`), at
`converted/models--<user>--<repo>/<commit>/`, keyed by the resolved commit hash, and reused
while its tensors still match what this tfcseg builds. A repo already in tfcseg format is
loaded straight from the Hugging Face cache.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..errors import TfcsegError
from ..models.config import CONFIG_NAME, WEIGHTS_NAME
from ..runtime import cache_root

SOURCE_FILE = "tfcseg_source.json"  # provenance written beside a converted checkpoint


def converted_dir(repo_id: str, commit: str) -> Path:
    """Where the tfcseg conversion of `repo_id` at `commit` is cached."""
    return cache_root() / "converted" / ("models--" + repo_id.replace("/", "--")) / commit


def _converted_is_current(folder: Path) -> bool:
    """Whether a cached conversion holds exactly the tensors (names, shapes) this tfcseg builds.

    Built on the meta device: no memory, no initialisation cost. A cache written by an older
    tfcseg whose model had other parameters is converted again rather than failing to load.
    """
    import torch
    from safetensors import safe_open

    from ..models.config import ModelConfig
    from ..models.segformer import TFCSegFormer

    cfg_path, weights = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    if not (cfg_path.is_file() and weights.is_file()):
        return False
    try:
        config = ModelConfig.load(cfg_path)
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in TFCSegFormer(config).state_dict().items()}
        with safe_open(str(weights), framework="pt") as f:
            have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception:  # noqa: BLE001 - a damaged or foreign cache entry means "convert again"
        return False
    return have == expected


def converted(repo_id: str, snapshot: Path, label: str) -> Path:
    """The cached tfcseg conversion of a `transformers` snapshot, converting it if needed."""
    from rich.console import Console

    from .. import __version__
    from ..io.atomic import atomic_write_text, make_temp, sweep_stale
    from ..models import checkpoint

    commit = snapshot.name  # snapshot_download returns .../snapshots/<commit hash>
    dest = converted_dir(repo_id, commit)
    if _converted_is_current(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale(dest.parent, dest.name)  # an interrupted conversion's leftovers
    tmp = make_temp(dest, suffix="", folder=True)  # the usual mode, not mkdtemp's 0700
    try:
        what = label if label.partition("@")[0] == repo_id else f"{label} ({repo_id})"
        with Console(stderr=True).status(f"converting {what} to tfcseg format"):
            checkpoint.convert_checkpoint(snapshot, tmp)
        atomic_write_text(tmp / SOURCE_FILE, json.dumps({
            "repo_id": repo_id, "commit": commit, "format": "transformers",
            "converted_by": f"tfcseg {__version__}",
        }, indent=2) + "\n")
        if dest.exists():  # a stale conversion (older tfcseg) or a damaged one
            shutil.rmtree(dest)
        try:
            os.replace(tmp, dest)
        except OSError:  # another process finished the same conversion first
            if not _converted_is_current(dest):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    Console(stderr=True).print(f"converted {label} to tfcseg format (once): {dest}", highlight=False,
                               soft_wrap=True)
    return dest
