"""Video-rate training clips made from one labelled frame: the frames that would follow it in
15-30 fps street video, made by warping it (and its labels, with the same map).

Why: CamVid's training labels are 1 s apart, so a real training clip shows a second of
motion, while the model runs on video where consecutive frames differ by a few pixels. TFC's
similarity and sparse MSDA learn what a keyframe-to-frame change looks like; trained only on
1 s gaps, they see every point as changed. These clips show them video-rate changes.

The motion model (per clip, drawn once; frame t of the clip is the keyframe moved t * g video
frames, with the gap g drawn from 1..`max_gap`, so that a clip of 2 frames shows the gaps a
keyframe interval of up to `max_gap` + 1 has at inference):
- forward ego-motion: a zoom about the focus of expansion, a point near the horizon
  (x within 12% of the centre, y at 35-50% of the height), by a factor 1 + s per frame with
  s in [0, `max_zoom`] (0.5-2.5% a frame is a car at 30-50 km/h seeing a scene 15-25 m away
  at 15-30 fps: the expansion is small near the focus and largest at the frame edges);
- camera rotation: pan and tilt as image shifts of up to `max_pan` x W and `max_pan` / 2 x H
  a frame, roll up to `max_roll` degrees a frame;
- small translations (hand-held or vehicle shake): up to `max_shake` pixels a frame,
  drawn anew each frame (not accumulated);
- independent motion of objects: with probability `object_prob`, up to 3 connected segments
  of the label map (between 0.2% and 8% of the frame) move by their own shift of up to
  `max_object` pixels a frame on top of the camera motion;
- photometry: brightness and contrast drift (a random walk of up to 3 levels and 2% a frame),
  Gaussian blur (sigma up to 0.8 px) and sensor noise (sigma up to 2.5 levels) per frame.

Image and labels go through the same geometric map: bilinear for the image, nearest for the
labels; where the map leaves the frame the image repeats its border and the label is 255
(ignored). The result is a pure function of the generator's state.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .masks import IGNORE_INDEX


@dataclass(frozen=True)
class MotionModel:
    """Per-frame motion ranges (see the module docstring); defaults are 15-30 fps street video."""

    max_zoom: float = 0.025
    max_pan: float = 0.012
    max_roll: float = 0.3
    max_shake: float = 1.5
    object_prob: float = 0.5
    max_object: float = 3.0
    max_blur: float = 0.8
    max_noise: float = 2.5
    max_gap: int = 3


@dataclass(frozen=True)
class ClipMotion:
    """One clip's motion, drawn by `sample_clip_motion` (units: pixels of the source frame)."""

    focus: tuple[float, float]  # (x, y) focus of expansion
    zoom: float  # scale increase per frame
    shift: tuple[float, float]  # (dx, dy) pan/tilt per frame
    roll: float  # degrees per frame
    shakes: tuple[tuple[float, float], ...]  # per frame t = 1..T-1: extra (dx, dy)
    objects: tuple[tuple[np.ndarray, tuple[float, float]], ...]  # (mask [H, W] bool, (dx, dy) per frame)
    light: tuple[tuple[float, float], ...]  # per frame t = 1..T-1: (brightness, contrast)
    blur: tuple[float, ...]  # per frame: Gaussian sigma (0 = none)
    noise: tuple[float, ...]  # per frame: noise sigma


