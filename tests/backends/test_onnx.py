"""ONNX export and the ONNX Runtime backend on tiny models: the graphs, parity with the PyTorch
backend (MSDA on and off), the export folder as a `--model`, the commands, missing extras."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
import torch

import tfcseg

from tfcseg import (OnnxRuntimeModel, TfcsegError, TFCOptions, TFCSegFormer, VideoSegmenter, export_onnx,
                    load_model, save_checkpoint)
from tfcseg.backends.onnx_export import export_key
from tfcseg.cli import main
from tfcseg.data import make_synthetic_vspw, read_mask
from tfcseg.evaluate import evaluate_model

from conftest import randomise_bn, tiny_config, write_video

THRESHOLD = 0.9  # selects part of the points on the clip below (checked: 0 < share < 1)


def _model(msda: bool, num_classes: int = 5) -> TFCSegFormer:
    torch.manual_seed(0)
    model = TFCSegFormer(tiny_config(num_classes=num_classes, tfc_trained=True, inference_short_side=0,
                                     tfc=TFCOptions(msda=msda, msda_threshold=THRESHOLD)))
    randomise_bn(model)
    return model.eval()


def _clip(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    """A smooth scene panning right, with a square moving down (motion for MSDA to repair)."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (6, 40, 3), dtype=np.uint8), (w * 5, h), interpolation=cv2.INTER_LINEAR)
    out = []
    for i in range(n):
        frame = np.ascontiguousarray(base[:, 3 * i:3 * i + w])
        frame[(4 * i) % (h - 12):(4 * i) % (h - 12) + 12, 10:22] = (255, 0, 0)
        out.append(frame)
    return out


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[bool, tuple[TFCSegFormer, Path]]:
    """msda on / off -> (the PyTorch model, its ONNX export folder)."""
    root = tmp_path_factory.mktemp("onnx")
    out = {}
    for msda in (True, False):
        model = _model(msda)
        out[msda] = (model, export_onnx(model, root / f"msda-{msda}"))
    return out


@pytest.mark.parametrize("msda", [True, False])
def test_export_folder_and_graphs(exports, msda):
    _, folder = exports[msda]
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "keyframe.onnx", "model.safetensors",
                                                       "non_keyframe.onnx"]
    entry = json.loads((folder / "config.json").read_text())["onnx"]
    assert entry["msda"] is msda and entry["state"][:3] == ["logits", "base", "unit"]
    graphs = {}
    for name in ("keyframe", "non_keyframe"):
        graph = onnx.load(str(folder / f"{name}.onnx"))
        onnx.checker.check_model(graph, full_check=True)
        assert {n.domain for n in graph.graph.node} <= {"", "ai.onnx"}  # standard ops only, no custom kernels
        pixels = next(i for i in graph.graph.input if i.name == "pixels")
        dims = pixels.type.tensor_type.shape.dim
        assert dims[2].dim_param == "height" and dims[3].dim_param == "width"  # any size
        graphs[name] = graph
    assert [o.name for o in graphs["keyframe"].graph.output] == entry["state"]
    assert [o.name for o in graphs["non_keyframe"].graph.output] == ["logits", "similarity", "msda_share", "unit"]
    ops = {n.op_type for n in graphs["non_keyframe"].graph.node}
    if msda:
        assert entry["state"][3:] == ["value3", "value4"]
        assert {"NonZero", "Gather", "GridSample", "ScatterND"} <= ops
    else:
        assert len(entry["state"]) == 3 and "GridSample" not in ops and "NonZero" not in ops
    # the folder is a checkpoint for the PyTorch backend too, with the same weights
    loaded = load_model(folder)
    model = exports[msda][0]
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))


@pytest.mark.parametrize("mode", ["tfc", "reuse", "segformer"])
@pytest.mark.parametrize("msda", [True, False])
def test_streaming_parity_with_pytorch(exports, msda, mode):
    """The same session on both backends: labels >= 99.9% equal, the same MSDA shares, at two
    frame sizes (a size change starts a keyframe: one export serves every size)."""
    model, folder = exports[msda]
    frames = _clip(5, 48, 80) + _clip(3, 45, 61, seed=1)
    torch_run = list(VideoSegmenter(model, keyframe_interval=3, mode=mode).segment(frames))
    ort = OnnxRuntimeModel(folder)
    ort_run = list(VideoSegmenter(ort, keyframe_interval=3, mode=mode).segment(frames))
    assert [r.is_keyframe for r in ort_run] == [r.is_keyframe for r in torch_run]
    equal = np.mean([np.mean(a.labels == b.labels) for a, b in zip(torch_run, ort_run)])
    assert equal >= 0.999
    shares = [r.msda_share for r in torch_run if not r.is_keyframe]
    assert [r.msda_share for r in ort_run if not r.is_keyframe] == pytest.approx(shares, abs=1e-3)
    if msda and mode == "tfc":
        assert 0.0 < np.mean(shares) < 1.0
    else:
        assert not any(shares)


