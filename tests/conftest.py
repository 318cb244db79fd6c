"""Shared fixtures: tiny model configs so the suite runs in minutes on 2 CPU cores."""

from __future__ import annotations

import contextlib
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
import torch

from tfcseg import ModelConfig, TFCSegFormer

torch.set_num_threads(2)


def tiny_config(num_classes: int = 5, **kw) -> ModelConfig:
    """B0's structure with one block per stage and narrow widths."""
    base = dict(variant="custom", num_classes=num_classes, hidden_sizes=[8, 16, 24, 32],
                depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4], decoder_dim=32)
    base.update(kw)
    return ModelConfig(**base)


@pytest.fixture
def tiny_model() -> TFCSegFormer:
    torch.manual_seed(0)
    model = TFCSegFormer(tiny_config())
    _randomise_bn(model)
    return model.eval()


def _randomise_bn(model: torch.nn.Module) -> None:
    """Give BatchNorm non-trivial statistics so that folding it is really tested."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)


randomise_bn = _randomise_bn


NTSC = Fraction(30000, 1001)


def write_video(path: Path, frames, fps=NTSC, pix_fmt: str = "yuv420p", faststart: bool = False,
                quality: float | None = None) -> Path:
    """Write RGB frames as an H.264 file with imageio-ffmpeg (no size rounding)."""
    h, w = frames[0].shape[:2]
    gen = imageio_ffmpeg.write_frames(
        str(path), (w, h), fps=fps, macro_block_size=1, pix_fmt_out=pix_fmt, quality=quality,
        ffmpeg_log_level="error", output_params=["-movflags", "+faststart"] if faststart else None)
    gen.send(None)
    for f in frames:
        gen.send(np.ascontiguousarray(f))
    gen.close()
    return path


def pan_scene(n: int, seed: int, invert: bool = False, h: int = 48, w: int = 80) -> list[np.ndarray]:
    """A smooth random scene panning 1 pixel a frame (RGB uint8 frames); `invert`: its negative
    (with another seed: a scene nothing like the first)."""
    import cv2

    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (4, 12, 3), dtype=np.uint8), (w + n, h),
                      interpolation=cv2.INTER_LINEAR)
    if invert:
        base = 255 - base
    return [np.ascontiguousarray(base[:, i:i + w]) for i in range(n)]


def spliced_video(cut: int, n: int) -> list[np.ndarray]:
    """n frames: scene A up to frame `cut`, then a different scene B (a cut at frame `cut`)."""
    return pan_scene(cut, seed=0) + pan_scene(n - cut, seed=1, invert=True)


# Adaptive keyframe settings for the tiny model (`tiny_model`, `randomise_bn`, seed 0) on
# `spliced_video`: within a scene fewer than half the points fall below 0.5 for 8 frames
# after a keyframe; across the cut about three quarters do (the tests check both).
CUT_POLICY = dict(keyframe_interval="auto", keyframe_similarity=0.5, keyframe_changed_share=0.5,
                  max_keyframe_interval=8)


# ---- small videos made by ffmpeg, and a local HTTP server ------------------------------------------


def ffmpeg_clip(path: Path, seconds: float = 1.0, fps: int = 30, size: tuple[int, int] = (64, 48), *,
                then: tuple[float, int] | None = None, audio: str | None = None, sar: str | None = None,
                rotate: int | None = None, fmt: str | None = None) -> Path:
    """A small video from ffmpeg's test pattern (H.264, no B-frames: quick to make).

    `then=(seconds, fps)` appends a part at another rate: a variable-frame-rate file.
    `audio`: an audio codec (e.g. "aac", "pcm_s16le") for a 440 Hz tone as long as the video.
    `sar`: pixel aspect ratio ("4/3": anamorphic). `rotate`: display rotation metadata in
    degrees (the pixels are stored unrotated)."""
    import subprocess

    from tfcseg.io.video import ffmpeg_exe

    w, h = size
    src = f"testsrc=size={w}x{h}:rate={fps}:duration={seconds}"
    total = seconds
    cmd = [ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi", "-i", src]
    chain = "[0:v]"
    if then is not None:
        cmd += ["-f", "lavfi", "-i", f"testsrc=size={w}x{h}:rate={then[1]}:duration={then[0]}"]
        chain = "[0:v][1:v]concat=n=2:v=1:a=0"
        total += then[0]
    if sar:
        chain += f",setsar={sar}" if then else f"setsar={sar}"
    graph = chain + "[v]" if chain != "[0:v]" else None
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={total}"]
    if graph:
        cmd += ["-filter_complex", graph, "-map", "[v]"]
    else:
        cmd += ["-map", "0:v"]
    if audio:
        cmd += ["-map", f"{2 if then else 1}:a", "-c:a", audio]
    cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-fps_mode", "vfr"]
    if fmt:
        cmd += ["-f", fmt]
    target = path if rotate is None else path.with_name("unrotated_" + path.name)
    subprocess.run(cmd + [str(target)], check=True)
    if rotate is not None:
        subprocess.run([ffmpeg_exe(), "-v", "error", "-y", "-display_rotation", str(rotate), "-i",
                        str(target), "-c", "copy", str(path)], check=True)
        target.unlink()
    return path


def audio_seconds(path: Path) -> float:
    """How long the first audio stream of `path` plays (decoded, as a player would)."""
    import subprocess

    from tfcseg.io.video import ffmpeg_exe

    pcm = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "s16le",
                          "-ac", "1", "-ar", "48000", "-"], check=True, capture_output=True).stdout
    return len(pcm) / 2 / 48000


@contextlib.contextmanager
def http_server(folder: Path, live: Path | None = None, seconds: float = 2.0):
    """Serve `folder` on 127.0.0.1 (a free port) from a thread; yields the base URL. With
    `live`, GET /live sends that file as a live stream: no length, paced over `seconds`."""
    import functools
    import http.server
    import threading
    import time

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            if live is None or self.path != "/live":
                return super().do_GET()
            data = live.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.end_headers()
            step = 188 * 20
            try:
                for i in range(0, len(data), step):
                    self.wfile.write(data[i:i + step])
                    self.wfile.flush()
                    time.sleep(seconds * step / len(data))
            except (BrokenPipeError, ConnectionResetError):
                pass

        def log_message(self, *args):
            pass

    Handler.protocol_version = "HTTP/1.0"  # a live stream ends when the connection closes
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="session")
def tiny_ckpt(tmp_path_factory) -> Path:
    """A tiny random model saved as a checkpoint (trained-TFC flags, inferring at frame size)."""
    from tfcseg import save_checkpoint

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_ckpt") / "model"
    save_checkpoint(TFCSegFormer(tiny_config(tfc_trained=True, inference_short_side=0)), folder)
    return folder
