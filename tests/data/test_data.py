"""The VSPW-layout loader, training clips, the synthetic generator, and bad data."""

from __future__ import annotations

import json
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tfcseg.data import (
    VSPW_CLASSES,
    ClipDataset,
    DataWarning,
    VSPWDataset,
    make_synthetic_vspw,
    read_image,
    read_label,
    read_mask,
    remap_label,
)
from tfcseg.data.transforms import rescale_size, sample_clip_augmentation
from tfcseg.errors import TfcsegError
from tfcseg.models.segformer import IMAGENET_MEAN, IMAGENET_STD

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "data" / "camvid"
if not CAMVID.is_dir():
    CAMVID = Path("/work/shared/data/camvid")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_synthetic_vspw(tmp_path_factory.mktemp("synth"), videos=2, frames=6,
                               num_classes=4, size=(40, 56), seed=3)


def fresh(tmp_path: Path, **kw) -> Path:
    args = dict(videos=1, frames=5, num_classes=4, size=(32, 48), seed=1)
    args.update(kw)
    return make_synthetic_vspw(tmp_path / "ds", **args)


def png_bytes(mask: np.ndarray, colour_type: int, palette: np.ndarray | None = None) -> bytes:
    """A PNG written by hand (not by tfcseg), for an independent check of the reader."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    h, w = mask.shape[:2]
    rows = b"".join(b"\x00" + mask[r].tobytes() for r in range(h))
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, colour_type, 0, 0, 0))
    if palette is not None:
        out += chunk(b"PLTE", palette.astype(np.uint8).tobytes())
        out += chunk(b"tRNS", bytes([0] + [255] * (len(palette) - 1)))
    return out + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


# ---- synthetic data and the loader ---------------------------------------------------------


def test_synthetic_layout_and_loader(synth):
    ds = VSPWDataset(synth, "val")
    assert ds.videos == ["video_000", "video_001"]
    assert ds.num_classes == 4 and ds.class_names[0] == "background" and len(ds.palette) == 4
    records = ds.frames("video_000")
    assert [r.name for r in records] == [f"{t:05d}" for t in range(6)]
    assert all(r.image.suffix == ".jpg" and r.mask.suffix == ".png" for r in records)
    seen = set()
    frames = list(ds.iter_video("video_001"))
    assert len(frames) == 6
    for name, rgb, label in frames:
        assert rgb.shape == (40, 56, 3) and rgb.dtype == np.uint8
        assert label.shape == (40, 56) and label.dtype == np.uint8
        assert set(np.unique(label)) <= {0, 1, 2, 3, 255}
        seen |= set(np.unique(label).tolist())
    assert 255 in seen and 0 in seen  # the "others" patch is ignored, the background labelled
    # Shapes move: labels change from frame to frame, images too.
    assert not np.array_equal(frames[0][2], frames[-1][2])
    assert ds.skipped == []


def test_synthetic_is_deterministic_and_palette_masks_hold_the_same_indices(tmp_path):
    a = make_synthetic_vspw(tmp_path / "a", videos=1, frames=3, size=(24, 32), seed=5)
    b = make_synthetic_vspw(tmp_path / "b", videos=1, frames=3, size=(24, 32), seed=5, palette_masks=True)
    for t in range(3):
        ma = read_mask(a / "data/video_000/mask" / f"{t:05d}.png")
        mb = read_mask(b / "data/video_000/mask" / f"{t:05d}.png")
        np.testing.assert_array_equal(ma, mb)
        # b's masks really are palette PNGs: OpenCV alone decodes them to colours.
        colours = cv2.imread(str(b / "data/video_000/mask" / f"{t:05d}.png"), cv2.IMREAD_UNCHANGED)
        assert colours.ndim == 3
        np.testing.assert_array_equal(read_image(a / "data/video_000/origin" / f"{t:05d}.jpg"),
                                      read_image(b / "data/video_000/origin" / f"{t:05d}.jpg"))


def test_remap_label_official_encoding():
    raw = np.array([[0, 1, 2, 3], [4, 5, 255, 252]], np.uint8)
    with pytest.warns(DataWarning, match=r"f\.png: 2 pixel\(s\) with label value\(s\) 5, 252"):
        lab = remap_label(raw, 4, "f.png")
    np.testing.assert_array_equal(lab, [[255, 0, 1, 2], [3, 255, 255, 255]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(remap_label(np.array([[124, 0]], np.uint8), 124), [[123, 255]])


def test_palette_png_is_read_as_indices_not_colours(tmp_path):
    idx = np.array([[0, 1, 2], [3, 4, 255]], np.uint8)
    # Duplicate colours in the palette: colours alone could not give the indices back.
    palette = np.zeros((256, 3), np.uint8)
    palette[1] = palette[2] = [10, 20, 30]
    palette[255] = [255, 255, 255]
    path = tmp_path / "p.png"
    path.write_bytes(png_bytes(idx, 3, palette))
    np.testing.assert_array_equal(read_mask(path), idx)
    np.testing.assert_array_equal(read_label(path, 4), [[255, 0, 1], [2, 3, 255]])


def test_grey_mask_stored_as_rgb_is_accepted(tmp_path):
    idx = np.array([[0, 7], [9, 255]], np.uint8)
    path = tmp_path / "g.png"
    path.write_bytes(png_bytes(np.repeat(idx[..., None], 3, axis=2), 2))
    np.testing.assert_array_equal(read_mask(path), idx)


def test_default_classes_are_vspw(tmp_path):
    root = fresh(tmp_path)
    (root / "classes.json").unlink()
    ds = VSPWDataset(root, "val")
    assert ds.num_classes == 124 and ds.class_names == list(VSPW_CLASSES)
    assert ds.class_names[0] == "wall" and ds.class_names[-1] == "train"
    assert len(ds.palette) == 124 and len({tuple(c) for c in ds.palette}) == 124


# ---- bad data ---------------------------------------------------------------------------------


def test_missing_mask_and_missing_frame_are_skipped_with_their_paths(tmp_path):
    root = fresh(tmp_path)
    video = root / "data/video_000"
    (video / "mask/00001.png").unlink()
    (video / "origin/00003.jpg").unlink()
    ds = VSPWDataset(root, "val")
    with pytest.warns(DataWarning) as record:
        names = [r.name for r in ds.frames("video_000")]
    assert names == ["00000", "00002", "00004"]
    messages = " | ".join(str(w.message) for w in record)
    assert str(video / "mask/00001.png") in messages and "mask missing" in messages
    assert str(video / "origin/00003.jpg") in messages and "frame missing" in messages
    assert len(ds.skipped) == 2


@pytest.mark.parametrize("damage", ["zero-byte", "corrupt"])
def test_unreadable_image_is_skipped_and_counted(tmp_path, damage):
    root = fresh(tmp_path)
    bad = root / "data/video_000/origin/00002.jpg"
    bad.write_bytes(b"" if damage == "zero-byte" else b"\xff\xd8 not really a jpeg")
    ds = VSPWDataset(root, "val")
    with pytest.warns(DataWarning, match=str(bad).replace("\\", "\\\\")):
        names = [name for name, _, _ in ds.iter_video("video_000")]
    assert names == ["00000", "00001", "00003", "00004"]
    assert ds.skipped[0][0] == str(bad)
    assert ("empty" if damage == "zero-byte" else "not a readable image") in ds.skipped[0][1]
    with pytest.raises(TfcsegError, match="00002.jpg"):
        read_image(bad)


def test_colour_mask_fails_clearly(tmp_path):
    root = fresh(tmp_path)
    bad = root / "data/video_000/mask/00001.png"
    colour = np.zeros((32, 48, 3), np.uint8)
    colour[:, :24] = [0, 0, 128]
    cv2.imwrite(str(bad), colour)
    with pytest.raises(TfcsegError, match=r"00001\.png: a colour mask"):
        read_label(bad, 4)
    ds = VSPWDataset(root, "val")
    with pytest.raises(TfcsegError, match=r"00001\.png: a colour mask"):
        list(ds.iter_video("video_000"))


def test_stray_labels_become_ignore_with_a_warning_naming_the_file(tmp_path):
    root = fresh(tmp_path)
    path = root / "data/video_000/mask/00000.png"
    raw = read_mask(path)
    raw[:3, :3] = 252
    raw[5, 5] = 6  # beyond the 4 classes (values 1..4)
    cv2.imwrite(str(path), raw)
    ds = VSPWDataset(root, "val")
    with pytest.warns(DataWarning, match=str(path) + r": 10 pixel\(s\) with label value\(s\) 6, 252"):
        _, _, label = next(ds.iter_video("video_000"))
    assert (label[:3, :3] == 255).all() and label[5, 5] == 255
    assert set(np.unique(label)) <= {0, 1, 2, 3, 255}


def test_mask_size_mismatch_fails_clearly(tmp_path):
    root = fresh(tmp_path)
    path = root / "data/video_000/mask/00000.png"
    cv2.imwrite(str(path), np.ones((10, 10), np.uint8))
    with pytest.raises(TfcsegError, match=r"00000\.png: mask is 10x10 but its frame 00000\.jpg is 48x32"):
        list(VSPWDataset(root, "val").iter_video("video_000"))


def test_missing_split_and_video_folder_fail_clearly(tmp_path):
    root = fresh(tmp_path)
    with pytest.raises(TfcsegError, match=r"test\.txt: split file not found \(splits here: train, val\)"):
        VSPWDataset(root, "test")
    (root / "val.txt").write_text("video_000\nvideo_404\n")
    with pytest.raises(TfcsegError, match=r"video_404: video folder listed in val\.txt not found"):
        VSPWDataset(root, "val")
    (root / "classes.json").write_text("{not json")
    with pytest.raises(TfcsegError, match=r"classes\.json: not valid JSON"):
        VSPWDataset(root, "train")


def test_short_videos_are_skipped_for_clips_and_nothing_left_fails(tmp_path):
    root = make_synthetic_vspw(tmp_path / "ds", videos=2, frames=3, size=(24, 32), seed=0)
    for t in (1, 2):  # video_001 keeps one frame
        (root / f"data/video_001/origin/{t:05d}.jpg").unlink()
        (root / f"data/video_001/mask/{t:05d}.png").unlink()
    with pytest.warns(DataWarning, match=r"video_001: 1 usable frame\(s\), fewer than the clip length 2"):
        clips = ClipDataset(root, "train", clip_len=2, crop=16, base_size=(24, 32))
    assert [c[0] for c in clips.clips] == ["video_000", "video_000"]
    with pytest.warns(DataWarning), pytest.raises(TfcsegError, match=r"no video has 4 usable frame\(s\)"):
        ClipDataset(root, "train", clip_len=4, crop=16, base_size=(24, 32))
    # clips made at video rate from one labelled frame: every frame is a keyframe, none skipped
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        made = ClipDataset(root, "train", clip_len=4, crop=16, base_size=(24, 32), video_rate_share=1.0)
    assert made.clips == [("video_000", 0), ("video_000", 1), ("video_000", 2), ("video_001", 0)]
    item = made[3]
    assert item["video"] == "video_001" and item["frames"].shape == (4, 3, 16, 16)


def test_clip_with_unreadable_frame_is_replaced_by_the_next_clip(tmp_path):
    root = make_synthetic_vspw(tmp_path / "ds", videos=1, frames=6, size=(24, 32), seed=0)
    (root / "data/video_000/origin/00001.jpg").write_bytes(b"")
    clips = ClipDataset(root, "train", clip_len=2, crop=16, base_size=(24, 32))
    with pytest.warns(DataWarning, match="00001.jpg"):
        item = clips[0]  # clips 0 (frames 0-1) and 1 (frames 1-2) hold the bad frame
    assert item["start"] == 2


# ---- clips and augmentation ------------------------------------------------------------------


def test_clip_items_shapes_and_determinism(synth):
    clips = ClipDataset(synth, "train", clip_len=3, crop=32, base_size=(40, 56), seed=7)
    assert len(clips) == 2 * (6 - 3 + 1)
    item = clips[5]
    assert item["frames"].shape == (3, 3, 32, 32) and item["frames"].dtype == torch.float32
    assert item["labels"].shape == (3, 32, 32) and item["labels"].dtype == torch.int64
    assert (item["video"], item["start"]) == ("video_001", 1)
    assert set(item["labels"].unique().tolist()) <= {0, 1, 2, 3, 255}
    again = clips[5]
    assert torch.equal(item["frames"], again["frames"]) and torch.equal(item["labels"], again["labels"])
    clips.set_epoch(1)
    other = clips[5]
    assert not torch.equal(item["frames"], other["frames"])
    clips.set_epoch(0)
    assert torch.equal(clips[5]["frames"], item["frames"])


def test_augmentation_is_identical_on_every_frame_of_a_clip(tmp_path):
    root = make_synthetic_vspw(tmp_path / "ds", videos=1, frames=4, size=(40, 56), seed=2)
    video = root / "data/video_000"
    for t in (1, 2, 3):
        shutil.copy(video / "origin/00000.jpg", video / f"origin/{t:05d}.jpg")
        shutil.copy(video / "mask/00000.png", video / f"mask/{t:05d}.png")
    clips = ClipDataset(root, "train", clip_len=4, crop=32, base_size=(40, 56), seed=0)
    flips = set()
    for epoch in range(6):
        clips.set_epoch(epoch)
        item = clips[0]
        for t in range(1, 4):
            assert torch.equal(item["frames"][t], item["frames"][0])
            assert torch.equal(item["labels"][t], item["labels"][0])
        flips.add(item["frames"][0].sum().item())
    assert len(flips) > 1  # the augmentation does change between epochs


def test_unaugmented_clip_is_the_normalised_frame_or_its_mirror(tmp_path):
    root = make_synthetic_vspw(tmp_path / "ds", videos=1, frames=2, size=(32, 48), seed=4)
    clips = ClipDataset(root, "train", clip_len=2, crop=48, base_size=(32, 48), ratio_range=(1.0, 1.0),
                        cat_max_ratio=1.0, photometric=False, seed=0)
    rgb = read_image(root / "data/video_000/origin/00000.jpg").astype(np.float32)
    label = read_label(root / "data/video_000/mask/00000.png", 4)
    seen = set()
    for epoch in range(8):
        clips.set_epoch(epoch)
        item = clips[0]
        pixels = item["frames"][0].numpy().transpose(1, 2, 0)
        img = pixels[:32] * np.array(IMAGENET_STD, np.float32) * 255 + np.array(IMAGENET_MEAN, np.float32) * 255
        flipped = not np.allclose(img, rgb, atol=1e-3)
        ref_img, ref_lab = (rgb[:, ::-1], label[:, ::-1]) if flipped else (rgb, label)
        np.testing.assert_allclose(img, ref_img, atol=1e-3)
        np.testing.assert_array_equal(item["labels"][0, :32].numpy(), ref_lab)
        # The crop (48) is taller than the frame (32): padded with 0 / ignore like mmseg.
        assert (item["frames"][0, :, 32:] == 0).all() and (item["labels"][0, 32:] == 255).all()
        seen.add(flipped)
    assert seen == {True, False}


def test_rescale_size_is_mmcv_keep_ratio():
    # 480x360 in 853x480: factor min(853/480, 480/360) = 4/3.
    assert rescale_size((360, 480), (480, 853), 1.0) == (480, 640)
    # 853x480 at ratio 0.5: long edge int(426.5) = 426, short 240 -> factor 426/853,
    # W = int(426 + 0.5), H = int(239.72 + 0.5).
    assert rescale_size((480, 853), (480, 853), 0.5) == (240, 426)


def test_cat_max_ratio_avoids_single_class_crops():
    # 15 of the 69 possible crop positions hold both classes with neither above 75 %.
    label = np.zeros((32, 100), np.uint8)
    label[:, 50:] = 1
    ok = {0.75: 0, 1.0: 0}
    for cap in ok:
        for seed in range(40):
            aug = sample_clip_augmentation(np.random.default_rng(seed), label, crop=32, base_size=(32, 100),
                                           ratio_range=(1.0, 1.0), cat_max_ratio=cap, photometric=False)
            y0, x0, y1, x1 = aug.crop_box
            _, counts = np.unique(label[y0:y1, x0:x1], return_counts=True)
            ok[cap] += int(len(counts) > 1 and counts.max() / counts.sum() < 0.75)
    assert ok[1.0] <= 16 and ok[0.75] >= 32


# ---- real data --------------------------------------------------------------------------------


@pytest.mark.skipif(not CAMVID.is_dir(), reason="../shared/data/camvid not present")
def test_camvid_loader_real_data():
    ds = VSPWDataset(CAMVID, "val")
    assert ds.videos == ["0016E5_07959"] and ds.num_classes == 11
    assert ds.class_names == json.loads((CAMVID / "classes.json").read_text())["classes"]
    records = ds.frames("0016E5_07959")
    assert len(records) == 101 and [r.name for r in records] == sorted(r.name for r in records)
    for i, (name, rgb, label) in enumerate(ds.iter_video("0016E5_07959")):
        assert rgb.shape == (360, 480, 3) and label.shape == (360, 480)
        values = set(np.unique(label).tolist())
        assert values <= set(range(11)) | {255} and len(values - {255}) >= 3
        if i == 2:
            break


@pytest.mark.skipif(not CAMVID.is_dir(), reason="../shared/data/camvid not present")
def test_camvid_clips_real_data():
    # 0016E5_00901 has only 2 frames: skipped (with a warning) for clips of 4.
    with pytest.warns(DataWarning, match=r"0016E5_00901: 2 usable frame\(s\)"):
        clips = ClipDataset(CAMVID, "train", clip_len=4, crop=96, base_size=(120, 213), seed=0)
    assert len(clips) == sum(n - 3 for n in (62, 101, 17, 49, 120, 16))
    item = clips[len(clips) - 1]
    assert item["frames"].shape == (4, 3, 96, 96) and item["labels"].shape == (4, 96, 96)
    assert set(item["labels"].unique().tolist()) <= set(range(11)) | {255}
    assert item["video"] == "0016E5_08190" and item["start"] == 12
    assert torch.isfinite(item["frames"]).all() and item["frames"].abs().max() < 3.0