def test_interpolation_power_is_a_run_time_option_of_the_graph(exports):
    """A sharpened soft weight (`interpolation_power`) gives the PyTorch labels on ONNX Runtime
    and changes them; an export from before the option refuses it in one line."""
    model, folder = exports[True]
    frames = _clip(5, 48, 80)
    sharp = TFCOptions(msda=True, msda_threshold=THRESHOLD, interpolation_power=6.0)
    torch_run = list(VideoSegmenter(model, keyframe_interval=5, options=sharp).segment(frames))
    ort = OnnxRuntimeModel(folder)
    ort_run = list(VideoSegmenter(ort, keyframe_interval=5, options=sharp).segment(frames))
    assert np.mean([np.mean(a.labels == b.labels) for a, b in zip(torch_run, ort_run)]) >= 0.999
    paper = list(VideoSegmenter(ort, keyframe_interval=5).segment(frames))
    assert any(np.any(a.labels != b.labels) for a, b in zip(ort_run, paper))
    ort._non_inputs = {n for n in ort._non_inputs if n != "interpolation_power"}  # as an older export
    with pytest.raises(TfcsegError, match="predates interpolation_power"):
        list(VideoSegmenter(ort, keyframe_interval=5, options=sharp).segment(frames))


def test_segment_command_masks_match_across_backends(exports, tmp_path, capsys):
    """`tfcseg segment --backend onnxruntime --model DIR --masks A` against the PyTorch backend
    on the same folder into B, for MSDA on and off."""
    src = write_video(tmp_path / "clip.mp4", _clip(4, 48, 80), fps=15)
    for msda, (_, folder) in exports.items():
        summaries = {}
        for backend in ("onnxruntime", "pytorch"):
            code = main(["segment", str(src), "-o", str(tmp_path / f"{backend}-{msda}.mp4"), "--model", str(folder),
                         "--backend", backend, "--masks", str(tmp_path / f"{backend}-{msda}"),
                         "--json", str(tmp_path / f"{backend}-{msda}.json"), "-q"])
            out, err = capsys.readouterr()
            assert code == 0, err
            summaries[backend] = json.loads((tmp_path / f"{backend}-{msda}.json").read_text())
            assert summaries[backend]["backend"] == backend
        a = sorted((tmp_path / f"onnxruntime-{msda}" / "clip").glob("*.png"))
        b = sorted((tmp_path / f"pytorch-{msda}" / "clip").glob("*.png"))
        assert [p.name for p in a] == [p.name for p in b] and len(a) == 4
        assert np.mean([np.mean(read_mask(x) == read_mask(y)) for x, y in zip(a, b)]) >= 0.999
        assert summaries["onnxruntime"]["mean_msda_share"] == pytest.approx(
            summaries["pytorch"]["mean_msda_share"], abs=1e-3)
        assert (summaries["pytorch"]["mean_msda_share"] > 0) is msda


def test_in_memory_model_is_exported_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TFCSEG_CACHE", str(tmp_path / "cache"))
    model = _model(True)
    frames = _clip(4, 48, 80)
    first = VideoSegmenter(model, backend="onnxruntime")
    folder = first.model.folder
    assert folder.parent == tmp_path / "cache" / "onnx" and first.backend == "onnxruntime"
    stamp = (folder / "non_keyframe.onnx").stat().st_mtime_ns
    second = VideoSegmenter(model, backend="onnxruntime")
    assert second.model.folder == folder and (folder / "non_keyframe.onnx").stat().st_mtime_ns == stamp
    ref = list(VideoSegmenter(model).segment(frames))
    assert all(np.mean(a.labels == b.labels) >= 0.999 for a, b in zip(ref, second.segment(frames)))
    # MSDA off in the options (e.g. mode reuse): an export without it; changed weights: another
    key = export_key(model, True)
    assert export_key(model, False) != key
    with torch.no_grad():
        model.decoder.classifier.bias.add_(1.0)
    assert export_key(model, True) != key


