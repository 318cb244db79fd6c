"""Logits -> label maps at full resolution, exactly and cheaply.

SegFormer's labels are argmax(bilinear_upsample(logits)). Each output pixel's logits are a
convex combination of its 4 source neighbours' logits, so where those 4 neighbours share
the same argmax c, c is also the argmax of the blend (every term of
sum_i w_i (l_i[c] - l_i[j]) is >= 0). Only the pixels whose neighbours disagree (class
boundaries) need interpolated logits. The result equals the plain path up to exact ties.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import check_hysteresis_power, check_margin


# Above this share of mixed low-res cells, full interpolation is cheaper than gathering.
MAX_MIXED_SHARE = 0.25


def _source_coords(out: int, inp: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PyTorch's bilinear (align_corners=False, size given) source indices and weight.

    Returns i0 [out], i1 [out] (long) and the weight of i1, lam [out] (float32).
    """
    scale = inp / out
    src = ((torch.arange(out, device=device, dtype=torch.float32) + 0.5) * scale - 0.5).clamp_(min=0)
    i0 = src.floor().long().clamp_(max=inp - 1)
    i1 = (i0 + 1).clamp_(max=inp - 1)
    return i0, i1, src - i0


def labels_from_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """argmax over classes of `logits` [B, K, h, w] bilinearly resized to `size` -> [B, H, W]
    labels, uint8 when K <= 256 (else int64).

    Equal to `F.interpolate(logits, size, mode="bilinear").argmax(1)` up to exact ties,
    at a fraction of the cost: the K-channel interpolation runs only on boundary pixels, and
    the full-size maps are bytes. Channels-last logits (the model's) need no copy.
    """
    b, k, h, w = logits.shape
    out_h, out_w = size
    low = logits.argmax(1)  # [B, h, w] int64
    small = low.to(torch.uint8) if k <= 256 else low
    if (out_h, out_w) == (h, w):
        return small
    dev = logits.device
    y0, y1, ly = _source_coords(out_h, h, dev)
    x0, x1, lx = _source_coords(out_w, w, dev)
    # A low-res cell (i, j) is mixed when the labels of (i, j), (i, j+1), (i+1, j), (i+1, j+1)
    # (indices clamped at the border, as bilinear does) are not all equal.
    right = torch.cat([small[:, :, 1:], small[:, :, -1:]], 2)
    below = torch.cat([small[:, 1:], small[:, -1:]], 1)
    diag = torch.cat([right[:, 1:], right[:, -1:]], 1)
    mixed = (small != right) | (small != below) | (small != diag)  # [B, h, w]
    if mixed.float().mean() > MAX_MIXED_SHARE:  # boundaries everywhere: the plain path is cheaper
        plain = labels_from_logits_plain(logits, size)
        return plain.to(torch.uint8) if k <= 256 else plain
    # Every output pixel's source cell is (y0, x0): take its label and mixed flag.
    labels = small.index_select(1, y0).index_select(2, x0)  # [B, H, W]
    boundary = mixed.index_select(1, y0).index_select(2, x0)
    bi, yi, xi = boundary.nonzero(as_tuple=True)
    if bi.numel():
        table = logits.permute(0, 2, 3, 1).reshape(b * h * w, k)  # [B*h*w, K]; free if channels-last
        base = bi * (h * w)
        r0, r1 = base + y0[yi] * w, base + y1[yi] * w
        c0, c1 = x0[xi], x1[xi]
        wy, wx = ly[yi, None].to(logits.dtype), lx[xi, None].to(logits.dtype)
        top = torch.lerp(table.index_select(0, r0 + c0), table.index_select(0, r0 + c1), wx)
        bot = torch.lerp(table.index_select(0, r1 + c0), table.index_select(0, r1 + c1), wx)
        labels[bi, yi, xi] = torch.lerp(top, bot, wy).argmax(-1).to(labels.dtype)
    return labels


def labels_from_logits_plain(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The reference: full K-channel bilinear upsampling, then argmax."""
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False).argmax(1)


class LabelHysteresis:
    """Temporal label hysteresis: a pixel keeps the label it had in the previous frame unless
    another class beats that label by more than `margin` (in logits).

    Per frame, the previous frame's labels at the 1/4 map (what the logits are) get `margin`
    added to their logit before the argmax and the upsampling, so a label changes only where
    the new evidence is decisive, and near-ties (which flip back and forth between frames,
    what makes an overlay boil) hold still. Labels are held per video: `reset()` at a new
    video, and a frame of another size starts afresh. Not part of TFC: it works the same on
    per-frame SegFormer.

    Motion: with `power` q = 0 the margin is the same everywhere, and a boundary that moves
    keeps its old side until the new class leads by `margin`, so too large a margin lags moving
    objects. With q > 0 (motion-aware, tfcseg's addition) the margin at a point is
    margin * clamp(s, 0, 1)^q, where s [h4, w4] is the cosine similarity of the frame's
    features to the previous frame's at that point (given with each frame, `needs_similarity`):
    labels are held where the picture stayed the same (s near 1) and follow the model where
    it changed. `tfcseg eval` measures the trade: mIoU against mVC and flicker.
    """

    def __init__(self, margin: float, power: float = 0.0) -> None:
        self.margin = float(check_margin(margin, "hysteresis"))
        self.power = float(check_hysteresis_power(power))
        self._held: torch.Tensor | None = None  # [h4, w4] long: the previous frame's labels

    @property
    def power_in_use(self) -> float:
        """The motion-aware power that applies: `power`, or 0 when hysteresis is off."""
        return self.power if self.margin > 0 else 0.0

    @property
    def needs_similarity(self) -> bool:
        """Whether each frame's call needs its similarity to the previous frame."""
        return self.power_in_use > 0

    def reset(self) -> None:
        self._held = None

    @property
    def holding(self) -> bool:
        """Whether labels are held (the next frame's margin applies)."""
        return self._held is not None

    def __call__(self, logits: torch.Tensor, similarity: torch.Tensor | None = None) -> torch.Tensor:
        """logits [1, K, h4, w4] -> the same with the held labels' logits raised by the margin
        (a new tensor; `logits` is left alone). The result's argmax becomes the held labels.
        `similarity` [h4, w4] (or [1, h4, w4]): the frame's similarity to the previous frame,
        needed when `needs_similarity` and labels are held."""
        if self.margin == 0:
            return logits
        if logits.shape[0] != 1:
            raise ValueError(f"label hysteresis runs on one frame at a time, not {logits.shape[0]}")
        held = self._held
        if held is not None and tuple(held.shape) == tuple(logits.shape[-2:]) and held.device == logits.device:
            if self.power > 0:
                if similarity is None:
                    raise ValueError("motion-aware hysteresis (power > 0) needs the frame's similarity to the "
                                     "previous frame")
                sim = similarity.reshape(held.shape).to(logits.device, logits.dtype)
                margin = sim.clamp(0.0, 1.0).pow(self.power).mul_(self.margin)[None, None]
            else:
                margin = logits.new_full((1, 1, *held.shape), self.margin)
            # a copy in the same memory layout (the model's logits are channels-last, which
            # labels_from_logits reads fastest), raised in place
            logits = logits.clone()
            logits.scatter_add_(1, held[None, None], margin)
        self._held = logits[0].argmax(0)
        return logits