def _segments(labels: np.ndarray, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """Up to `count` connected segments of one class each, of 0.2-8% of the frame."""
    h, w = labels.shape
    lo, hi = 0.002 * h * w, 0.08 * h * w
    found: list[np.ndarray] = []
    classes = [c for c in np.unique(labels) if c != IGNORE_INDEX]
    rng.shuffle(classes)
    for c in classes:
        n, comp, stats, _ = cv2.connectedComponentsWithStats((labels == c).astype(np.uint8), connectivity=8)
        ok = [i for i in range(1, n) if lo <= stats[i, cv2.CC_STAT_AREA] <= hi]
        if ok:
            found.append(comp == ok[int(rng.integers(len(ok)))])
        if len(found) == count:
            break
    return found


def sample_clip_motion(rng: np.random.Generator, labels: np.ndarray, length: int,
                       model: MotionModel = MotionModel()) -> ClipMotion:
    """The motion of a clip of `length` frames (frame 0 the source) for a frame with `labels`."""
    h, w = labels.shape
    focus = (w * (0.5 + rng.uniform(-0.12, 0.12)), h * rng.uniform(0.35, 0.5))
    zoom = float(rng.uniform(0.0, model.max_zoom))
    shift = (float(rng.uniform(-1, 1) * model.max_pan * w), float(rng.uniform(-1, 1) * model.max_pan * h / 2))
    roll = float(rng.uniform(-1, 1) * model.max_roll)
    steps = max(length - 1, 0)
    shakes = tuple((float(rng.uniform(-1, 1) * model.max_shake), float(rng.uniform(-1, 1) * model.max_shake))
                   for _ in range(steps))
    objects = []
    if rng.random() < model.object_prob:
        for mask in _segments(labels, rng, int(rng.integers(1, 4))):
            objects.append((mask, (float(rng.uniform(-1, 1) * model.max_object),
                                   float(rng.uniform(-1, 1) * model.max_object) / 2)))
    light, b, c = [], 0.0, 1.0
    for _ in range(steps):
        b = float(np.clip(b + rng.uniform(-3, 3), -12, 12))
        c = float(np.clip(c + rng.uniform(-0.02, 0.02), 0.9, 1.1))
        light.append((b, c))
    blur = tuple(float(rng.uniform(0, model.max_blur)) if rng.random() < 0.5 else 0.0 for _ in range(steps))
    noise = tuple(float(rng.uniform(0, model.max_noise)) for _ in range(steps))
    return ClipMotion(focus, zoom, shift, roll, shakes, tuple(objects), tuple(light), blur, noise)


def camera_map(motion: ClipMotion, t: int) -> np.ndarray:
    """The 2x3 affine map (source pixel -> frame t pixel) of the camera after t steps."""
    fx, fy = motion.focus
    scale = (1.0 + motion.zoom) ** t
    m = cv2.getRotationMatrix2D((fx, fy), motion.roll * t, scale)  # zoom and roll about the focus
    dx, dy = motion.shift
    sx, sy = motion.shakes[t - 1] if t else (0.0, 0.0)  # shake: this frame's own, not accumulated
    m[0, 2] += dx * t + sx
    m[1, 2] += dy * t + sy
    return m


def _warp(image: np.ndarray, labels: np.ndarray, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h, w = labels.shape
    img = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    lab = cv2.warpAffine(labels, m, (w, h), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=IGNORE_INDEX)
    return img, lab


def render_frame(image: np.ndarray, labels: np.ndarray, motion: ClipMotion, t: int,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frame t of the clip (t = 0: the source itself): image uint8 [H, W, 3], labels uint8 [H, W]."""
    if t == 0:
        return image, labels
    cam = camera_map(motion, t)
    img, lab = _warp(image, labels, cam)
    for mask, (ox, oy) in motion.objects:
        # the object moves by its own shift, then with the camera; pasted over the background
        own = cam.copy()
        own[:, 2] += cam[:, :2] @ np.array([ox * t, oy * t])
        obj_img, obj_lab = _warp(image, labels, own)
        inside = cv2.warpAffine(mask.astype(np.uint8), own, (lab.shape[1], lab.shape[0]),
                                flags=cv2.INTER_NEAREST, borderValue=0).astype(bool)
        img[inside] = obj_img[inside]
        lab[inside] = obj_lab[inside]
    out = img.astype(np.float32)
    sigma = motion.blur[t - 1]
    if sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    b, c = motion.light[t - 1]
    out = (out - 128.0) * c + 128.0 + b
    if motion.noise[t - 1] > 0:
        noise_rng = np.random.default_rng([seed, t])
        out += noise_rng.normal(0.0, motion.noise[t - 1], out.shape).astype(np.float32)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), lab


def video_rate_clip(rng: np.random.Generator, image: np.ndarray, labels: np.ndarray, length: int,
                    model: MotionModel = MotionModel()) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """`length` frames (images, labels) starting with the source frame and following it at
    video rate, every g-th video frame (g drawn from 1..max_gap; see the module docstring).
    labels: remapped labels (0..K-1, 255 ignored)."""
    gap = int(rng.integers(1, max(model.max_gap, 1) + 1))
    motion = sample_clip_motion(rng, labels, (length - 1) * gap + 1, model)
    seed = int(rng.integers(2**31))
    frames = [render_frame(image, labels, motion, t * gap, seed) for t in range(length)]
    return [f[0] for f in frames], [f[1] for f in frames]


def mean_displacement(motion: ClipMotion, size: tuple[int, int], t: int = 1) -> float:
    """Mean camera displacement in pixels between frame 0 and frame t over a frame of `size`
    (H, W): what the motion model means in pixels (documentation and tests)."""
    h, w = size
    ys, xs = np.mgrid[0:h:8, 0:w:8]
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)], 0).astype(np.float64)
    moved = camera_map(motion, t) @ pts
    return float(np.mean(np.hypot(*(moved - pts[:2]))))


__all__ = ["MotionModel", "ClipMotion", "sample_clip_motion", "camera_map", "render_frame",
           "video_rate_clip", "mean_displacement"]
