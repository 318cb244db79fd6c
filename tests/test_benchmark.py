"""`tfcseg benchmark` end to end on a tiny model (numbers are checked for sense, not speed)."""

from __future__ import annotations

import json

import pytest
import torch

from tfcseg import TFCSegFormer, save_checkpoint
from tfcseg.benchmark import count_macs
from tfcseg.cli import main

from conftest import tiny_config


def test_count_macs_of_a_linear():
    lin = torch.nn.Linear(16, 8, bias=False)
    assert count_macs(lambda: lin(torch.randn(5, 16))) == 5 * 16 * 8


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_benchmark_command_json(tmp_path, precision):
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = TFCSegFormer(tiny_config(tfc_trained=True))
    save_checkpoint(model, tmp_path / "ck")
    out = tmp_path / "bench.json"
    code = main(["benchmark", "--model", str(tmp_path / "ck"), "--size", "64x96", "--frames", "3",
                 "--repeats", "1", "--keyframe-interval", "2", "--compare-hf", "--precision", precision,
                 "--json", str(out)])
    assert code == 0
    r = json.loads(out.read_text())
    assert set(r["modes"]) == {"segformer", "reuse", "tfc"}
    assert all(m["fps"] > 0 for m in r["modes"].values())
    assert r["macs"]["keyframe"] > r["macs"]["encoder_stages_3_4"] > 0
    assert r["params"]["total"] == sum(p.numel() for p in model.parameters())
    assert [row["share"] for row in r["msda_sweep"]] == [0.1, 0.2, 0.4, 1.0]
    # same weights, same input: tfcseg's fp32 SegFormer labels are transformers' labels
    assert r["transformers"]["segformer_label_agreement"] > 0.999
    assert r["transformers"]["clip_ms"]["repeats"] == r["modes"]["tfc"]["clip_ms"]["repeats"] == 1
    if precision == "bf16":
        assert all(0.5 < m["label_agreement_vs_fp32"] <= 1 for m in r["modes"].values())


def test_benchmark_on_real_footage(tmp_path):
    from conftest import write_video
    from tfcseg.benchmark import BenchmarkSettings, run_benchmark
    from tfcseg.data.synthetic import _render_video
    import numpy as np

    frames = [img for img, _ in _render_video(np.random.default_rng(0), 0, 4, 4, (40, 60), [[0, 0, 0]] * 4)]
    src = write_video(tmp_path / "clip.mp4", frames)
    torch.manual_seed(0)
    model = TFCSegFormer(tiny_config(tfc_trained=True)).eval()
    r = run_benchmark(model, BenchmarkSettings(size=(64, 96), frames=3, keyframe_interval=2, repeats=1,
                                               msda_sweep=False, video=str(src)))
    assert r["clip"] == str(src) and r["frames"] == 3 and "msda_sweep" not in r


def test_benchmark_auto_keyframes(tmp_path):
    """`--keyframe-interval auto`: keyframes counted per mode, the MACs of a keyframe chosen
    after its stages 1-2, and TFC's MACs per frame from the keyframes that really ran."""
    from tfcseg.benchmark import BenchmarkSettings, run_benchmark, tfc_macs_per_frame

    torch.manual_seed(0)
    model = TFCSegFormer(tiny_config(tfc_trained=True)).eval()
    settings = BenchmarkSettings(size=(64, 96), frames=5, keyframe_interval="auto", max_keyframe_interval=2,
                                 keyframe_changed_share=1.0, repeats=1, msda_sweep=False)
    r = run_benchmark(model, settings)
    assert r["keyframe_policy"]["max_keyframe_interval"] == 2
    assert r["modes"]["tfc"]["keyframes"] == r["modes"]["reuse"]["keyframes"] == [0, 2, 4]
    assert r["modes"]["segformer"]["keyframe_share"] == 1.0
    macs = r["macs"]
    # stages 1-2 and the similarity, then stages 3-4 and the decoder: a little over a keyframe
    assert macs["keyframe"] < macs["keyframe_on_change"] < macs["keyframe"] + macs["non_keyframe"]
    assert r["latency"]["keyframe_from_low_level"]["median_ms"] > 0
    assert tfc_macs_per_frame(macs, 5, 3) == pytest.approx((3 * macs["keyframe"] + 2 * macs["non_keyframe"]) / 5)
    assert tfc_macs_per_frame(macs, 4, 2, on_change=1) == pytest.approx(
        (macs["keyframe"] + macs["keyframe_on_change"] + 2 * macs["non_keyframe"]) / 4)
    achieved = r["achieved_macs_per_s"]["tfc"] / r["modes"]["tfc"]["fps"]
    assert achieved == pytest.approx(tfc_macs_per_frame(macs, 5, 3))


def test_benchmark_bad_options(capsys):
    assert main(["benchmark", "--variant", "b9"]) == 2
    assert main(["benchmark", "--variant", "b0", "--size", "big"]) == 2
    assert main(["benchmark", "--variant", "b0", "-k", "auto", "--min-keyframe-interval", "0"]) == 2
    err = capsys.readouterr().err
    assert "b9" in err and "HxW" in err and "--min-keyframe-interval must be" in " ".join(err.split())


def test_benchmark_load_starts_and_stops_busy_processes(monkeypatch, tmp_path, capsys):
    """--load N: the clips timed again beside N busy processes (both thread policies), which
    are gone afterwards."""
    import tfcseg.benchmark as bench

    started = []
    real = bench.busy_processes

    def spy(n):
        started.extend(real(n))
        return started[-n:]

    monkeypatch.setattr(bench, "busy_processes", spy)
    torch.manual_seed(0)
    model = TFCSegFormer(tiny_config(tfc_trained=True)).eval()
    r = bench.run_benchmark(model, bench.BenchmarkSettings(size=(64, 96), frames=3, keyframe_interval=2,
                                                           repeats=1, msda_sweep=False, load=1))
    assert len(started) == 1 and all(p.poll() is not None for p in started)  # stopped
    load = r["load"]
    assert load["processes"] == 1
    for mode in ("segformer", "tfc"):
        for name in ("auto", "pytorch_default"):
            assert load[mode][name]["fps"] > 0 and load[mode][name]["kept"] > 0


def test_benchmark_msda_choice(tmp_path):
    torch.manual_seed(0)
    save_checkpoint(TFCSegFormer(tiny_config(tfc_trained=True)), tmp_path / "ck")
    shares = {}
    for choice in ("off", "0.99"):
        out = tmp_path / f"{choice}.json"
        assert main(["benchmark", "-m", str(tmp_path / "ck"), "--size", "64x96", "--frames", "3", "--repeats", "1",
                     "-k", "3", "--no-msda-sweep", "--msda", choice, "--json", str(out)]) == 0
        shares[choice] = json.loads(out.read_text())["modes"]["tfc"]["msda_share"]
    assert shares["off"] == 0.0 < shares["0.99"]
    out = tmp_path / "p.json"
    assert main(["benchmark", "-m", str(tmp_path / "ck"), "--size", "64x96", "--frames", "3", "--repeats", "1",
                 "-k", "3", "--no-msda-sweep", "--interpolation-power", "5", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["interpolation_power"] == 5.0
    assert main(["benchmark", "-m", str(tmp_path / "ck"), "--interpolation-power", "0.2"]) == 2
