"""Frame sources and the H.264 writer, on videos generated here with imageio-ffmpeg."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import cv2
import imageio_ffmpeg
import numpy as np
import pytest

from tfcseg.errors import TfcsegError
from tfcseg.io.video import (AudioSource, Selection, VideoWriter, camera_input, expand_sources,
                            ffmpeg_exe, is_stream, open_frames, pad_to_even, parse_rate, probe_video)

from conftest import NTSC, audio_seconds, ffmpeg_clip, http_server, write_video


def make_frames(n: int, w: int, h: int) -> list[np.ndarray]:
    """Frames easy to tell apart after lossy coding: a flat colour that changes per frame,
    with a red left half (so a BGR/RGB swap shows)."""
    out = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[:] = (40, 40 + 15 * (i % 10), 200)
        f[:, : w // 2] = (230, 20, 20)
        out.append(f)
    return out


def test_probe_and_read_ntsc_video_not_multiple_of_16(tmp_path):
    frames = make_frames(12, 70, 94)
    path = write_video(tmp_path / "clip.mp4", frames)
    info = probe_video(path)
    assert (info.width, info.height) == (70, 94)
    assert info.fps == NTSC and isinstance(info.fps, Fraction)
    assert info.codec == "h264" and info.frame_count == 12 and info.name == "clip"
    src = open_frames(path)
    got = list(src)
    assert [f.index for f in got] == list(range(12)) and src.lost == 0 and not src.warnings
    assert got[3].name == "00003"
    for f, ref in zip(got, frames):
        assert f.rgb.shape == (94, 70, 3) and f.rgb.dtype == np.uint8
        # Lossy, but close; and RGB (not BGR): the left half is red.
        assert np.abs(f.rgb[20:70, 45:65].astype(int) - ref[20:70, 45:65]).mean() < 4
        assert f.rgb[47, 10, 0] > 200 and f.rgb[47, 10, 2] < 50


def test_selection_start_end_stride(tmp_path):
    path = write_video(tmp_path / "clip.mp4", make_frames(40, 32, 24))
    src = open_frames(path, start=0.2, end=1.0, stride=3)
    # 0.2 s * 29.97 = 5.99 -> first frame 6; 1.0 s -> frames before 29.97 -> up to 29.
    assert [f.index for f in src] == [6, 9, 12, 15, 18, 21, 24, 27]
    assert src.expected == 8 and src.fps == NTSC / 3 and src.lost == 0
    sel = Selection.from_times(Fraction(10), 1.1, None, 2)
    assert (sel.first, sel.stop, sel.stride) == (11, None, 2)
    assert sel.count(20) == 5 and sel.count(None) is None
    with pytest.raises(TfcsegError, match="stride"):
        Selection.from_times(NTSC, None, None, 0)
    with pytest.raises(TfcsegError, match="after start"):
        Selection.from_times(NTSC, 2.0, 1.0)
    with pytest.raises(TfcsegError, match="no frames in the selected range"):
        open_frames(path, start=100.0)


def test_image_folder_natural_order_vspw_name_and_unreadable_frame(tmp_path):
    origin = tmp_path / "video_7" / "origin"
    origin.mkdir(parents=True)
    frames = make_frames(4, 21, 13)
    names = ["frame2", "frame10", "frame1", "frame3"]
    for name, f in zip(names, frames):
        cv2.imwrite(str(origin / f"{name}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    (origin / "frame11.png").write_bytes(b"")  # a zero-byte frame, as VSPW sometimes has
    (origin / "notes.txt").write_text("not a frame")
    src = open_frames(origin)
    assert src.info.name == "video_7" and src.info.kind == "images"
    assert (src.info.width, src.info.height, src.info.fps) == (21, 13, Fraction(30))
    got = list(src)
    assert [f.name for f in got] == ["frame1", "frame2", "frame3", "frame10"]
    np.testing.assert_array_equal(got[1].rgb, frames[0])  # PNG is lossless, and RGB
    assert src.lost == 1 and "frame11.png" in src.warnings[0]
    # The same frames through a glob.
    glob_src = open_frames(str(origin / "frame*.png"))
    assert [f.name for f in glob_src] == ["frame1", "frame2", "frame3", "frame10"]


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(TfcsegError, match="no image frames"):
        open_frames(tmp_path / "empty")
    with pytest.raises(TfcsegError, match="no files match"):
        open_frames(str(tmp_path / "nothing*.png"))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    cv2.imwrite(str(mixed / "a.png"), np.zeros((10, 12, 3), np.uint8))
    cv2.imwrite(str(mixed / "b.png"), np.zeros((11, 12, 3), np.uint8))
    with pytest.raises(TfcsegError, match=r"b\.png: frame size 12x11 differs"):
        list(open_frames(mixed))


def test_bad_video_files(tmp_path):
    with pytest.raises(TfcsegError, match="missing.mp4: no such file"):
        open_frames(tmp_path / "missing.mp4")
    (tmp_path / "empty.mp4").write_bytes(b"")
    with pytest.raises(TfcsegError, match="empty.mp4: the file is empty"):
        open_frames(tmp_path / "empty.mp4")
    (tmp_path / "text.mp4").write_text("hello, I am not a video\n" * 20)
    with pytest.raises(TfcsegError, match="text.mp4: not a readable video"):
        open_frames(tmp_path / "text.mp4")
    audio = tmp_path / "tone.m4a"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-f", "lavfi", "-i", "sine=duration=0.3", str(audio)],
                   check=True)
    with pytest.raises(TfcsegError, match="tone.m4a: the file has no video stream"):
        open_frames(audio)


def test_video_with_zero_frames(tmp_path):
    # A faststart MP4 cut right after its index: a video stream whose frames are all missing.
    full = write_video(tmp_path / "full.mp4", make_frames(5, 32, 24), faststart=True).read_bytes()
    cut = full.index(b"mdat") + 4
    (tmp_path / "zero.mp4").write_bytes(full[:cut])
    with pytest.raises(TfcsegError, match="zero.mp4: the video has no frames"):
        open_frames(tmp_path / "zero.mp4")


def test_truncated_video_reads_what_it_can_and_counts_the_lost(tmp_path):
    full = write_video(tmp_path / "full.mp4", make_frames(60, 64, 48), faststart=True)
    data = full.read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) * 2 // 3])
    src = open_frames(tmp_path / "cut.mp4")
    n = sum(1 for _ in src)
    assert 0 < n < 60
    assert src.lost == 60 - n
    assert "cut.mp4" in src.warnings[0] and f"{src.lost} lost" in src.warnings[0]


def test_leaving_early_stops_the_reader(tmp_path):
    path = write_video(tmp_path / "clip.mp4", make_frames(30, 32, 24))
    before = threading.active_count()
    src = open_frames(path, queue_size=2)
    for i, _ in enumerate(src):
        if i == 1:
            break
    src.close()
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() <= before


def test_pad_to_even_repeats_edge_and_never_rescales():
    f = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
    p = pad_to_even(f)
    assert p.shape == (6, 8, 3)
    np.testing.assert_array_equal(p[:5, :7], f)
    np.testing.assert_array_equal(p[5, :7], f[4])
    np.testing.assert_array_equal(p[:5, 7], f[:, 6])
    assert pad_to_even(p) is p


@pytest.mark.parametrize("size", [(70, 94), (71, 35)])
def test_writer_h264_yuv420p_exact_rate_padded_size(tmp_path, size):
    w, h = size
    out = tmp_path / "out.mp4"
    frames = make_frames(7, w, h)
    with VideoWriter(out, w, h, NTSC) as writer:
        for f in frames:
            writer.write(f)
        assert not out.exists()  # only a temporary name while writing
    info = probe_video(out)
    assert (info.width, info.height) == (w + w % 2, h + h % 2)
    assert info.fps == NTSC and info.codec == "h264" and info.pix_fmt == "yuv420p"
    # imageio-ffmpeg's own reader agrees on the container's metadata.
    reader = imageio_ffmpeg.read_frames(str(out))
    meta = next(reader)
    n = sum(1 for _ in reader)
    assert n == 7 and meta["codec"] == "h264" and meta["pix_fmt"].startswith("yuv420p")
    assert meta["size"] == (w + w % 2, h + h % 2) and abs(meta["fps"] - 29.97) < 0.01
    got = list(open_frames(out))
    assert np.abs(got[4].rgb[:h, :w].astype(int) - frames[4]).mean() < 4
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # no temporary left


def test_writer_failures_leave_nothing_under_the_final_name(tmp_path):
    out = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError):
        with VideoWriter(out, 32, 24, 25) as writer:
            writer.write(np.zeros((24, 32, 3), np.uint8))
            raise RuntimeError("crash mid-video")
    assert list(tmp_path.iterdir()) == []
    out.write_bytes(b"old")
    with pytest.raises(TfcsegError, match="out.mp4: exists already"):
        VideoWriter(out, 32, 24, 25)
    with pytest.raises(TfcsegError, match="unsupported output format"):
        VideoWriter(tmp_path / "out.avi", 32, 24, 25)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(TfcsegError, match="afile/sub: cannot write there"):
        VideoWriter(tmp_path / "afile" / "sub" / "o.mp4", 32, 24, 25)
    with pytest.raises(ValueError):
        with VideoWriter(tmp_path / "o2.mp4", 32, 24, 25) as writer:
            writer.write(np.zeros((24, 31, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "out.mp4"]
    assert out.read_bytes() == b"old"


def test_parse_rate_keeps_ntsc_exact():
    assert parse_rate("29.97") == NTSC and parse_rate(23.976) == Fraction(24000, 1001)
    assert parse_rate("30000/1001") == NTSC and parse_rate("12.5") == Fraction(25, 2)
    assert parse_rate(25) == 25
    for bad in ("abc", "0", "-3", "1/0", "inf"):
        with pytest.raises(TfcsegError, match="fps"):
            parse_rate(bad)


# ---- timing, pixel aspect, audio -------------------------------------------------------------------


def test_variable_frame_rate_frames_carry_their_time_and_are_selected_by_it(tmp_path):
    # 30 frames at 30 fps, then 10 at 10 fps: frame 30 is shown at 1.0 s, frame 32 at 1.2 s.
    path = ffmpeg_clip(tmp_path / "vfr.mp4", 1.0, 30, then=(1.0, 10))
    info = probe_video(path)
    assert info.variable_rate and info.avg_fps == 20 and info.frame_count == 40
    frames = list(open_frames(path))  # timestamps in microseconds (the file's time base)
    assert len(frames) == 40 and [f.index for f in frames] == list(range(40))
    assert frames[29].time == pytest.approx(29 / 30, abs=1e-6) and frames[31].time == Fraction(11, 10)
    assert frames[0].duration == pytest.approx(1 / 30, abs=1e-6) and frames[35].duration == Fraction(1, 10)
    # What a player shows from 1.2 to 1.6 s: frames 32..35 (a constant-rate reading of the
    # nominal 30 fps would say frames 36..47).
    src = open_frames(path, start=1.2, end=1.6)
    assert [f.index for f in src] == [32, 33, 34, 35] and not src.warnings
    src = open_frames(path, start=0.9, end=1.35, stride=2)
    got = [(f.index, f.time) for f in src]
    assert [i for i, _ in got] == [27, 29, 31, 33]
    assert [t for _, t in got] == pytest.approx([0.9, 29 / 30, 1.1, 1.3], abs=1e-6)
    with pytest.raises(TfcsegError, match="no frames in the selected range"):
        open_frames(path, start=2.5)


def test_writer_keeps_variable_timing_and_pixel_aspect(tmp_path):
    src = open_frames(ffmpeg_clip(tmp_path / "vfr.mp4", 1.0, 30, then=(1.0, 10), sar="4/3"))
    info = src.info
    assert info.sar == Fraction(4, 3) and info.display_aspect == Fraction(16, 9)
    times = []
    with VideoWriter(tmp_path / "out.mp4", 64, 48, info.fps, time_base=info.time_base, sar=info.sar,
                     variable_rate=True) as writer:
        for f in src:
            writer.write(f.rgb, f.time, f.duration)
            times.append(f.time)
    assert writer.duration == 2
    out = probe_video(tmp_path / "out.mp4")
    assert out.duration == pytest.approx(2.0, abs=0.005) and out.sar == Fraction(4, 3)
    assert out.display_aspect == Fraction(16, 9) and out.variable_rate
    assert [f.time for f in open_frames(tmp_path / "out.mp4")] == times


def test_audio_copied_cut_to_the_frames_and_reencoded_only_where_needed(tmp_path):
    src_path = ffmpeg_clip(tmp_path / "tone.mov", 1.5, 30, audio="pcm_s16le")
    for name, codec in (("out.mkv", "pcm_s16le"), ("out.mp4", "aac")):  # MP4 cannot hold PCM
        src = open_frames(src_path, start=0.5, end=1.2)
        with VideoWriter(tmp_path / name, 64, 48, 30, time_base=src.info.time_base,
                         audio=AudioSource(str(src_path), codecs=src.info.audio)) as writer:
            for f in src:
                writer.write(f.rgb, f.time, f.duration)
        assert writer.start_time == Fraction(1, 2) and writer.duration == Fraction(7, 10)
        assert writer.audio_streams == 1 and not writer.warnings
        out = probe_video(tmp_path / name)
        assert out.audio == (codec,)
        assert abs(audio_seconds(tmp_path / name) - 0.7) <= 1 / 30, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mkv", "out.mp4", "tone.mov"]


def test_stale_temporaries_of_the_output_are_removed_live_ones_kept(tmp_path):
    from tfcseg.io.atomic import HOST_TAG

    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                                  capture_output=True, text=True, check=True).stdout)
    dead = tmp_path / f".o.mp4.{HOST_TAG}-{dead_pid}-abcd1234.tmp.mp4"  # a killed run's
    live = tmp_path / f".o.mp4.{HOST_TAG}-1-abcd1234.tmp.mp4"  # pid 1 is alive
    elsewhere = tmp_path / f".o.mp4.{'0' * 6 if HOST_TAG != '0' * 6 else '1' * 6}-{dead_pid}-ab.tmp.mp4"
    other = tmp_path / f".other.mp4.{HOST_TAG}-{dead_pid}-abcd1234.tmp.mp4"  # another output's
    for p in (dead, live, elsewhere, other):
        p.write_bytes(b"half a video")
    with VideoWriter(tmp_path / "o.mp4", 32, 24, 25) as writer:
        writer.write(np.zeros((24, 32, 3), np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, elsewhere.name, other.name, "o.mp4"])


def test_rotation_applied_to_the_frames(tmp_path):
    plain = [f.rgb for f in open_frames(ffmpeg_clip(tmp_path / "p.mp4", 0.2))]
    src = open_frames(ffmpeg_clip(tmp_path / "r.mp4", 0.2, rotate=90))
    assert (src.info.width, src.info.height) == (48, 64)
    rotated = [f.rgb for f in src]
    # display_rotation 90 is counter-clockwise
    assert np.abs(rotated[0].astype(int) - np.rot90(plain[0]).astype(int)).mean() < 3


# ---- sources by name: streams, cameras, many videos ---------------------------------------------------


def test_stream_and_camera_names(tmp_path, monkeypatch):
    assert is_stream("rtsp://cam.local:554/stream1") and is_stream("https://example.com/a.mp4")
    assert is_stream("/dev/video0") and is_stream("2") and not is_stream("clip.mp4")
    assert camera_input("/dev/video3") == (("-f", "v4l2"), "/dev/video3")
    monkeypatch.setattr("sys.platform", "linux")
    assert camera_input("1") == (("-f", "v4l2"), "/dev/video1")
    monkeypatch.setattr("sys.platform", "darwin")
    assert camera_input("1") == (("-f", "avfoundation"), "1")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "7").write_bytes(b"")
    assert camera_input("7") is None  # a file of that name is a file
    assert camera_input("clip.mp4") is None


def test_expand_sources_folders_and_globs_of_videos(tmp_path):
    videos = tmp_path / "clips"
    videos.mkdir()
    for name in ("b.mp4", "a10.mkv", "a2.mov"):
        (videos / name).write_bytes(b"x")
    (videos / "notes.txt").write_text("not a video")
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "0001.png").write_bytes(b"x")
    assert expand_sources(videos) == [str(videos / n) for n in ("a2.mov", "a10.mkv", "b.mp4")]
    assert expand_sources(str(videos / "*.mp4")) == [str(videos / "b.mp4")]
    assert expand_sources([str(frames), "rtsp://h/s", str(videos / "b.mp4")]) == [
        str(frames), "rtsp://h/s", str(videos / "b.mp4")]
    (videos / "0001.png").write_bytes(b"x")
    with pytest.raises(TfcsegError, match="both videos and image frames"):
        expand_sources(videos)


def test_url_source_realtime_drops_frames_to_keep_up(tmp_path):
    ffmpeg_clip(tmp_path / "clip.mp4", 1.0, 30, audio="aac")
    with http_server(tmp_path) as base:
        src = open_frames(f"{base}/clip.mp4")
        assert src.info.kind == "stream" and src.info.name == "clip" and not src.info.live
        assert src.info.audio == ("aac",) and src.expected == 30
        assert len(list(src)) == 30 and not src.warnings
        # --realtime: the file comes at its own pace (1 s); a consumer at 5 frames/s misses most.
        src = open_frames(f"{base}/clip.mp4", realtime=True)
        got = []
        for f in src:
            got.append(f)
            time.sleep(0.2)
        assert src.dropped > 0 and len(got) + src.dropped == 30
        assert all(a.time < b.time for a, b in zip(got, got[1:])) and got[-1].index == 29


def test_live_stream_of_unknown_length_read_to_its_end(tmp_path):
    ffmpeg_clip(tmp_path / "live.ts", 1.0, 30, audio="aac", fmt="mpegts")
    with http_server(tmp_path, live=tmp_path / "live.ts", seconds=1.0) as base:
        with open_frames(f"{base}/live", capture_audio=True) as src:
            assert src.info.live and src.expected is None and src.audio_capture is not None
            frames = list(src)
            capture = src.audio_capture
            assert 0.9 < audio_seconds(capture) < 1.1  # the audio, saved while reading
        assert not capture.exists()  # removed with the source
    assert len(frames) == 30 and not src.warnings and src.lost == 0


def test_encoder_failure_names_the_os_error_anywhere_in_its_log(tmp_path):
    from tfcseg.io.video import VideoWriter

    writer = VideoWriter(tmp_path / "out.mp4", fps=25, width=64, height=48)
    writer._tmp = tmp_path / "x.tmp.mp4"
    writer._stderr.extend(["av_interleaved_write_frame(): No space left on device",
                           "Nothing was written into output file, because at least one of its streams "
                           "received no packets."])
    assert writer._error() == "the disk is full (no space left on device)"
    writer._stderr.clear()
    writer._stderr.append("Conversion failed!")
    assert writer._error() == "Conversion failed!"
