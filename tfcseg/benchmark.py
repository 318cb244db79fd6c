"""`tfcseg benchmark`: speed, parameters, MACs and memory, keyframe vs non-keyframe.

All speed numbers are measured in one process against references run in the same process
(a large matmul for the machine's MAC rate, `transformers`' SegFormer with `--compare-hf`),
so that ratios mean something on a noisy machine.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from .data.transforms import VSPW_FRAME_SIZE
from .runtime import MODES


@dataclass
class Timing:
    """Latency over repeats, in milliseconds."""

    median_ms: float
    p10_ms: float
    p90_ms: float
    repeats: int

    def as_dict(self) -> dict[str, float]:
        return {"median_ms": self.median_ms, "p10_ms": self.p10_ms, "p90_ms": self.p90_ms,
                "repeats": self.repeats}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], Any], device: torch.device, repeats: int = 5, warmup: int = 2) -> Timing:
    """Median and spread of `fn()`'s wall time after `warmup` untimed calls."""
    return time_interleaved({"fn": fn}, device, repeats, warmup)["fn"]


def time_interleaved(runners: dict[str, Callable[[], Any]], device: torch.device,
                     repeats: int, warmup: int = 1) -> dict[str, Timing]:
    """Median and spread of each function's wall time after `warmup` untimed rounds, the
    functions taking turns (a, b, c, a, b, c, ...) so that a slow spell of a shared machine
    hits all of them alike and their ratios stay meaningful. Synchronised on GPU."""
    for _ in range(warmup):
        for fn in runners.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, fn in runners.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append((time.perf_counter() - start) * 1000)
    result = {}
    for name, ts in times.items():
        q = np.percentile(ts, [10, 90])
        result[name] = Timing(statistics.median(ts), float(q[0]), float(q[1]), repeats)
    return result


def count_macs(fn: Callable[[], Any]) -> int:
    """Multiply-accumulates of one call of `fn` (torch.utils.flop_counter: FLOPs / 2)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops() // 2)


def matmul_rate(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048,
                repeats: int = 5) -> float:
    """Multiply-accumulates per second of a large square matmul: the machine's practical peak."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    t = time_fn(lambda: a @ b, device, repeats=repeats, warmup=2)
    return n ** 3 / (t.median_ms / 1000)


