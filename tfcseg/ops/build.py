"""The compiled CPU kernels of tfcseg's ops: built on first use, cached, loaded.

`csrc/cpu/msda.cpp` implements `tfcseg::ms_deform_attn` and `tfcseg::ms_deform_attn_backward`
for the CPU dispatch key, and `csrc/cpu/attention.cpp`, compiled into the same library,
implements `tfcseg::attention` (SegFormer's encoder, CPU inference). The schemas are in
`library.py`; the pure-PyTorch kernels, which every other device uses, in `msda.py` and
`attention.py`. `load()` compiles them once with
the system's C++ compiler (`$CXX`, else g++, else c++) against the installed torch's headers
and libraries (no ninja, no pybind11) into
`$TFCSEG_CACHE/ext` (default `~/.cache/tfcseg/ext`), under a name keyed by the source, torch's
version and the compiler, and loads it with `torch.ops.load_library`; later processes only
load the cached file. `ms_deform_attn` and `fast_cpu_attention` call `load()` on their first
CPU call.

Nobody needs a compiler: if there is none or the build fails, the ops keep their PyTorch
kernels and one warning per process (`MSDAExtensionWarning`) says why; with
`TFCSEG_MSDA_EXT=0` they keep them without a warning (a DEBUG log line says so). A build is
announced at INFO level, which the `tfcseg` command line shows on stderr.
`status()` tells whether the compiled kernels are active.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

CSRC = Path(__file__).parent / "csrc" / "cpu"
SOURCES = (CSRC / "msda.cpp", CSRC / "attention.cpp")  # one library, one cache entry
LIBRARY_STEM = "tfcseg_cpu"
ENV_SWITCH = "TFCSEG_MSDA_EXT"  # "0": never build or load, use the PyTorch kernels
# No -march=native: the cached file must run on any x86-64 / aarch64 CPU the cache is shared with.
CXXFLAGS = ["-O3", "-fopenmp", "-shared", "-fPIC", "-std=c++17", "-DNDEBUG", "-w"]
BUILD_TIMEOUT_S = 600

_log = logging.getLogger(__name__)


class MSDAExtensionWarning(UserWarning):
    """The compiled CPU kernels (attention, sparse MSDA) are not used (PyTorch's are, slower)."""


@dataclass(frozen=True)
class ExtStatus:
    """Whether the compiled CPU kernels are registered (`active`), and how: `reason` is why
    not when inactive, else "built" / "cached"; `path` is the shared library; `build_s` the
    compile time when this process built it."""

    active: bool
    reason: str
    path: str | None = None
    build_s: float | None = None


_DISABLED = f"disabled by {ENV_SWITCH}=0"
_NOT_TRIED = ExtStatus(False, "not loaded yet (it is on the first CPU call of the op, or load())")
_status: ExtStatus | None = None
_lock = threading.Lock()


def status() -> ExtStatus:
    """The current state, without building or loading anything."""
    return _status or _NOT_TRIED


def tried() -> bool:
    """Whether `load()` has run in this process (whatever its outcome)."""
    return _status is not None


def load() -> ExtStatus:
    """Build (if not cached) and load the compiled kernels, once per process; afterwards the
    ops run them for CPU tensors. Never raises: on failure the PyTorch kernels stay, and one
    `MSDAExtensionWarning` says why."""
    global _status
    if _status is not None:
        return _status
    with _lock:
        if _status is None:
            try:
                st = _load()
            except Exception as exc:  # noqa: BLE001 - whatever happens, the PyTorch path runs
                st = ExtStatus(False, f"{type(exc).__name__}: {_one_line(str(exc))}")
            if st.reason == _DISABLED:  # the user's choice: no warning
                _log.debug("tfcseg: compiled MSDA CPU kernel %s", st.reason)
            elif not st.active:
                warnings.warn(f"tfcseg: compiled CPU kernels (attention, sparse MSDA) not used "
                              f"({st.reason}); using PyTorch's (slower). Set {ENV_SWITCH}=0 to "
                              "use them without this warning.", MSDAExtensionWarning, stacklevel=3)
            _status = st
    return _status


def _reset_for_tests() -> None:
    """Forget the outcome of `load()` (an extension already loaded stays registered)."""
    global _status
    _status = None


# ---- building ---------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where the compiled library is cached: `tfcseg.runtime.cache_root() / "ext"`."""
    from ..runtime import cache_root

    return cache_root() / "ext"


def find_compiler() -> str | None:
    """`$CXX`, else g++, else c++ on PATH (None if none)."""
    cxx = os.environ.get("CXX")
    if cxx:
        return shutil.which(cxx)
    return shutil.which("g++") or shutil.which("c++")


def _one_line(text: str, limit: int = 300) -> str:
    lines = [s.strip() for s in text.strip().splitlines() if s.strip()]
    errors = [s for s in lines if "error" in s.lower()]
    line = (errors or lines or ["(no output)"])[0]
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _torch_paths() -> tuple[list[str], list[str]]:
    import torch
    torch_dir = Path(torch.__file__).parent
    # the same as torch.utils.cpp_extension.include_paths() / library_paths(), without
    # importing that module (it pulls in setuptools)
    return [str(torch_dir / "include")], [str(torch_dir / "lib")]


def build_command(cxx: str, source: Path | list[Path], output: Path) -> list[str]:
    import torch
    includes, libs = _torch_paths()
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    cmd = [cxx, *CXXFLAGS, f"-D_GLIBCXX_USE_CXX11_ABI={abi}"]
    cmd += [f"-isystem{p}" for p in includes]
    sources = [source] if isinstance(source, Path) else list(source)
    cmd += [str(s) for s in sources] + ["-o", str(output)]
    cmd += [f"-L{p}" for p in libs] + [f"-Wl,-rpath,{p}" for p in libs] + ["-lc10", "-ltorch_cpu"]
    return cmd


def _cache_key(cxx: str, source_bytes: bytes) -> str:
    import platform

    import torch
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60)
    h = hashlib.sha256()
    for part in (source_bytes, torch.__version__.encode(), str(torch.version.git_version).encode(),
                 os.path.realpath(cxx).encode(), version.stdout.encode(),
                 " ".join(CXXFLAGS).encode(), str(int(torch._C._GLIBCXX_USE_CXX11_ABI)).encode(),
                 platform.machine().encode(), sys.platform.encode()):
        h.update(part)
        h.update(b"\0")
    return h.hexdigest()[:20]


