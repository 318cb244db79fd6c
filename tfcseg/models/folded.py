"""SegFormer's decoder folded for inference: exact up to float rounding, much cheaper.

linear_fuse and bilinear resize are linear and resize keeps constants, so with
A_l = s * W_fuse,l P_l and c_l = s * W_fuse,l b_l (s, t the eval-mode BatchNorm scale and
shift; P_l, b_l the per-level projection)
    z = ReLU(base + A_1 x^1 + A_2 resize(x^2)),  base = resize(A_3 x^3) + resize(A_4 x^4 + c)
with c = sum_l c_l + t. Levels 3-4 are mapped to D channels at their own (small) resolution
and resized; level 2 is resized at its C_2 channels (cheaper than resizing D) and joins level
1 in the per-point map at 1/4. A TFC non-keyframe reuses its keyframe's `base` unchanged.

Everything here works on rows [B*h*w, C] (see layout.py): the D-wide z exists only a chunk of
rows at a time, in a buffer that stays in cache, and goes straight into the classifier. The
folded head runs outside autocast, in one explicit dtype (`head_dtype`): its matmuls write
into preallocated buffers, which autocast's casts would not match.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
import torch
import torch.nn.functional as F

from .layout import head_dtype, image_to_rows, no_autocast, resize, rows_to_image, upsample_to_rows


@dataclass(frozen=True)
class FoldedHead:
    """The decoder's weights folded for eval (see the module docstring); tensors in one dtype."""

    a1t: torch.Tensor  # [C_1, D]  A_1^T
    a2t: torch.Tensor  # [C_2, D]
    a3t: torch.Tensor  # [C_3, D]
    a4t: torch.Tensor  # [C_4, D]
    bias: torch.Tensor  # [D]      c = sum_l c_l + t
    cls_t: torch.Tensor  # [D, K]  the classifier's weight, transposed
    cls_b: torch.Tensor  # [K]

    def to(self, dtype: torch.dtype) -> "FoldedHead":
        return FoldedHead(*(getattr(self, f.name).to(dtype) for f in fields(self)))

    @property
    def dtype(self) -> torch.dtype:
        return self.a1t.dtype

    def base_rows(self, x3: torch.Tensor, x4: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """base = resize(A_3 x^3) + resize(A_4 x^4 + c) as rows [B*h*w, D] (h, w = size), from
        maps x3 [B, C_3, h16, w16] and x4 [B, C_4, h32, w32] in this head's dtype."""
        t3 = rows_to_image(image_to_rows(x3) @ self.a3t, x3.shape[0], *x3.shape[-2:])
        t4 = rows_to_image(torch.addmm(self.bias, image_to_rows(x4), self.a4t), x4.shape[0], *x4.shape[-2:])
        base = image_to_rows(resize(t3, size))  # channels-last in, channels-last out: free views
        return base.add_(image_to_rows(resize(t4, size)))

    def logits_rows(self, base: torch.Tensor, x1: torch.Tensor, up2: torch.Tensor,
                    chunk: int = 2048) -> torch.Tensor:
        """Logits rows [B*h*w, K] = classifier(ReLU(base + A_1 x^1 + A_2 up2)) from rows
        base [B*h*w, D], x1 [B*h*w, C_1] and up2 = resize(x^2) [B*h*w, C_2]; z exists only
        `chunk` rows at a time (an L2-sized buffer), never as a whole map."""
        x1, up2 = x1.to(base.dtype), up2.to(base.dtype)
        if torch.is_grad_enabled() and any(t.requires_grad for t in (base, x1, up2)):
            return self.classify_rows(self.features_rows(base, x1, up2))  # out= can't record grads
        n = base.shape[0]
        out = base.new_empty(n, self.cls_t.shape[1])
        z = base.new_empty(min(chunk, n), base.shape[1])
        for i in range(0, n, chunk):
            j = min(i + chunk, n)
            zc = z[:j - i]
            torch.addmm(base[i:j], x1[i:j], self.a1t, out=zc)
            zc.addmm_(up2[i:j], self.a2t).relu_()
            torch.addmm(self.cls_b, zc, self.cls_t, out=out[i:j])
        return out

    def features_rows(self, base: torch.Tensor, x1: torch.Tensor, up2: torch.Tensor) -> torch.Tensor:
        """z rows [B*h*w, D] (the whole map; for sparse MSDA, which updates z before the
        classifier). `logits_rows` = `classify_rows(features_rows(...))`."""
        x1, up2 = x1.to(base.dtype), up2.to(base.dtype)
        return F.relu(torch.addmm(base, x1, self.a1t).addmm(up2, self.a2t))

    def classify_rows(self, z: torch.Tensor) -> torch.Tensor:
        """The classifier on z rows: [N, D] -> [N, K]."""
        return torch.addmm(self.cls_b, z, self.cls_t)


def fold(decoder: torch.nn.Module) -> FoldedHead:
    """The folded weights of an eval-mode `AllMLPDecoder`, in its weights' dtype (no autograd)."""
    bn = decoder.batch_norm
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # s
    shift = bn.bias - bn.running_mean * scale  # t
    w_fuse = decoder.linear_fuse.weight[:, :, 0, 0]  # [D, 4D]
    mats, bias = [], shift.clone()
    for l, lin in enumerate(decoder.linear_c):
        slot = 3 - l  # concat order is [c4, c3, c2, c1]
        w_l = w_fuse[:, slot * decoder.dim:(slot + 1) * decoder.dim] * scale[:, None]
        mats.append((w_l @ lin.weight).t().contiguous())  # A_l^T [C_l, D]
        bias = bias + w_l @ lin.bias
    return FoldedHead(a1t=mats[0], a2t=mats[1], a3t=mats[2], a4t=mats[3], bias=bias,
                      cls_t=decoder.classifier.weight[:, :, 0, 0].t().contiguous(),
                      cls_b=decoder.classifier.bias.detach().clone())


def level_rows(x1: torch.Tensor, x2: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's per-point inputs in `dtype`: x^1 rows [B*h*w, C_1] and resize(x^2) rows
    [B*h*w, C_2] at x^1's size."""
    x1, x2 = x1.to(dtype), x2.to(dtype)
    return image_to_rows(x1), upsample_to_rows(x2, tuple(x1.shape[-2:]))


def eval_head(decoder: torch.nn.Module, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits rows [B*h*w, K], base rows [B*h*w, D]) of an `AllMLPDecoder` from the four
    encoder maps, folded, in `head_dtype` (autocast's where it is on, else the maps' own)."""
    x1, x2, x3, x4 = feats
    dtype = head_dtype(x3)
    with no_autocast(x1):
        head = decoder.folded(dtype)
        base = head.base_rows(x3.to(dtype), x4.to(dtype), tuple(x1.shape[-2:]))
        return head.logits_rows(base, *level_rows(x1, x2, dtype)), base