def peak_memory_reset(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak allocated GPU memory since the last reset, or the process's peak RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    except ImportError:  # pragma: no cover - non-POSIX
        return None


def hf_reference(model, device: torch.device):
    """`transformers`' SegFormer with exactly `model`'s weights (for --compare-hf)."""
    import transformers

    from .models.checkpoint import export_hf_state_dict

    cfg = model.config
    hf_cfg = transformers.SegformerConfig(
        num_labels=cfg.num_classes, hidden_sizes=cfg.hidden_sizes, depths=cfg.depths,
        num_attention_heads=cfg.num_heads, sr_ratios=cfg.sr_ratios, patch_sizes=cfg.patch_sizes,
        strides=cfg.strides, mlp_ratios=[cfg.mlp_ratio] * 4, decoder_hidden_size=cfg.decoder_dim,
    )
    # Written as a Hub-layout folder and read back with from_pretrained, which maps the stored
    # key names onto whatever module names this transformers version uses in memory.
    import tempfile

    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as tmp:
        hf_cfg.save_pretrained(tmp)
        tensors = {k: v.detach().cpu().contiguous() for k, v in export_hf_state_dict(model.state_dict()).items()}
        save_file(tensors, f"{tmp}/model.safetensors", metadata={"format": "pt"})
        hf = transformers.SegformerForSemanticSegmentation.from_pretrained(tmp)
    return hf.to(device).eval()


def hf_labels(hf, pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The usual `transformers` inference: logits, bilinear upsampling to `size`, argmax."""
    logits = hf(pixel_values=pixels).logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False).argmax(1)


# ---- the benchmark ----------------------------------------------------------------------------

MSDA_SHARES = (0.1, 0.2, 0.4, 1.0)


@dataclass
class BenchmarkSettings:
    size: tuple[int, int] = VSPW_FRAME_SIZE  # inference size (h, w); frames are made at this size
    frames: int = 16  # frames of the synthetic clip timed per mode
    keyframe_interval: int | str = 8  # or "auto", with the four options below (None: defaults)
    keyframe_similarity: float | None = None
    keyframe_changed_share: float | None = None
    max_keyframe_interval: int | None = None
    min_keyframe_interval: int | None = None
    precision: str = "fp32"  # fp32 | bf16 | fp16 (autocast)
    repeats: int = 3  # timed repeats of each measurement (median reported)
    compare_hf: bool = False  # time transformers' SegFormer on the same weights and input
    msda_sweep: bool = True
    seed: int = 0
    video: str | None = None  # real footage (first `frames` frames, resized to `size`) instead of synthetic
    # also time the clip of every mode on the ONNX Runtime backend (fp32), taking turns with PyTorch's
    onnxruntime: bool = False
    # time SegFormer and TFC again while this many busy processes run beside them (started and
    # stopped here): with tfcseg's thread choice (threads="auto") and with PyTorch's default
    load: int = 0
    # the clip runs' thread policy (VideoSegmenter's `threads`): "auto", or a fixed count
    threads: int | str = "auto"


def video_clip(source: str, size: tuple[int, int], frames: int) -> list[np.ndarray]:
    """The first `frames` frames of a video / image folder, resized to `size` (h, w)."""
    import cv2

    from .errors import TfcsegError
    from .io.video import open_frames

    out = []
    src = open_frames(source)
    try:
        for frame in src:
            rgb = frame.rgb
            if rgb.shape[:2] != tuple(size):
                rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
            out.append(rgb)
            if len(out) == frames:
                break
    finally:
        src.close()
    if len(out) < 2:
        raise TfcsegError(f"{source}: the benchmark needs at least 2 frames, found {len(out)}")
    return out


def synthetic_clip(size: tuple[int, int], frames: int, seed: int = 0) -> list[np.ndarray]:
    """A smooth moving scene (textured shapes over a drifting background), RGB uint8 frames."""
    from .data.synthetic import _render_video
    from .io.palette import default_palette

    rng = np.random.default_rng(seed)
    return [img for img, _ in _render_video(rng, 0, frames, 8, size, default_palette(8))]


def _params(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def schedule_options(settings: BenchmarkSettings) -> dict[str, Any]:
    """The adaptive keyframe options of `settings`, as `VideoSegmenter` takes them."""
    return {name: getattr(settings, name) for name in
            ("keyframe_similarity", "keyframe_changed_share", "max_keyframe_interval", "min_keyframe_interval")}


def _clip_runner(model, frames, mode: str, settings: BenchmarkSettings,
                 threads: int | str | None = "settings") -> tuple[Callable[[], None], dict]:
    """A function that runs the whole clip through `VideoSegmenter` (preprocessing, model,
    labels at the frame size) and the dict it leaves the labels and mean MSDA share in.
    Without label hysteresis (whatever the model's config says): the labels are compared with
    `transformers`' per-frame labels and with fp32's, which hysteresis would blur; it costs an
    add and an argmax on the 1/4 map a frame."""
    from .segmenter import VideoSegmenter

    seg = VideoSegmenter(model, keyframe_interval=settings.keyframe_interval, mode=mode,
                         short_side=0, precision=settings.precision, hysteresis=0.0,
                         threads=settings.threads if threads == "settings" else threads,
                         **schedule_options(settings))
    out: dict[str, Any] = {"policy": seg.policy}

    def run() -> None:
        seg.reset()
        results = list(seg.segment(frames))
        out["labels"] = [r.labels for r in results]
        out["share"] = float(np.mean([r.msda_share for r in results if not r.is_keyframe] or [0.0]))
        out["keyframes"] = [r.index for r in results if r.is_keyframe]
        out["on_change"] = sum(r.keyframe_reason == "change" for r in results)

    return run, out


def busy_processes(n: int) -> list:
    """n processes that spin on a CPU each (a user's other work), until `terminate()`d."""
    import subprocess
    import sys

    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _loaded_clips(model, frames, settings: BenchmarkSettings, device: torch.device,
                  idle: dict[str, Any]) -> dict[str, Any]:
    """Frames/s of SegFormer and TFC beside `settings.load` busy processes, with
    threads="auto" and with PyTorch's default, and the share of the idle frames/s kept."""
    runners, kinds = {}, {"auto": "auto", "pytorch_default": None}
    for mode in ("segformer", "tfc"):
        for name, threads in kinds.items():
            runners[f"{mode}/{name}"], _ = _clip_runner(model, frames, mode, settings, threads)
    busy = busy_processes(settings.load)
    try:
        time.sleep(0.5)  # the busy processes running before the clock starts
        for run in runners.values():
            run()  # warm-up (and the thread choice's first trials)
        times = time_interleaved(runners, device, settings.repeats, warmup=0)
    finally:
        for p in busy:
            p.terminate()
        for p in busy:
            p.wait()
    out: dict[str, Any] = {"processes": settings.load}
    for key, t in times.items():
        mode, name = key.split("/")
        fps = len(frames) / (t.median_ms / 1000)
        out.setdefault(mode, {})[name] = {"fps": fps, "kept": fps / idle[mode]["fps"]}
    return out


def run_benchmark(model, settings: BenchmarkSettings, progress: Callable[[str], None] | None = None,
                  onnx_model=None) -> dict[str, Any]:
    """Measure `model` (a TFCSegFormer, eval mode, on its device); returns a JSON-able dict.
    With `settings.onnxruntime`, the clips run on the ONNX Runtime backend too: `onnx_model`
    (an `OnnxRuntimeModel` of the same weights), else `model` exported once into the cache."""
    from .models.folded import level_rows
    from .models.layout import no_autocast
    from .models.temporal import sparse_query_dtype
    from .runtime import PRECISIONS
    from .segmenter import preprocess

    say = progress or (lambda _msg: None)
    device = model.device
    model.eval()
    cfg = model.config
    amp = PRECISIONS[settings.precision]
    autocast = lambda: torch.autocast(device.type, dtype=amp, enabled=amp is not None)  # noqa: E731
    frames = (video_clip(settings.video, settings.size, settings.frames) if settings.video
              else synthetic_clip(settings.size, max(settings.frames, 2), settings.seed))
    px0, px1 = (preprocess(f, None, device) for f in frames[:2])
    result: dict[str, Any] = {
        "variant": cfg.variant, "num_classes": cfg.num_classes, "size": list(settings.size),
        "device": str(device), "device_name": _device_name(device), "threads": torch.get_num_threads(),
        "precision": settings.precision, "keyframe_interval": settings.keyframe_interval,
        "frames": len(frames), "tfc_trained": cfg.tfc_trained,
        "msda_threshold": cfg.tfc.msda_threshold if cfg.tfc.msda else None, "msda_gate": cfg.tfc.msda_gate,
        "interpolation": cfg.tfc.interpolation,
        "interpolation_power": cfg.tfc.interpolation_power if cfg.tfc.interpolation == "soft" else None,
        "label_hysteresis": 0.0,  # the clip runs' (see _clip_runner)
        "clip": settings.video or "synthetic",
        "params": {"total": _params(model), "encoder": _params(model.encoder),
                   "encoder_stages_1_2": _params(model.encoder.stages[:2]),
                   "decoder": _params(model.decoder), "msda": _params(model.temporal.msda)},
    }

    with torch.inference_mode():
        say("counting MACs")
        _, state = model.keyframe(px0)
        options = cfg.tfc
        result["macs"] = {
            "keyframe": count_macs(lambda: model.keyframe(px0)),
            "non_keyframe": count_macs(lambda: model.non_keyframe(px1, state, options)),
            "encoder_stages_3_4": count_macs(lambda: model.encoder(state.x2, stages=4, start=2)),
        }

        def keyframe_on_change() -> None:  # auto: stages 1-2 and the similarity, then a keyframe
            x1, x2 = model.low_level(px1)
            model.similarity(x1, x2, state, options)
            model.keyframe_from_low_level(px1.shape[-2:], x1, x2)

        result["macs"]["keyframe_on_change"] = count_macs(keyframe_on_change)
        say("timing keyframe and non-keyframe latency")
        with autocast():
            key_t = time_fn(lambda: model.keyframe(px0), device, settings.repeats)
            _, state = model.keyframe(px0)
            lat: dict[str, Any] = {"keyframe": key_t.as_dict()}
            for mode in ("tfc", "reuse"):
                opts = cfg.tfc if mode == "tfc" else replace(cfg.tfc, interpolation="none", msda=False)
                lat[f"non_keyframe_{mode}"] = time_fn(
                    lambda: model.non_keyframe(px1, state, opts), device, settings.repeats).as_dict()
            lat["encoder_stages_3_4"] = time_fn(
                lambda: model.encoder(state.x2, stages=4, start=2), device, settings.repeats).as_dict()
            x1, x2 = model.low_level(px1)
            # what making a frame a keyframe adds once its stages 1-2 ran (auto keyframes)
            lat["keyframe_from_low_level"] = time_fn(
                lambda: model.keyframe_from_low_level(px1.shape[-2:], x1, x2), device,
                settings.repeats).as_dict()
        result["latency"] = lat

        peak_memory_reset(device)
        say(f"clip of {len(frames)} frames: " + ", ".join(MODES)
            + (" and transformers, in turn" if settings.compare_hf else ""))
        runners, outs = {}, {}
        for mode in MODES:
            runners[mode], outs[mode] = _clip_runner(model, frames, mode, settings)
            runners[mode]()  # warm-up, and the peak memory below is tfcseg's alone
        peak_mb = peak_memory_mb(device)
        ort_names: dict[str, str] = {}
        if settings.onnxruntime:
            from .backends.ort import as_onnx_model

            say("ONNX Runtime backend")
            ort_model = as_onnx_model(onnx_model if onnx_model is not None else model,
                                      device=device, options=cfg.tfc)
            for mode in MODES:
                name = ort_names[mode] = f"{mode} (onnxruntime)"
                runners[name], outs[name] = _clip_runner(ort_model, frames, mode,
                                                         replace(settings, precision="fp32"))
                runners[name]()  # warm-up
        if settings.compare_hf:
            hf = hf_reference(model, device)
            hf_pixels = [preprocess(f, None, device) for f in frames]
            outs["transformers"] = {}

            def run_hf() -> None:
                outs["transformers"]["labels"] = [hf_labels(hf, p, settings.size)[0].cpu().numpy()
                                                  for p in hf_pixels]

            runners["transformers"] = run_hf
            run_hf()  # warm-up
        clip_times = time_interleaved(runners, device, settings.repeats, warmup=0)
        modes: dict[str, Any] = {}
        labels: dict[str, list[np.ndarray]] = {}
        for mode in MODES:
            modes[mode] = {"fps": len(frames) / (clip_times[mode].median_ms / 1000),
                           "msda_share": outs[mode]["share"], "clip_ms": clip_times[mode].as_dict(),
                           "keyframes": outs[mode]["keyframes"],
                           "keyframe_share": len(outs[mode]["keyframes"]) / len(frames),
                           "keyframes_on_change": outs[mode]["on_change"]}
            labels[mode] = outs[mode]["labels"]
        result["modes"] = modes
        if settings.load > 0:
            say(f"clip again beside {settings.load} busy process(es): tfcseg's thread choice and PyTorch's default")
            result["load"] = _loaded_clips(model, frames, settings, device, modes)
        policy = outs["tfc"]["policy"]
        result["keyframe_policy"] = policy.as_dict() if policy is not None else None
        result["peak_memory_mb"] = peak_mb

        fp32_labels = dict(labels)  # replaced below when running in reduced precision
        if settings.precision != "fp32":
            say("fp32 reference labels")
            ref = replace(settings, precision="fp32")
            for mode in MODES:
                run, ref_out = _clip_runner(model, frames, mode, ref)
                run()
                fp32_labels[mode] = ref_out["labels"]
                modes[mode]["label_agreement_vs_fp32"] = float(np.mean(
                    [np.mean(a == b) for a, b in zip(ref_out["labels"], labels[mode])]))

        if ort_names:
            import onnxruntime

            ort_modes = {}
            for mode, name in ort_names.items():
                fps = len(frames) / (clip_times[name].median_ms / 1000)
                ort_modes[mode] = {
                    "fps": fps, "vs_pytorch": fps / modes[mode]["fps"],
                    "msda_share": outs[name]["share"], "clip_ms": clip_times[name].as_dict(),
                    # labels equal to the PyTorch backend's in fp32, share of pixels
                    "label_agreement_vs_pytorch": float(np.mean(
                        [np.mean(a == b) for a, b in zip(outs[name]["labels"], fp32_labels[mode])])),
                }
            result["onnxruntime"] = {"version": onnxruntime.__version__, "precision": "fp32",
                                     "providers": [p if isinstance(p, str) else p[0] for p in ort_model.providers],
                                     "modes": ort_modes}

        if settings.msda_sweep:
            say("sparse MSDA sweep")
            temporal = model.temporal
            with autocast():  # the same dtypes as a real non-keyframe
                x1, x2 = model.encoder(px1, stages=2)
            with no_autocast(x1):
                head = model.decoder.folded(state.base.dtype)
                x1_rows, up2_rows = level_rows(x1, x2, state.base.dtype)
            gen = torch.Generator().manual_seed(settings.seed)
            stages34 = lat["encoder_stages_3_4"]["median_ms"]
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                query_dtype = sparse_query_dtype(device.type)  # as a non-keyframe under this precision
            sweep = []
            for share in MSDA_SHARES:
                select = (torch.rand(x1.shape[0], *x1.shape[-2:], generator=gen) < share).to(device)
                points = select.reshape(-1).nonzero().squeeze(1)

                def update() -> torch.Tensor:  # what MSDA adds to a non-keyframe (TemporalFusion.non_keyframe)
                    with no_autocast(x1):
                        return temporal.sparse_update(model.decoder, head, x1_rows, up2_rows, points, x1, x2, state,
                                                      query_dtype=query_dtype)

                t = time_fn(update, device, settings.repeats)
                sweep.append({"share": share, "median_ms": t.median_ms,
                              "vs_encoder_stages_3_4": t.median_ms / stages34})
            result["msda_sweep"] = sweep

        say("large matmul (machine's practical MAC rate)")
        rate = matmul_rate(device, amp or torch.float32)
        macs_tfc = tfc_macs_per_frame(result["macs"], len(frames), len(outs["tfc"]["keyframes"]),
                                      outs["tfc"]["on_change"])
        result["matmul_macs_per_s"] = rate
        result["achieved_macs_per_s"] = {
            "segformer": result["macs"]["keyframe"] * modes["segformer"]["fps"],
            "tfc": macs_tfc * modes["tfc"]["fps"],
        }
        result["share_of_matmul_rate"] = {k: v / rate for k, v in result["achieved_macs_per_s"].items()}

        if settings.compare_hf:
            hf_fps = len(frames) / (clip_times["transformers"].median_ms / 1000)
            agree = float(np.mean([np.mean(a == b) for a, b in
                                   zip(outs["transformers"]["labels"], fp32_labels["segformer"])]))
            result["transformers"] = {
                "fps": hf_fps, "precision": "fp32", "clip_ms": clip_times["transformers"].as_dict(),
                "speedup": {mode: modes[mode]["fps"] / hf_fps for mode in MODES},
                "segformer_label_agreement": agree,  # tfcseg fp32 vs transformers fp32
            }
    return result


def tfc_macs_per_frame(macs: dict[str, int], frames: int, keyframes: int, on_change: int = 0) -> float:
    """Mean multiply-accumulates per frame of a TFC run with `keyframes` keyframes in `frames`
    frames, `on_change` of them made keyframes by the similarity (auto: their stages 1-2 and
    similarity ran first); `macs` holds the per-pass counts of `run_benchmark`."""
    scheduled = keyframes - on_change
    total = (scheduled * macs["keyframe"] + on_change * macs.get("keyframe_on_change", macs["keyframe"])
             + (frames - keyframes) * macs["non_keyframe"])
    return total / frames


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    from .runtime import cpu_flags, has_amx

    name = platform.processor() or platform.machine()
    try:  # Linux: the CPU's name, as lscpu shows it (platform.processor() says only "x86_64")
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), name)
    except OSError:
        pass
    if not cpu_flags():
        return name
    # what decides the bf16 path (runtime.has_amx, ops.attention.enabled)
    bf16 = "AVX512-BF16" if "avx512_bf16" in cpu_flags() else "no AVX512-BF16"
    return f"{name} ({bf16}, {'AMX' if has_amx() else 'no AMX'})"