def _load() -> ExtStatus:
    if os.environ.get(ENV_SWITCH, "").strip() == "0":
        return ExtStatus(False, _DISABLED)
    if not sys.platform.startswith("linux"):
        return ExtStatus(False, f"only built on Linux, not {sys.platform}")
    for src in SOURCES:
        if not src.is_file():
            return ExtStatus(False, f"source {src} missing from the installation")
    cxx = find_compiler()
    if cxx is None:
        wanted = f"$CXX={os.environ['CXX']!r}" if os.environ.get("CXX") else "g++ or c++"
        return ExtStatus(False, f"no C++ compiler found ({wanted} on PATH)")
    sources = [src.read_bytes() for src in SOURCES]
    source_bytes = b"\0".join(sources)
    directory = cache_dir()
    path = directory / f"{LIBRARY_STEM}-{_cache_key(cxx, source_bytes)}.so"
    import torch

    from . import library  # noqa: F401 - the schemas must be defined before the kernels
    while True:
        build_s = None
        if not path.is_file():
            build_s = _build(cxx, sources, directory, path)
            if isinstance(build_s, str):
                return ExtStatus(False, build_s)
        try:
            torch.ops.load_library(str(path))
        except OSError:
            if build_s is not None:
                raise
            # a cached file that does not load (damaged, or not from us): build it again
            _log.warning("tfcseg: %s does not load; building it again", path)
            path.unlink(missing_ok=True)
            continue
        _log.debug("tfcseg: compiled MSDA CPU kernel loaded from %s", path)
        return ExtStatus(True, "built" if build_s is not None else "cached", str(path), build_s)


def _build(cxx: str, sources: list[bytes], directory: Path, path: Path) -> float | str:
    """Compile to a temporary file next to `path`, then rename it into place (atomic: a
    concurrent process sees either no file or a whole one). Returns the build time in s, or
    why it failed."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create the cache directory {directory}: {exc.strerror or exc}"
    # the source is compiled from a private copy, so that the file hashed is the file built
    fd, tmp_name = tempfile.mkstemp(prefix=path.stem + "-", suffix=".so.tmp", dir=directory)
    os.close(fd)
    tmp = Path(tmp_name)
    srcs = [tmp.with_name(f"{tmp.stem}-{i}.cpp") for i in range(len(sources))]
    _log.info("tfcseg: compiling the CPU kernels (attention, sparse MSDA) into %s; once, "
              "about 15 s", path)
    t0 = time.perf_counter()
    try:
        # (with a #line, so that messages name the real file)
        for origin, src, source_bytes in zip(SOURCES, srcs, sources):
            quoted = str(origin).replace("\\", "\\\\").replace('"', '\\"')
            src.write_bytes(f'#line 1 "{quoted}"\n'.encode() + source_bytes)
        proc = subprocess.run(build_command(cxx, srcs, tmp), capture_output=True, text=True,
                              timeout=BUILD_TIMEOUT_S)
        if proc.returncode != 0:
            return f"{Path(cxx).name} failed: {_one_line(proc.stderr or proc.stdout)}"
        os.chmod(tmp, 0o755)
        os.replace(tmp, path)
    except subprocess.TimeoutExpired:
        return f"{Path(cxx).name} took over {BUILD_TIMEOUT_S} s"
    except OSError as exc:
        return f"build failed: {exc}"
    finally:
        for leftover in (tmp, *srcs):
            leftover.unlink(missing_ok=True)
    return time.perf_counter() - t0
