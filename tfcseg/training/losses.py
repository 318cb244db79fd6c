"""TFC's training loss (the paper's section 3.3): L = L_seg + L_bce.

- L_seg: cross-entropy of every frame of a clip (keyframe and non-keyframes), logits
  upsampled bilinearly (align_corners=False) to the label size, label 255 ignored. Each
  frame's loss is the mean over its valid pixels; L_seg is the mean over the frames that
  have any valid pixel, so every frame of the clip weighs the same. Two variants for small
  data where small classes are rare (`SEG_LOSSES`): "ohem" averages only the hardest
  `OHEM_SHARE` of each frame's valid pixels (online hard example mining); "balanced" weighs
  each pixel by its class weight (`class_weights`: inverse square root of the class's pixel
  share, normalised to a pixel-weighted mean of 1).
- L_bce: focal-style binary cross-entropy (gamma = 1) between ŵ = clamp(w, 0, 1), the raw
  cosine similarity of a non-keyframe to its keyframe on the 1/4 map, and the mask
  "the label at this point is the same in the keyframe and in frame t". Labels are brought
  to the 1/4 map by nearest-neighbour resizing; a point ignored (255) in either frame is
  excluded. Mean over the valid points of the whole batch.

Note the paper's clamp: where w < 0 the loss has no gradient (ŵ is 0 there whatever w is).

An addition of tfcseg's (weight 0 = the paper's loss): L_cons, the temporal consistency of a
clip's predictions, which mVC scores. For each pair of consecutive frames (t-1, t), at the
points of the 1/4 map whose label is the same in both (neither ignored), the total-variation
distance 1/2 |p_t - p_{t-1}|_1 between the two class distributions (softmax of the logits),
averaged over those points of the whole batch. It asks the predictions to change only where
the labels do (on a video-rate clip, where things move).

A second addition (weight 0 = off), for training sparse MSDA on a frozen SegFormer
(`train_only` "tfc"): L_distill, the KL divergence KL(p_seg || p_tfc) from per-frame
SegFormer's class distribution on a non-keyframe (the teacher: stages 3-4 run on that frame) to
TFC's, averaged over the points MSDA updates (raw cosine w < `msda_threshold`) of the whole
batch. It needs no labels, and it asks MSDA for what the full model would have computed at
exactly the points where TFC reuses stale features: on CamVid val, giving those points per-frame
SegFormer's logits would close most of TFC's gap to it (weights/README.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..data.masks import IGNORE_INDEX
# ŵ is clamped into [EPS, 1 - EPS] inside the logarithms only, so that log(0) never occurs.
EPS = 1e-6
# ŵ >= this counts as the prediction "same label" for the similarity's binary accuracy.
SIMILARITY_THRESHOLD = 0.5
SEG_LOSSES = ("ce", "ohem", "balanced")
OHEM_SHARE = 0.25  # "ohem": the hardest quarter of a frame's valid pixels


def class_weights(pixel_counts: torch.Tensor) -> torch.Tensor:
    """Per-class weights [K] from the training labels' pixel counts [K]: (share)^-1/2, scaled
    so that the mean weight over all pixels is 1 (absent classes get the largest weight)."""
    counts = pixel_counts.double().clamp_min(1.0)
    share = counts / counts.sum()
    w = share.rsqrt()
    return (w / (w * share).sum()).float()


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str = "ce",
                      weights: torch.Tensor | None = None) -> torch.Tensor:
    """L_seg for clip logits [B, T, K, h, w] (any h, w) and labels [B, T, H, W] (255 = ignore);
    `kind` one of SEG_LOSSES (`weights` [K] for "balanced")."""
    b, t, k = logits.shape[:3]
    size = labels.shape[-2:]
    up = F.interpolate(logits.reshape(b * t, k, *logits.shape[-2:]).float(), size=size,
                       mode="bilinear", align_corners=False)  # [B*T, K, H, W]
    flat = labels.reshape(b * t, *size)
    per_pixel = F.cross_entropy(up, flat, ignore_index=IGNORE_INDEX, reduction="none")  # [B*T, H, W]
    # Per frame of the clip (batch pooled): [T]
    per_pixel = per_pixel.view(b, t, -1)
    valid = (flat != IGNORE_INDEX).view(b, t, -1)
    if kind == "balanced":
        if weights is None:
            raise ValueError("the balanced loss needs class weights")
        per_pixel = per_pixel * weights.to(per_pixel.device)[flat.clamp(max=k - 1)].view(b, t, -1)
    elif kind == "ohem":
        # keep the hardest OHEM_SHARE of each frame's valid pixels (ignored pixels lose 0)
        n = per_pixel.shape[-1]
        keep = max(1, int(n * OHEM_SHARE))
        hard = per_pixel.masked_fill(~valid, -1.0).topk(keep, dim=-1).values  # [B, T, keep]
        hard_valid = hard >= 0
        counts = hard_valid.sum(dim=(0, 2))
        frame_loss = (hard * hard_valid).sum(dim=(0, 2)) / counts.clamp(min=1)
        has = counts > 0
        if not bool(has.any()):
            return logits.sum() * 0.0
        return frame_loss[has].mean()
    elif kind != "ce":
        raise ValueError(f"unknown segmentation loss {kind!r} (one of {', '.join(SEG_LOSSES)})")
    counts = valid.sum(dim=(0, 2))
    frame_loss = per_pixel.sum(dim=(0, 2)) / counts.clamp(min=1)
    has = counts > 0
    if not bool(has.any()):
        return logits.sum() * 0.0  # nothing labelled: a zero that keeps the graph
    return frame_loss[has].mean()


def labels_to_map(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of labels [..., H, W] to [..., h, w] (PyTorch's `nearest`)."""
    lead = labels.shape[:-2]
    flat = labels.reshape(-1, 1, *labels.shape[-2:]).float()
    out = F.interpolate(flat, size=tuple(size), mode="nearest")
    return out.to(labels.dtype).reshape(*lead, *size)