def test_backend_errors(exports, tmp_path):
    model, folder = exports[False]
    with pytest.raises(TfcsegError, match="no sparse MSDA"):  # this export has no MSDA in its graph
        VideoSegmenter(OnnxRuntimeModel(folder), options=TFCOptions(msda=True))
    with pytest.raises(ValueError, match="fp32"):
        VideoSegmenter(OnnxRuntimeModel(folder), precision="bf16")
    with pytest.raises(ValueError, match="backend='onnxruntime'"):
        VideoSegmenter(OnnxRuntimeModel(folder), backend="pytorch")
    save_checkpoint(model, tmp_path / "plain")
    with pytest.raises(TfcsegError, match="not an ONNX export"):
        OnnxRuntimeModel(tmp_path / "plain")
    with pytest.raises(TfcsegError, match="exists already"):
        export_onnx(model, folder)


def test_missing_extra_is_one_line(exports, tmp_path, monkeypatch, capsys):
    _, folder = exports[False]
    src = write_video(tmp_path / "clip.mp4", _clip(2, 48, 80))
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    monkeypatch.setitem(sys.modules, "onnx", None)
    for args in (["segment", str(src), "--model", str(folder), "--backend", "onnxruntime"],
                 ["export", str(folder), "--format", "onnx", "-o", str(tmp_path / "x")]):
        assert main(args) == 2
        err = capsys.readouterr().err
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and 'pip install "tfcseg[onnx]"' in lines[0], err
    assert not (tmp_path / "clip_tfcseg.mp4").exists()


def test_export_command(exports, tmp_path, capsys):
    _, folder = exports[True]
    out = tmp_path / "deploy"
    assert main(["export", str(folder), "--format", "onnx", "-o", str(out)]) == 0
    assert "non_keyframe.onnx" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["onnx"]["msda"] is True
    assert main(["export", str(folder), "--format", "onnx", "-o", str(out)]) == 2  # not without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(folder), "--format", "onnx", "-o", str(tmp_path / "y"), "--push-to-hub", "a/b"]) == 2
    assert "--push-to-hub" in capsys.readouterr().err
    assert main(["segment", "x.mp4", "--backend", "tensorrt"]) == 2
    assert "--backend tensorrt" in capsys.readouterr().err


def test_eval_and_benchmark_on_both_backends(exports, tmp_path, capsys):
    data = make_synthetic_vspw(tmp_path / "ds", videos=1, frames=5, num_classes=5, size=(32, 48), seed=0)
    model, folder = exports[True]
    ref = evaluate_model(model, data, keyframe_interval=3, short_side=0, progress=False)
    code = main(["eval", "--data-root", str(data), "--model", str(folder), "--backend", "onnxruntime",
                 "--keyframe-interval", "3", "--short-side", "0", "--json", str(tmp_path / "e.json"), "-q"])
    assert code == 0, capsys.readouterr().err
    got = json.loads((tmp_path / "e.json").read_text())
    assert got["backend"] == "onnxruntime" and ref["backend"] == "pytorch"
    for key in ("miou", "pixel_accuracy", "msda_share"):
        assert got[key] == pytest.approx(ref[key], abs=2e-3), key

    code = main(["benchmark", "--model", str(folder), "--size", "32x48", "--frames", "3", "--repeats", "1",
                 "--keyframe-interval", "2", "--no-msda-sweep", "--backend", "onnxruntime",
                 "--json", str(tmp_path / "b.json")])
    out = capsys.readouterr().out
    assert code == 0 and "ONNX Runtime" in out
    r = json.loads((tmp_path / "b.json").read_text())["onnxruntime"]
    assert set(r["modes"]) == {"tfc", "reuse", "segformer"} and r["providers"] == ["CPUExecutionProvider"]
    for m in r["modes"].values():
        assert m["fps"] > 0 and m["vs_pytorch"] > 0 and m["label_agreement_vs_pytorch"] >= 0.999


