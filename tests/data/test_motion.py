"""Video-rate clips from one labelled frame: shapes, determinism, image/label alignment,
the size of the motion, and their place in ClipDataset."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from tfcseg.data import ClipDataset, make_synthetic_vspw
from tfcseg.data.motion import (MotionModel, camera_map, mean_displacement, render_frame,
                                sample_clip_motion, video_rate_clip)

STILL = MotionModel(max_zoom=0, max_pan=0, max_roll=0, max_shake=0, object_prob=0, max_blur=0, max_noise=0,
                    max_gap=1)


def _scene(h=90, w=120, seed=0):
    """Labels 0..2 in blobs and rectangles; the image's dominant channel is the label."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((h, w), np.uint8)
    labels[: h // 3] = 1
    for _ in range(6):
        y, x = int(rng.integers(0, h - 20)), int(rng.integers(0, w - 20))
        labels[y:y + int(rng.integers(8, 20)), x:x + int(rng.integers(8, 20))] = int(rng.integers(0, 3))
    image = np.full((h, w, 3), 40, np.uint8)
    for c in range(3):
        image[labels == c, c] = 220
    return image, labels


def test_shapes_and_first_frame():
    image, labels = _scene()
    images, labs = video_rate_clip(np.random.default_rng(0), image, labels, 5)
    assert len(images) == len(labs) == 5
    assert all(i.shape == image.shape and i.dtype == np.uint8 for i in images)
    assert all(l.shape == labels.shape and l.dtype == np.uint8 for l in labs)
    assert images[0] is image and labs[0] is labels  # frame 0 is the labelled frame itself
    assert set(np.unique(np.concatenate([l.ravel() for l in labs]))) <= {0, 1, 2, 255}


def test_deterministic_under_a_seed():
    image, labels = _scene()
    a = video_rate_clip(np.random.default_rng(7), image, labels, 4)
    b = video_rate_clip(np.random.default_rng(7), image, labels, 4)
    c = video_rate_clip(np.random.default_rng(8), image, labels, 4)
    assert all(np.array_equal(x, y) for x, y in zip(a[0] + a[1], b[0] + b[1]))
    assert not all(np.array_equal(x, y) for x, y in zip(a[0][1:], c[0][1:]))


@pytest.mark.parametrize("seed", range(6))
def test_image_and_labels_stay_aligned(seed):
    """Inside every region (away from label edges, where bilinear image and nearest labels
    may differ by a pixel), the image's dominant channel is the frame's label."""
    image, labels = _scene(seed=seed)
    model = MotionModel(max_zoom=0.05, max_pan=0.03, max_roll=2.0, object_prob=1.0, max_object=4.0)
    images, labs = video_rate_clip(np.random.default_rng(seed), image, labels, 4, model)
    for img, lab in zip(images[1:], labs[1:]):
        edges = cv2.dilate((cv2.Laplacian(lab.astype(np.float32), cv2.CV_32F) != 0).astype(np.uint8),
                           np.ones((5, 5), np.uint8)).astype(bool)
        inner = (lab != 255) & ~edges
        assert inner.mean() > 0.3
        assert (img.argmax(2)[inner] == lab[inner]).mean() > 0.995


def test_labels_are_ignored_where_the_warp_leaves_the_frame():
    image, labels = _scene()
    motion = sample_clip_motion(np.random.default_rng(0), labels, 3, STILL)
    motion = type(motion)(**{**motion.__dict__, "shift": (10.0, 0.0)})  # pan right 10 px a frame
    _, lab = render_frame(image, labels, motion, 2)
    assert (lab[:, :20] == 255).all() and (lab[:, 20:] != 255).all()


def test_no_motion_is_the_identity():
    image, labels = _scene()
    images, labs = video_rate_clip(np.random.default_rng(0), image, labels, 3, STILL)
    for img, lab in zip(images, labs):
        assert np.array_equal(lab, labels) and np.abs(img.astype(int) - image).max() <= 12  # light drift only


def test_motion_is_video_rate_sized():
    """The default model moves a 360x480 frame a few pixels a frame (street video at 15-30 fps),
    far less than CamVid's 1 Hz label gap."""
    labels = np.zeros((360, 480), np.uint8)
    d = [mean_displacement(sample_clip_motion(np.random.default_rng(s), labels, 2), labels.shape)
         for s in range(100)]
    assert 1.0 < np.median(d) < 8.0 and max(d) < 15.0
    m = camera_map(sample_clip_motion(np.random.default_rng(0), labels, 3), 0)
    assert np.allclose(m, [[1, 0, 0], [0, 1, 0]])


def test_clip_dataset_mixes_video_rate_clips(tmp_path):
    root = make_synthetic_vspw(tmp_path / "data", videos=2, frames=6, size=(48, 64), num_classes=4)
    real = ClipDataset(root, split="train", clip_len=3, crop=32, base_size=(48, 64), seed=0)
    mixed = ClipDataset(root, split="train", clip_len=3, crop=32, base_size=(48, 64), seed=0,
                        video_rate_share=0.5)
    flags = [bool(mixed[i]["video_rate"]) for i in range(len(mixed))]
    assert any(flags) and not all(flags)
    for i, synthetic in enumerate(flags):
        a, b = real[i], mixed[i]
        assert b["frames"].shape == a["frames"].shape and b["labels"].shape == a["labels"].shape
        if not synthetic:  # the real clips are exactly what they are without the share
            assert (a["frames"] == b["frames"]).all() and (a["labels"] == b["labels"]).all()
    assert all(mixed[i]["video_rate"] == flags[i] for i in range(len(mixed)))  # deterministic
    with pytest.raises(Exception, match="video_rate_share"):
        ClipDataset(root, split="train", clip_len=3, crop=32, video_rate_share=1.5)


def test_clip_frames_are_one_to_max_gap_video_frames_apart():
    """A pure pan of 3 px a frame: frame 1 of a 2-frame clip lies g video frames on, g in 1..3."""
    image, labels = _scene()
    pan = MotionModel(max_zoom=0, max_pan=3 / 120, max_roll=0, max_shake=0, object_prob=0,
                      max_blur=0, max_noise=0, max_gap=3)
    gaps = set()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        _, labs = video_rate_clip(rng, image, labels, 2, pan)
        ignored = (labs[1] == 255).all(0)
        gaps.add(int(ignored.sum()))
    # |shift| <= 3 px a frame, so the ignored band is at most 3 * gap px wide; all gaps occur
    assert max(gaps) > 6 and min(gaps) <= 3
