"""SegFormer's all-MLP decoder (the plain form: training, and the reference).

    x̂^l = resize(P_l x^l + b_l) to the 1/4 map         `project(l, x)` + `resize`
    z   = ReLU(BN(W_fuse [x̂^4, x̂^3, x̂^2, x̂^1]))    `fuse`          (z: [B, D, H/4, W/4])
    logits = classifier(dropout(z))                      `classify`

In eval mode without autograd, `forward` runs the folded form instead (folded.py: exact up to
float rounding, much cheaper); `folded(dtype)` builds and caches its weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .folded import FoldedHead, eval_head, fold
from .layout import resize, rows_to_image, tensor_key


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
        # the folded form's cache: (key of the weights it was built from, {dtype: FoldedHead})
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

    # ---- folded form (eval; folded.py) --------------------------------------------------
    def _fold_key(self) -> tuple:
        """Changes whenever an input of the folded weights changes (see `tensor_key`)."""
        bn = self.batch_norm
        tensors = [bn.weight, bn.bias, bn.running_mean, bn.running_var, self.linear_fuse.weight,
                   self.classifier.weight, self.classifier.bias]
        tensors += [p for lin in self.linear_c for p in (lin.weight, lin.bias)]
        return tuple(map(tensor_key, tensors))

    def folded(self, dtype: torch.dtype | None = None) -> FoldedHead:
        """The folded weights (`folded.FoldedHead`) in `dtype` (default: the weights' own),
        built in fp32 outside autocast and cached until a weight changes."""
        key = self._fold_key()
        if self._folded is None or self._folded[0] != key:
            # plain tensors even when first called under inference_mode, so that a later
            # call with autograd on can use them
            with torch.inference_mode(False), torch.no_grad(), \
                    torch.autocast(self.linear_fuse.weight.device.type, enabled=False):
                head = fold(self)
            self._folded = (key, {head.dtype: head})
        cache = self._folded[1]
        dtype = dtype or self.linear_fuse.weight.dtype
        if dtype not in cache:
            with torch.inference_mode(False), torch.no_grad():
                cache[dtype] = next(iter(cache.values())).to(dtype)
        return cache[dtype]

    def projection(self, level: int) -> nn.Linear:
        """P_l, b_l of level l = 1..4 (C_l -> D), for what TFC derives from them."""
        return self.linear_c[level - 1]

    def eval_logits(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Logits [B, K, h, w] (a channels-last view) from the four encoder maps, folded."""
        rows, _ = eval_head(self, feats)
        return rows_to_image(rows, feats[0].shape[0], *feats[0].shape[-2:])