@pytest.mark.parametrize("mode", ["tfc", "segformer"])
def test_motion_aware_hysteresis_on_onnxruntime_as_on_pytorch(exports, mode):
    """The graphs return each frame's unit features, so motion-aware hysteresis gives the PyTorch
    labels on ONNX Runtime; an export from before it (no such output) is refused in one line."""
    model, folder = exports[True]
    frames = _clip(7, 48, 80)
    kw = dict(keyframe_interval=3, mode=mode, hysteresis=0.5, hysteresis_power=3.0)
    torch_run = list(VideoSegmenter(model, **kw).segment(frames))
    ort = OnnxRuntimeModel(folder)
    assert ort.has_frame_units
    ort_run = list(VideoSegmenter(ort, **kw).segment(frames))
    assert np.mean([np.mean(a.labels == b.labels) for a, b in zip(torch_run, ort_run)]) >= 0.999
    uniform = list(VideoSegmenter(ort, **{**kw, "hysteresis_power": 0.0}).segment(frames))
    assert any(np.any(a.labels != b.labels) for a, b in zip(ort_run, uniform))
    ort.has_frame_units = False  # as an older export
    with pytest.raises(ValueError, match="predates motion-aware label hysteresis"):
        VideoSegmenter(ort, **kw)
    VideoSegmenter(ort, **{**kw, "hysteresis_power": 0.0})  # without it, the old export still runs


def test_auto_keyframes_on_onnxruntime_follow_the_cut_as_pytorch_does(tmp_path):
    """With the whole-frame ONNX graphs, `auto` reads the similarity a non-keyframe returns and
    runs the frame again as a keyframe at a cut: the same keyframes and labels as PyTorch's."""
    from conftest import CUT_POLICY, spliced_video

    torch.manual_seed(0)
    model = TFCSegFormer(tiny_config(num_classes=5, tfc_trained=True))
    randomise_bn(model)
    model.eval()
    folder = export_onnx(model, tmp_path / "cut")
    video = spliced_video(cut=5, n=12)
    ours = list(VideoSegmenter(model, short_side=0, **CUT_POLICY).segment(video))
    theirs = list(VideoSegmenter(tfcseg.load_onnx_model(folder), short_side=0, **CUT_POLICY).segment(video))
    assert [r.index for r in ours if r.is_keyframe] == [0, 5]
    assert [r.index for r in theirs if r.is_keyframe] == [0, 5]
    assert [r.keyframe_reason for r in theirs] == [r.keyframe_reason for r in ours]
    agree = np.mean([np.mean(a.labels == b.labels) for a, b in zip(ours, theirs)])
    assert agree > 0.999
    # with motion-aware hysteresis: the frame after the cut compares with the cut's keyframe features
    held = dict(short_side=0, hysteresis=0.5, hysteresis_power=3.0, **CUT_POLICY)
    ours = list(VideoSegmenter(model, **held).segment(video))
    theirs = list(VideoSegmenter(tfcseg.load_onnx_model(folder), **held).segment(video))
    assert [r.keyframe_reason for r in theirs] == [r.keyframe_reason for r in ours]
    assert np.mean([np.mean(a.labels == b.labels) for a, b in zip(ours, theirs)]) > 0.999


def test_onnx_export_overwrite_keeps_other_files_and_refuses_dangerous_folders(exports, tmp_path, monkeypatch):
    model, _ = exports[False]
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "last").mkdir()
    with pytest.raises(TfcsegError, match="overwrite=True"):
        export_onnx(model, out)
    export_onnx(model, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine" and (out / "last").is_dir()
    assert (out / "keyframe.onnx").is_file() and (out / "non_keyframe.onnx").is_file()
    monkeypatch.chdir(out)
    with pytest.raises(TfcsegError, match="current folder"):
        export_onnx(model, Path("."), overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_thread_count_reaches_onnx_runtime(exports):
    _, folder = exports[False]
    ort = OnnxRuntimeModel(folder)
    assert ort.threads == torch.get_num_threads()
    assert VideoSegmenter(ort, threads="auto").model is ort  # auto tunes PyTorch's count only
    one = VideoSegmenter(ort, threads=1).model
    assert one is not ort and one.threads == 1 and one.providers == ort.providers
    assert one._key.get_session_options().intra_op_num_threads == 1  # what ONNX Runtime was given
    assert ort._key.get_session_options().intra_op_num_threads == torch.get_num_threads()
    frames = _clip(3, 48, 80)
    a = [r.labels for r in VideoSegmenter(ort, keyframe_interval=2).segment(frames)]
    b = [r.labels for r in VideoSegmenter(ort, keyframe_interval=2, threads=1).segment(frames)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
