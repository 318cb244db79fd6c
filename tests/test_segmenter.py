"""The streaming VideoSegmenter: modes, sizes, stability, memory."""

from __future__ import annotations

import gc
import resource

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tfcseg
from tfcseg import TFCSegFormer, VideoSegmenter
from tfcseg.segmenter import inference_size, preprocess

from conftest import CUT_POLICY, pan_scene, randomise_bn, spliced_video, tiny_config
from tfcseg.errors import TfcsegError
from tfcseg.segmenter import KeyframePolicy, keyframe_schedule


def _model(num_classes: int = 5, trained: bool = True) -> TFCSegFormer:
    torch.manual_seed(0)
    model = TFCSegFormer(tiny_config(num_classes=num_classes, tfc_trained=trained))
    randomise_bn(model)
    return model.eval()


def _video(n: int, h: int = 48, w: int = 80, seed: int = 0):
    """A smooth scene panning right by 2 pixels a frame, with a square moving down."""
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (6, 40, 3), dtype=np.uint8), (w * 5, h),
                      interpolation=cv2.INTER_LINEAR)
    for i in range(n):
        frame = np.ascontiguousarray(base[:, (2 * i) % (4 * w):(2 * i) % (4 * w) + w])
        y = (3 * i) % (h - 12)
        frame[y:y + 12, 10:22] = (255, 0, 0)
        yield frame


def _reference_labels(model, frame, size):
    """What a plain SegFormer on the frame gives (the definition of a keyframe's labels)."""
    with torch.no_grad():
        logits = model.image_logits(preprocess(frame, size))
    # logits upsampled straight to the frame's own size, then argmax (as mmseg does)
    return F.interpolate(logits, size=frame.shape[:2], mode="bilinear", align_corners=False).argmax(1)[0].numpy()


def test_inference_size():
    assert inference_size(1080, 1920, 480) == (480, 853)
    assert inference_size(720, 1280, 480) == (480, 853)
    assert inference_size(480, 853, 480) == (480, 853)
    assert inference_size(1920, 1080, 480) == (853, 480)
    assert inference_size(360, 480, 480) == (480, 640)
    assert inference_size(333, 500, 0) == (333, 500)


def test_preprocess_normalises():
    frame = np.zeros((4, 6, 3), np.uint8)
    frame[..., 0] = 255
    x = preprocess(frame)
    assert x.shape == (1, 3, 4, 6) and x.is_contiguous()
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([(1 - 0.485) / 0.229, -0.456 / 0.224, -0.406 / 0.225]))
    assert preprocess(frame, (8, 12)).shape == (1, 3, 8, 12)


@pytest.mark.parametrize("mode,keys", [
    ("tfc", [1, 0, 0, 0, 1, 0, 0, 0, 1, 0]),
    ("reuse", [1, 0, 0, 0, 1, 0, 0, 0, 1, 0]),
    ("segformer", [1] * 10),
])
def test_modes(mode, keys):
    model = _model()
    frames = list(_video(10))
    results = list(VideoSegmenter(model, mode=mode, short_side=0).segment(frames))
    assert [r.index for r in results] == list(range(10))
    assert [int(r.is_keyframe) for r in results] == keys
    for r, frame in zip(results, frames):
        assert r.labels.shape == (48, 80) and r.labels.dtype == np.uint8
        assert r.logits_lowres is None
        if r.is_keyframe:
            assert np.array_equal(r.labels, _reference_labels(model, frame, (48, 80)))
            assert r.msda_share == 0.0
    shares = [r.msda_share for r in results if not r.is_keyframe]
    if mode == "tfc":
        assert all(0 < s < 1 for s in shares)
    else:
        assert all(s == 0 for s in shares)


@pytest.mark.parametrize("mode", ["tfc", "reuse", "segformer"])
def test_static_video_is_stable(mode):
    model = _model()
    frame = next(_video(1))
    # (threads=None: one thread count throughout, so that float rounding is the same on every frame)
    results = list(VideoSegmenter(model, keyframe_interval=5, mode=mode, short_side=0, threads=None)
                   .segment([frame] * 9, return_logits=True))
    for r in results:
        assert np.array_equal(r.labels, results[0].labels)
        assert torch.equal(r.logits_lowres, results[0].logits_lowres)
        assert r.msda_share == 0.0


