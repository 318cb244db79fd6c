"""SegFormer's all-MLP decoder, with its parts reachable one by one.

Plain form (training, and the reference):
    x̂^l = resize(P_l x^l + b_l) to the 1/4 map         `project(l, x)` + `upsample`
    z   = ReLU(BN(W_fuse [x̂^4, x̂^3, x̂^2, x̂^1]))    `fuse`          (z: [B, D, H/4, W/4])
    logits = classifier(dropout(z))                      `classify`

Folded form (eval only, exact up to float rounding): linear_fuse and bilinear resize are
linear and resize keeps constants, so with A_l = s * W_fuse,l P_l, c_l = s * W_fuse,l b_l
(s, t the eval-mode BN scale and shift)
    z = ReLU(base + A_1 x^1 + A_2 resize(x^2)),  base = resize(A_3 x^3) + resize(A_4 x^4 + c)
with c = sum_l c_l + t. Levels 3-4 are mapped to D channels at their own (small) resolution
and resized; level 2 is resized at its C_2 channels (cheaper than resizing D) and joins level
1 in the per-point map at 1/4. A TFC non-keyframe reuses its keyframe's `base` unchanged.

The folded head works on *token* maps [B*h*w, C] (one row per point of the 1/4 map, the
memory of a channels-last image): the D-wide z exists only a chunk of rows at a time, in a
buffer that stays in cache, and goes straight into the classifier. `tokens`/`to_image`
convert between token rows and [B, C, h, w] views without copying.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize, align_corners=False (SegFormer's choice); identity at the same size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class AllMLPDecoder(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d = cfg.decoder_dim
        self.dim = d
        self.linear_c = nn.ModuleList(nn.Linear(c, d) for c in cfg.hidden_sizes)  # P_l, b_l
        self.linear_fuse = nn.Conv2d(4 * d, d, 1, bias=False)  # input order [c4, c3, c2, c1]
        self.batch_norm = nn.BatchNorm2d(d)
        self.dropout = nn.Dropout2d(cfg.classifier_dropout)
        self.classifier = nn.Conv2d(d, cfg.num_classes, 1)
        # cache: (key of the weights it was built from, {dtype: FoldedHead}); see `folded`
        self._folded: tuple[tuple, dict[torch.dtype, FoldedHead]] | None = None

    # ---- plain parts ------------------------------------------------------------------
    def project(self, level: int, x: torch.Tensor) -> torch.Tensor:
        """P_l x + b_l at the level's own resolution: [B, C_l, h, w] -> [B, D, h, w] (l = 1..4)."""
        lin = self.linear_c[level - 1]
        return F.conv2d(x, lin.weight[:, :, None, None], lin.bias)

    def fuse(self, projected: list[torch.Tensor]) -> torch.Tensor:
        """z from the four x̂^l (already at the 1/4 size, levels 1..4 in order): [B, D, H/4, W/4]."""
        z = self.linear_fuse(torch.cat(projected[::-1], dim=1))
        return F.relu(self.batch_norm(z))

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """Logits [B, K, H/4, W/4] from z (dropout acts only in training)."""
        return self.classifier(self.dropout(z))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Logits [B, K, H/4, W/4] from the four encoder maps: the folded form in eval mode
        without autograd (a channels-last view), else the plain form (gradients reach every
        weight; BatchNorm uses its running statistics in eval mode)."""
        if not self.training and not torch.is_grad_enabled():
            return self.eval_logits(feats)
        size = feats[0].shape[-2:]
        return self.classify(self.fuse([resize(self.project(l + 1, f), size)
                                        for l, f in enumerate(feats)]))

    # ---- folded parts (eval) ------------------------------------------------------------
    def _fold_key(self) -> tuple:
        """Changes whenever an input of the folded weights changes (see `tensor_key`)."""
        bn = self.batch_norm
        tensors = [bn.weight, bn.bias, bn.running_mean, bn.running_var, self.linear_fuse.weight,
                   self.classifier.weight, self.classifier.bias]
        tensors += [p for lin in self.linear_c for p in (lin.weight, lin.bias)]
        return tuple(map(tensor_key, tensors))

    def folded(self, dtype: torch.dtype | None = None) -> FoldedHead:
        """The folded weights (see `FoldedHead`) in `dtype` (default: the weights' own),
        built in fp32 outside autocast and cached until a weight changes."""
        key = self._fold_key()
        if self._folded is None or self._folded[0] != key:
            # plain tensors even when first called under inference_mode, so that a later
            # call with autograd on can use them
            with torch.inference_mode(False), torch.no_grad(), \
                    torch.autocast(self.linear_fuse.weight.device.type, enabled=False):
                bn = self.batch_norm
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # s
                shift = bn.bias - bn.running_mean * scale  # t
                w_fuse = self.linear_fuse.weight[:, :, 0, 0]  # [D, 4D]
                mats, bias = [], shift.clone()
                for l, lin in enumerate(self.linear_c):
                    slot = 3 - l  # concat order is [c4, c3, c2, c1]
                    w_l = w_fuse[:, slot * self.dim:(slot + 1) * self.dim] * scale[:, None]
                    mats.append((w_l @ lin.weight).t().contiguous())  # A_l^T [C_l, D]
                    bias = bias + w_l @ lin.bias
                head = FoldedHead(a1t=mats[0], a2t=mats[1], a3t=mats[2], a4t=mats[3], bias=bias,
                                  cls_t=self.classifier.weight[:, :, 0, 0].t().contiguous(),
                                  cls_b=self.classifier.bias.detach().clone())
            self._folded = (key, {head.a1t.dtype: head})
        cache = self._folded[1]
        dtype = dtype or self.linear_fuse.weight.dtype
        if dtype not in cache:
            with torch.inference_mode(False), torch.no_grad():
                cache[dtype] = next(iter(cache.values())).to(dtype)
        return cache[dtype]

    # The folded head runs outside autocast, in one explicit dtype (`head_dtype`): its
    # matmuls write into preallocated buffers, which autocast's casts would not match.

    def base_term(self, x3: torch.Tensor, x4: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """base = resize(A_3 x^3) + resize(A_4 x^4 + c) as token rows [B*h*w, D] (h, w = size),
        in `head_dtype`. Reused unchanged by a keyframe's non-keyframes."""
        dtype = head_dtype(x3)
        with no_autocast(x3):
            return self._base_term(x3.to(dtype), x4.to(dtype), size)

    def _base_term(self, x3: torch.Tensor, x4: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        f = self.folded(x3.dtype)
        t3 = to_image(tokens(x3) @ f.a3t, x3.shape[0], *x3.shape[-2:])  # [B, D, h3, w3] view
        t4 = to_image(torch.addmm(f.bias, tokens(x4), f.a4t), x4.shape[0], *x4.shape[-2:])
        base = tokens(resize(t3, size))  # channels-last in, channels-last out: free views
        return base.add_(tokens(resize(t4, size)))

    def head_logits(self, base: torch.Tensor, x1: torch.Tensor, up2: torch.Tensor,
                    chunk: int = 2048) -> torch.Tensor:
        """Logits rows [B*h*w, K] = classifier(ReLU(base + A_1 x^1 + A_2 up2)) from token rows
        base [B*h*w, D], x1 [B*h*w, C_1] and up2 = resize(x^2) [B*h*w, C_2]; z exists only
        `chunk` rows at a time (an L2-sized buffer), never as a whole map. Outside autocast,
        in base's dtype."""
        x1, up2 = x1.to(base.dtype), up2.to(base.dtype)
        if torch.is_grad_enabled() and any(t.requires_grad for t in (base, x1, up2)):
            return self.classify_rows(self.head_features(base, x1, up2))  # out= can't record grads
        f = self.folded(base.dtype)
        n = base.shape[0]
        out = base.new_empty(n, f.cls_t.shape[1])
        z = base.new_empty(min(chunk, n), base.shape[1])
        for i in range(0, n, chunk):
            j = min(i + chunk, n)
            zc = z[:j - i]
            torch.addmm(base[i:j], x1[i:j], f.a1t, out=zc)
            zc.addmm_(up2[i:j], f.a2t).relu_()
            torch.addmm(f.cls_b, zc, f.cls_t, out=out[i:j])
        return out

    def head_features(self, base: torch.Tensor, x1: torch.Tensor, up2: torch.Tensor) -> torch.Tensor:
        """z rows [B*h*w, D] (the whole map; for sparse MSDA, which updates z before the
        classifier). `head_logits` = `classify_rows(head_features(...))`. Outside autocast."""
        x1, up2 = x1.to(base.dtype), up2.to(base.dtype)
        f = self.folded(base.dtype)
        return F.relu(torch.addmm(base, x1, f.a1t).addmm(up2, f.a2t))

    def classify_rows(self, z: torch.Tensor) -> torch.Tensor:
        """The classifier on z rows: [N, D] -> [N, K] (eval)."""
        f = self.folded(z.dtype)
        return torch.addmm(f.cls_b, z, f.cls_t)

    def level_rows(self, x1: torch.Tensor, x2: torch.Tensor,
                   dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The head's per-point inputs in `dtype`: x^1 rows [B*h*w, C_1] and resize(x^2) rows
        [B*h*w, C_2] at x^1's size."""
        x1, x2 = x1.to(dtype), x2.to(dtype)
        return tokens(x1), upsample_tokens(x2, tuple(x1.shape[-2:]))

    def eval_head(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits rows [B*h*w, K], base rows [B*h*w, D]) from the four encoder maps, folded,
        in `head_dtype`."""
        x1, x2, x3, x4 = feats
        base = self.base_term(x3, x4, tuple(x1.shape[-2:]))
        with no_autocast(x1):
            return self.head_logits(base, *self.level_rows(x1, x2, base.dtype)), base

    def eval_logits(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Logits [B, K, h, w] (a channels-last view) from the four encoder maps, folded."""
        rows, _ = self.eval_head(feats)
        return to_image(rows, feats[0].shape[0], *feats[0].shape[-2:])


@dataclass(frozen=True)
class FoldedHead:
    """The decoder folded for eval (see the module docstring); tensors in one dtype."""

    a1t: torch.Tensor  # [C_1, D]  A_1^T
    a2t: torch.Tensor  # [C_2, D]
    a3t: torch.Tensor  # [C_3, D]
    a4t: torch.Tensor  # [C_4, D]
    bias: torch.Tensor  # [D]      c = sum_l c_l + t
    cls_t: torch.Tensor  # [D, K]  the classifier's weight, transposed
    cls_b: torch.Tensor  # [K]

    def to(self, dtype: torch.dtype) -> "FoldedHead":
        return FoldedHead(*(getattr(self, f.name).to(dtype) for f in fields(self)))


def tensor_key(t: torch.Tensor) -> tuple:
    """Changes when t's values may have: in-place updates bump `_version`; `.to()` / `.cuda()`
    / `.double()` keep the Parameter object but give it new storage, dtype or device. For
    caches derived from weights (`AllMLPDecoder.folded`, `tfc.similarity_basis`)."""
    return (id(t), t._version, t.data_ptr(), t.dtype, t.device)


def head_dtype(x: torch.Tensor) -> torch.dtype:
    """The folded head's dtype: autocast's where it is on for x's device, else x's own."""
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype


def no_autocast(x: torch.Tensor):
    """A context with autocast off on x's device."""
    return torch.autocast(x.device.type, enabled=False)


# ---- token rows <-> image views ------------------------------------------------------------


def tokens(x: torch.Tensor) -> torch.Tensor:
    """[B, C, h, w] -> rows [B*h*w, C] (batch-major, row-major points); free for a
    channels-last map, a copy otherwise."""
    return x.permute(0, 2, 3, 1).reshape(-1, x.shape[1])


def to_image(rows: torch.Tensor, batch: int, h: int, w: int) -> torch.Tensor:
    """Rows [B*h*w, C] -> a channels-last [B, C, h, w] view of the same memory."""
    return rows.view(batch, h, w, rows.shape[1]).permute(0, 3, 1, 2)


def upsample_tokens(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """resize(x) to `size` as rows [B*h*w, C] (x: [B, C, h', w']; channels-last is fastest)."""
    return tokens(resize(x.contiguous(memory_format=torch.channels_last), size))