def similarity_target(labels: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(target, valid), each [B, T-1, h, w] bool, for clip labels [B, T, H, W].

    target: the label at the point is the same in frame 0 (keyframe) and frame t.
    valid: neither frame ignores the point.
    """
    small = labels_to_map(labels, size)  # [B, T, h, w]
    key, rest = small[:, :1], small[:, 1:]
    valid = (key != IGNORE_INDEX) & (rest != IGNORE_INDEX)
    return key == rest, valid


def focal_bce(prob: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
              gamma: float = 1.0) -> torch.Tensor:
    """Mean over valid points of -[y (1-p)^g log p + (1-y) p^g log(1-p)] (p = probabilities)."""
    p = prob.float()
    y = target.float()
    log_p = torch.log(p.clamp(EPS, 1.0 - EPS))
    log_q = torch.log((1.0 - p).clamp(EPS, 1.0 - EPS))
    loss = -(y * (1.0 - p).pow(gamma) * log_p + (1.0 - y) * p.pow(gamma) * log_q)
    if valid is None:
        return loss.mean()
    n = valid.sum()
    if int(n) == 0:
        return prob.sum() * 0.0
    return (loss * valid).sum() / n


def consistency_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_cons for clip logits [B, T, K, h, w] and labels [B, T, H, W] (see the module
    docstring); 0 (with the graph kept) when no point qualifies or T = 1."""
    if logits.shape[1] < 2:
        return logits.sum() * 0.0
    small = labels_to_map(labels, tuple(logits.shape[-2:]))  # [B, T, h, w]
    same = (small[:, 1:] == small[:, :-1]) & (small[:, 1:] != IGNORE_INDEX)  # [B, T-1, h, w]
    n = same.sum()
    if int(n) == 0:
        return logits.sum() * 0.0
    p = logits.float().softmax(2)
    tv = 0.5 * (p[:, 1:] - p[:, :-1]).abs().sum(2)  # [B, T-1, h, w]
    return (tv * same).sum() / n


def similarity_loss(similarity: torch.Tensor, labels: torch.Tensor, gamma: float = 1.0) -> torch.Tensor:
    """L_bce for raw cosine similarity [B, T-1, h, w] and clip labels [B, T, H, W]."""
    target, valid = similarity_target(labels, tuple(similarity.shape[-2:]))
    return focal_bce(similarity.clamp(0.0, 1.0), target, valid, gamma)


def distillation_loss(logits: torch.Tensor, teacher: torch.Tensor, select: torch.Tensor) -> torch.Tensor:
    """L_distill: mean KL(softmax(teacher) || softmax(logits)) over the points where `select`.

    logits, teacher [N, K, h, w] (teacher without gradients), select [N, h, w] bool; 0 (with
    the graph kept) when no point is selected."""
    n = select.sum()
    if int(n) == 0:
        return logits.sum() * 0.0
    log_p = logits.float().log_softmax(1)
    log_q = teacher.float().log_softmax(1)
    kl = (log_q.exp() * (log_q - log_p)).sum(1)  # [N, h, w]
    return (kl * select).sum() / n


@dataclass
class LossParts:
    """One step's loss and its parts; `total` keeps the graph, the rest are detached floats'
    tensors (0-dim). `sim_correct`/`sim_valid`/`sim_same` count points of the 1/4 map for the
    similarity's binary accuracy (ŵ >= 0.5 predicts "same label") and its majority rate."""

    total: torch.Tensor
    seg: torch.Tensor
    bce: torch.Tensor
    sim_correct: torch.Tensor
    sim_valid: torch.Tensor
    sim_same: torch.Tensor
    consistency: torch.Tensor  # L_cons (computed, and logged, whatever its weight)
    distill: torch.Tensor | None = None  # L_distill, when a teacher was given


def tfc_loss(logits: torch.Tensor, similarity: torch.Tensor, labels: torch.Tensor,
             bce_weight: float = 1.0, gamma: float = 1.0, seg_kind: str = "ce",
             weights: torch.Tensor | None = None, consistency_weight: float = 0.0,
             teacher: torch.Tensor | None = None, distill_weight: float = 0.0,
             msda_threshold: float = 0.0) -> LossParts:
    """L = L_seg + bce_weight * L_bce + consistency_weight * L_cons + distill_weight *
    L_distill for one clip batch (the paper: bce_weight 1, no L_cons, no L_distill).

    logits [B, T, K, h, w], similarity [B, T-1, h, w] (raw cosine), labels [B, T, H, W];
    teacher [B, T-1, K, h, w] (per-frame SegFormer's logits of frames 1..T-1) for L_distill over
    the points with similarity < msda_threshold. A clip of one frame (T = 1) has no similarity
    term.
    """
    seg = segmentation_loss(logits, labels, seg_kind, weights)
    if similarity.shape[1] == 0:
        zero = seg.new_zeros(())
        return LossParts(seg, seg.detach(), zero, zero, zero, zero, zero)
    if consistency_weight:
        cons = consistency_loss(logits, labels)
    else:  # only logged: no graph
        with torch.no_grad():
            cons = consistency_loss(logits, labels)
    target, valid = similarity_target(labels, tuple(similarity.shape[-2:]))
    w_hat = similarity.float().clamp(0.0, 1.0)
    bce = focal_bce(w_hat, target, valid, gamma)
    with torch.no_grad():
        pred = w_hat >= SIMILARITY_THRESHOLD
        correct = ((pred == target) & valid).sum().float()
        n_valid = valid.sum().float()
        same = (target & valid).sum().float()
    total = seg + bce_weight * bce
    if consistency_weight:
        total = total + consistency_weight * cons
    distill = None
    if teacher is not None:
        select = (similarity < msda_threshold).flatten(0, 1)  # [B*(T-1), h, w]
        distill = distillation_loss(logits[:, 1:].flatten(0, 1), teacher.flatten(0, 1), select)
        if distill_weight:
            total = total + distill_weight * distill
        distill = distill.detach()
    return LossParts(total, seg.detach(), bce.detach(), correct, n_valid, same, cons.detach(), distill)