def test_resize_to_inference_size_and_back():
    model = _model()
    frames = [cv2.resize(f, (160, 96), interpolation=cv2.INTER_LINEAR) for f in _video(3)]
    seg = VideoSegmenter(model, short_side=48)
    results = list(seg.segment(frames, return_logits=True))
    for r, frame in zip(results, frames):
        assert r.labels.shape == (96, 160)
        assert r.logits_lowres.shape == (5, 12, 20)  # 48 x 80 inference size, 1/4
    assert np.array_equal(results[0].labels, _reference_labels(model, frames[0], (48, 80)))


def test_frame_at_inference_size_is_not_resized(monkeypatch):
    model = _model()
    frames = list(_video(2))  # 48 x 80: short side 48
    calls = []
    real = cv2.resize
    monkeypatch.setattr(cv2, "resize", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    list(VideoSegmenter(model, short_side=48).segment(frames))
    assert calls == []
    model.config.inference_short_side = 48  # the default comes from the config
    assert VideoSegmenter(model).short_side == 48


def test_size_change_starts_a_keyframe_and_reset():
    model = _model()
    small, big = list(_video(3)), list(_video(3, h=64, w=96))
    seg = VideoSegmenter(model, keyframe_interval=10, short_side=0)
    results = list(seg.segment(small + big))
    assert [r.is_keyframe for r in results] == [True, False, False, True, False, False]
    assert results[3].labels.shape == (64, 96)
    more = list(seg.segment(big[:1]))  # the session continues across calls
    assert more[0].index == 6 and not more[0].is_keyframe
    seg.reset()
    again = list(seg.segment(big[:2]))
    assert again[0].index == 0 and again[0].is_keyframe and not again[1].is_keyframe


@pytest.mark.parametrize("mode", ["segformer", "tfc"])
def test_label_hysteresis_holds_labels_until_a_new_class_leads(mode):
    """0 (the default of a config without it) changes nothing; a margin beyond any logit gap
    holds every pixel at the first frame's labels while the scene moves; a new video (reset)
    and a frame of another size start afresh; the model's config gives the default."""
    model = _model()
    frames = list(_video(6))
    plain = [r.labels for r in VideoSegmenter(model, keyframe_interval=3, mode=mode, short_side=0).segment(frames)]
    assert any((a != b).any() for a, b in zip(plain, plain[1:])), "the test needs labels that change"
    off = VideoSegmenter(model, keyframe_interval=3, mode=mode, short_side=0, hysteresis=0.0)
    assert all(np.array_equal(a.labels, b) for a, b in zip(off.segment(frames), plain))
    seg = VideoSegmenter(model, keyframe_interval=3, mode=mode, short_side=0, hysteresis=1e4)
    held = [r.labels for r in seg.segment(frames)]
    assert np.array_equal(held[0], plain[0])  # nothing held yet
    assert all(np.array_equal(h, held[1]) for h in held[2:])  # frozen from frame 1 on
    seg.reset()
    assert np.array_equal(next(iter(seg.segment(frames[3:4]))).labels, plain[3] if mode == "segformer"
                          else _reference_labels(model, frames[3], (48, 80)))
    bigger = list(_video(1, h=64, w=96))[0]
    assert np.array_equal(next(iter(seg.segment([bigger]))).labels, _reference_labels(model, bigger, (64, 96)))
    model.config.label_hysteresis = 1e4
    assert VideoSegmenter(model, short_side=0).hysteresis.margin == 1e4
    model.config.label_hysteresis = 0.0
    for bad in (-1, True, float("nan")):
        with pytest.raises(TfcsegError, match=f"hysteresis {bad}: expected a logit margin >= 0"):
            VideoSegmenter(model, hysteresis=bad)
    assert VideoSegmenter(model, hysteresis=np.float32(0.5)).hysteresis.margin == 0.5


@pytest.mark.parametrize("mode", ["segformer", "tfc"])
def test_motion_aware_hysteresis_scales_the_margin_by_the_similarity_to_the_previous_frame(mode):
    """hysteresis_power q: the labels are those of LabelHysteresis applied by hand to the plain
    logits with each frame's similarity to the previous frame (the cosine of their level-2
    features: `frame_units`); on a still video (similarity 1) the same as q = 0."""
    from tfcseg.postprocess import LabelHysteresis, labels_from_logits

    model = _model()
    frames = list(_video(7))
    plain = list(VideoSegmenter(model, keyframe_interval=3, mode=mode, short_side=0,
                                hysteresis=0.0).segment(frames, return_logits=True))
    seg = VideoSegmenter(model, keyframe_interval=3, mode=mode, short_side=0, hysteresis=0.5, hysteresis_power=3.0)
    assert seg.hysteresis.power == 3.0
    got = [r.labels for r in seg.segment(frames)]
    hold, prev, moved = LabelHysteresis(0.5, 3.0), None, 0
    with torch.no_grad():
        for frame, r, labels in zip(frames, plain, got):
            x1, x2 = model.low_level(preprocess(frame, (48, 80), torch.device("cpu"), torch.float32))
            units = model.frame_units(x1, x2)
            s = None if prev is None else model.units_similarity(prev, units, tuple(x1.shape[-2:]))
            moved += s is not None and bool((s < 0.99).any())
            ref = labels_from_logits(hold(r.logits_lowres[None], s), (48, 80))[0].numpy()
            assert np.array_equal(labels, ref)
            prev = units
    assert moved >= 3  # the video moves: the margins really differ from point to point
    uniform = [r.labels for r in VideoSegmenter(model, keyframe_interval=3, mode=mode, short_side=0,
                                                hysteresis=0.5).segment(frames)]
    assert any(not np.array_equal(a, b) for a, b in zip(got, uniform))
    still = [frames[0]] * 4
    a = [r.labels for r in VideoSegmenter(model, keyframe_interval=3, mode=mode, short_side=0, hysteresis=0.5,
                                          hysteresis_power=3.0).segment(still)]
    b = [r.labels for r in VideoSegmenter(model, keyframe_interval=3, mode=mode, short_side=0,
                                          hysteresis=0.5).segment(still)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    model.config.label_hysteresis_power = 2.0  # the default comes from the config
    assert VideoSegmenter(model, short_side=0).hysteresis.power == 2.0
    model.config.label_hysteresis_power = 0.0
    with pytest.raises(TfcsegError, match="hysteresis_power -1: expected"):
        VideoSegmenter(model, hysteresis=1.0, hysteresis_power=-1)


def test_label_hysteresis_lets_go_at_a_scene_cut():
    """An auto keyframe on a change labels the new scene as SegFormer does, however large
    the margin: the held labels belong to the old scene."""
    model = _model()
    video = spliced_video(cut=5, n=8)
    results = list(VideoSegmenter(model, short_side=0, hysteresis=1e4, **CUT_POLICY).segment(video))
    assert results[5].keyframe_reason == "change"
    assert np.array_equal(results[5].labels, _reference_labels(model, video[5], video[5].shape[:2]))
    assert np.array_equal(results[3].labels, results[1].labels)  # held within scene A


def test_many_classes_give_int32_labels():
    model = _model(num_classes=300)
    r = next(VideoSegmenter(model, short_side=0).segment(_video(1)))
    assert r.labels.dtype == np.int32 and r.labels.max() < 300


def test_bad_input_is_named():
    seg = VideoSegmenter(_model(), short_side=0)
    good = next(_video(1))
    with pytest.raises(ValueError, match="frame 1: expected uint8"):
        list(seg.segment([good, good.astype(np.float32)]))
    with pytest.raises(ValueError, match="H x W x 3"):
        list(VideoSegmenter(_model(), short_side=0).segment([good[..., 0]]))
    with pytest.raises(ValueError, match="mode"):
        VideoSegmenter(_model(), mode="fast")
    with pytest.raises(ValueError, match="short side 24 is below the 29"):
        VideoSegmenter(_model(), short_side=24)
    with pytest.raises(ValueError, match="frame 0: 24x40 at inference is smaller than the 29"):
        list(VideoSegmenter(_model(), short_side=0).segment([np.ascontiguousarray(good[:24, :40])]))


def test_runs_outside_inference_mode_between_frames():
    seg = VideoSegmenter(_model(), short_side=0)
    for _ in seg.segment(_video(2)):
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()


def test_exported_at_top_level():
    assert tfcseg.VideoSegmenter is VideoSegmenter


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def test_memory_stays_flat_over_a_long_stream():
    """Peak RSS at frame 1000 is that of frame 100: only one keyframe state is held."""
    model = _model()
    seg = VideoSegmenter(model, short_side=0)
    peak = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny frames: one thread is fastest, and robust to a busy CI box
    try:
        for r in seg.segment(_video(1001)):
            if r.index in (100, 1000):
                gc.collect()
                peak[r.index] = _rss_mb()
    finally:
        torch.set_num_threads(threads)
    # one keyframe state here is ~0.13 MB: 225 leaked states would add ~30 MB
    assert peak[1000] - peak[100] < 10, peak


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_agrees_with_fp32(precision):
    if precision == "fp16" and not torch.cuda.is_available():
        pytest.skip("fp16 autocast is a GPU option")
    model = _model()
    frames = list(_video(5))
    fp32 = list(VideoSegmenter(model, keyframe_interval=3, short_side=0).segment(frames, return_logits=True))
    low = list(VideoSegmenter(model, keyframe_interval=3, short_side=0, precision=precision)
               .segment(frames, return_logits=True))
    agree = np.mean([np.mean(a.labels == r.labels) for a, r in zip(fp32, low)])
    # reduced precision really ran: the logits differ from fp32's (slightly)
    assert not any(torch.equal(a.logits_lowres, r.logits_lowres) for a, r in zip(fp32, low))
    assert [r.is_keyframe for r in low] == [True, False, False, True, False]
    assert agree > 0.9


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        VideoSegmenter(_model(), precision="int4")


def test_too_small_short_side_is_refused_up_front():
    with pytest.raises(ValueError, match="short side 20 is below"):
        VideoSegmenter(_model(), short_side=20)
    with pytest.raises(ValueError, match="short side must be 0 .* not -5"):
        VideoSegmenter(_model(), short_side=-5)


def test_non_finite_output_is_said_once():
    import warnings

    model = _model()
    with torch.no_grad():
        model.decoder.classifier.bias.fill_(float("nan"))
    seg = VideoSegmenter(model, keyframe_interval=2, short_side=0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labels = [r.labels for r in seg.segment(_video(3))]
    assert all((lab == 0).all() for lab in labels)  # what NaN logits silently gave
    assert [str(w.message) for w in caught if w.category is RuntimeWarning] == [
        "frame 0: the model's output holds NaN or Inf (broken weights?); the labels of those pixels are "
        "meaningless"]


# ---- adaptive keyframes (keyframe_interval="auto") ---------------------------------------------


def _stage_calls(model) -> list[int]:
    """Counts of each encoder stage's runs, updated by forward hooks."""
    calls = [0, 0, 0, 0]
    for i, stage in enumerate(model.encoder.stages):
        stage.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    return calls


def _agreement(results, frames, model) -> list[float]:
    """Per frame, the share of pixels labelled as per-frame SegFormer labels them."""
    return [float(np.mean(r.labels == _reference_labels(model, f, f.shape[:2])))
            for r, f in zip(results, frames)]


def test_auto_makes_the_frame_at_a_scene_cut_a_keyframe_and_fixed_k_does_not():
    model = _model()
    video = spliced_video(cut=5, n=12)  # scene A: frames 0-4, scene B: 5-11
    calls = _stage_calls(model)
    auto = list(VideoSegmenter(model, short_side=0, **CUT_POLICY).segment(video))
    assert calls == [12, 12, 2, 2]  # stages 1-2 once per frame: the cut's reused for its keyframe
    fixed = list(VideoSegmenter(model, keyframe_interval=8, short_side=0).segment(video))

    # the signal: within scene A under half the points changed, at the cut most of them
    changed = [r.changed_share for r in auto]
    assert changed[0] is None and all(c < 0.5 for c in changed[1:5]) and changed[5] > 0.5
    assert [r.index for r in auto if r.is_keyframe] == [0, 5]
    assert [r.keyframe_reason for r in auto] == ["start"] + [None] * 4 + ["change"] + [None] * 6
    assert [r.index for r in fixed if r.is_keyframe] == [0, 8]  # frames 5-7 reuse scene A's
    assert all(r.changed_share is None for r in fixed)

    # at the cut auto's labels are SegFormer's on the new scene; fixed K's are not, and
    # after the cut auto's stay closer to them on every frame until fixed K's next keyframe
    agree_auto, agree_fixed = _agreement(auto, video, model), _agreement(fixed, video, model)
    assert agree_auto[5] == 1.0 and agree_fixed[5] < 0.9
    assert all(a > f for a, f in zip(agree_auto[5:8], agree_fixed[5:8]))
    assert agree_auto[:5] == agree_fixed[:5]  # the same run before the cut


@pytest.mark.parametrize("mode", ["tfc", "reuse"])
def test_auto_on_a_static_clip_keyframes_only_at_the_maximum_interval(mode):
    model = _model()
    frame = pan_scene(1, seed=0)[0]
    results = list(VideoSegmenter(model, mode=mode, short_side=0, keyframe_interval="auto",
                                  max_keyframe_interval=6).segment([frame] * 20))
    assert [r.index for r in results if r.is_keyframe] == [0, 6, 12, 18]
    assert [r.keyframe_reason for r in results if r.is_keyframe] == ["start", "interval", "interval", "interval"]
    # the same frame again: similarity exactly 1, so no point has changed at any threshold
    assert all(r.changed_share == 0.0 for r in results if not r.is_keyframe)


def test_min_keyframe_interval_holds_a_change_keyframe_back():
    model = _model()
    video = spliced_video(cut=2, n=9)
    results = list(VideoSegmenter(model, short_side=0, **{**CUT_POLICY, "min_keyframe_interval": 4})
                   .segment(video))
    assert [r.index for r in results if r.is_keyframe] == [0, 4]  # the cut at 2, held to 4
    assert results[2].changed_share > 0.5 and not results[2].is_keyframe
    assert results[4].keyframe_reason == "change"


def test_auto_in_segformer_mode_is_every_frame():
    seg = VideoSegmenter(_model(), mode="segformer", short_side=0, keyframe_interval="auto")
    assert seg.keyframe_interval == 1 and seg.policy is None
    assert all(r.is_keyframe for r in seg.segment(spliced_video(2, 4)))


def test_keyframe_options_are_checked():
    assert keyframe_schedule("auto") == ("auto", KeyframePolicy())
    assert keyframe_schedule(" AUTO ", max_keyframe_interval=8)[1].max_keyframe_interval == 8
    assert keyframe_schedule("4") == (4, None) and keyframe_schedule(4) == (4, None)
    for kwargs, needle in [
        (dict(keyframe_interval="often"), "keyframe_interval often: a whole number"),
        (dict(keyframe_interval=0), "keyframe_interval must be 1 or more"),
        (dict(keyframe_interval=2.5), "keyframe_interval 2.5"),
        (dict(keyframe_interval=4, max_keyframe_interval=8), "max_keyframe_interval: only with keyframe_interval auto"),
        (dict(keyframe_interval="auto", keyframe_similarity=1.5), "keyframe_similarity must be"),
        (dict(keyframe_interval="auto", keyframe_changed_share=-0.1), "keyframe_changed_share must be"),
        (dict(keyframe_interval="auto", max_keyframe_interval=0), "max_keyframe_interval must be"),
        (dict(keyframe_interval="auto", min_keyframe_interval=9, max_keyframe_interval=8), "is above"),
    ]:
        with pytest.raises(TfcsegError, match=needle) as info:
            keyframe_schedule(**kwargs)
        assert info.value.options  # the CLI shows the parameters it names as flags
        with pytest.raises(ValueError, match=needle):  # and the segmenter's checks are ValueErrors
            VideoSegmenter(_model(), short_side=0, **kwargs)
