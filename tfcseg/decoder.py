"""SegFormer's all-MLP decoder, with its parts reachable one by one.

Plain form (training, and the reference):
    x̂^l = resize(P_l x^l + b_l) to the 1/4 map         `project(l, x)` + `upsample`
    z   = ReLU(BN(W_fuse [x̂^4, x̂^3, x̂^2, x̂^1]))    `fuse`          (z: [B, D, H/4, W/4])
    logits = classifier(dropout(z))                      `classify`

Folded form (eval only, exact up to float rounding): linear_fuse and bilinear resize are
linear and resize keeps constants, so with A_l = s * W_fuse,l P_l, c_l = s * W_fuse,l b_l
(s, t the eval-mode BN scale and shift)
    z = ReLU(sum_l resize(A_l x^l) + sum_l c_l + t)
Each level is one small C_l -> D map at its own resolution instead of a 4D -> D map at 1/4.
`level_term(l, x)` gives resize(A_l x^l) so that a TFC non-keyframe can reuse the
keyframe's level-3/4 terms unchanged.
"""

from __future__ import annotations

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
        # cache: (key of the weights it was built from, (A_1..A_4, bias)); see `folded`
        self._folded: tuple[tuple, tuple[torch.Tensor, ...]] | None = None

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
        """Logits [B, K, H/4, W/4] from the four encoder maps."""
        return self.classify(self.fused_features(feats))

    def fused_features(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """z from the four encoder maps; folded in eval mode, plain in training."""
        if self.training:
            size = feats[0].shape[-2:]
            return self.fuse([resize(self.project(l + 1, f), size) for l, f in enumerate(feats)])
        size = feats[0].shape[-2:]
        terms = [self.level_term(l + 1, f, size) for l, f in enumerate(feats)]
        return self.fuse_terms(terms)

    # ---- folded parts (eval) ------------------------------------------------------------
    def _fold_key(self) -> tuple:
        """Changes whenever a folded weight's inputs change: in-place updates (optimizer
        steps, load_state_dict) bump a tensor's version; .to() replaces the tensors."""
        bn = self.batch_norm
        tensors = [bn.weight, bn.bias, bn.running_mean, bn.running_var, self.linear_fuse.weight]
        tensors += [p for lin in self.linear_c for p in (lin.weight, lin.bias)]
        return tuple((id(t), t._version) for t in tensors)

    def folded(self) -> tuple[torch.Tensor, ...]:
        """(A_1, A_2, A_3, A_4, bias): A_l [D, C_l], bias [D] = sum_l c_l + t, in the
        weights' own dtype (built outside autocast), cached until a weight changes."""
        key = self._fold_key()
        if self._folded is not None and self._folded[0] == key:
            return self._folded[1]
        with torch.no_grad(), torch.autocast(self.linear_fuse.weight.device.type, enabled=False):
            bn = self.batch_norm
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # s
            shift = bn.bias - bn.running_mean * scale  # t
            w_fuse = self.linear_fuse.weight[:, :, 0, 0]  # [D, 4D]
            mats, bias = [], shift.clone()
            for l, lin in enumerate(self.linear_c):
                slot = 3 - l  # concat order is [c4, c3, c2, c1]
                w_l = w_fuse[:, slot * self.dim:(slot + 1) * self.dim] * scale[:, None]
                mats.append((w_l @ lin.weight).contiguous())
                bias = bias + w_l @ lin.bias
        folded = (*mats, bias)
        self._folded = (key, folded)
        return folded

    def level_term(self, level: int, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """resize(A_l x^l) to `size`: level l's additive share of z before ReLU (no bias)."""
        a = self.folded()[level - 1]
        return resize(F.conv2d(x, a[:, :, None, None]), size)

    def fuse_terms(self, terms: list[torch.Tensor]) -> torch.Tensor:
        """z = ReLU(sum of level terms + folded bias)."""
        total = terms[0]
        for t in terms[1:]:
            total = total + t
        return F.relu(total + self.folded()[4][:, None, None])
