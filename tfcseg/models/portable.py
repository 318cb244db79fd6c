"""TFC's inference passes in plain tensor ops, for export to ONNX.

`TFCSegFormer.keyframe` / `non_keyframe` compute the folded head on rows with chunked,
in-place matmuls, run sparse MSDA through the registered op `tfcseg::ms_deform_attn` and
branch on data (no MSDA point selected: no MSDA). None of that traces into a portable graph.
The two modules here compute the same quantities with plain tensor ops and no data-dependent
Python control flow, so that `torch.onnx.export` records one graph per pass that holds for
any input size:

    PortableKeyframe     pixels [1, 3, H, W] -> logits and the keyframe state (STATE_NAMES)
    PortableNonKeyframe  pixels + the keyframe state + run-time options ->
                         logits, similarity, msda_share, unit

Layouts (batch 1; h4, w4 = the 1/4 map; h_l, w_l = level l's map):
    logits      [1, h4, w4, K]  (NHWC: `.permute(0, 3, 1, 2)` is the model's channels-last logits)
    base        [1, h4, w4, D]  the folded level-3/4 share of z (+ bias), reused
    unit        [1, h4, w4, r]  the keyframe's unit features in the reduced similarity basis
    value3/4    [1, D, h_l, w_l] MSDA values of the reused levels (only with MSDA, L >= 3 / 4)
    similarity  [1, h4, w4];  msda_share  [] (share of points sparse MSDA updated)
    unit        (non-keyframe output) the frame's own unit features, as the keyframe's: what
                motion-aware label hysteresis compares with the previous frame's

The run-time options are inputs of the non-keyframe pass, so one export serves every mode:
`msda_threshold` (float), `msda` (int64 0/1), `interpolation` (int64, INTERPOLATION_CODES),
`fixed_weight`, `msda_gate` and `interpolation_power` (floats). The similarity level and
whether MSDA is in the graph at all are fixed when the modules are built. Sparse MSDA is written with standard ops: the selected
points are found with nonzero, gathered, sampled with grid_sample (bilinear, zero padding,
align_corners=False: Deformable DETR's sampling) and scattered back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import INTERPOLATIONS
from .segformer import TFCSegFormer

# interpolation name -> the code the non-keyframe pass takes (0 = none: z'_t = z_t)
INTERPOLATION_CODES = {"none": 0, "soft": 1, "hard": 2, "fixed": 3}
assert set(INTERPOLATION_CODES) == set(INTERPOLATIONS)
# what a keyframe leaves for its non-keyframes (the first names; value3/value4 with MSDA)
STATE_NAMES = ("logits", "base", "unit")
OPTION_NAMES = ("msda_threshold", "msda", "interpolation", "fixed_weight", "msda_gate", "interpolation_power")


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


def _nchw(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


def _resize(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear, align_corners=False (SegFormer's); always a resize op, even at the same size
    (the identity then), so that the graph holds for every input size."""
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class _Portable(nn.Module):
    """The folded head, the similarity basis and the MSDA value maps of `model` as fp32
    constants (computed exactly as the PyTorch path computes them), and its encoder."""

    def __init__(self, model: TFCSegFormer, msda: bool) -> None:
        super().__init__()
        if model.training:
            raise RuntimeError("export an eval-mode model (call model.eval() first)")
        cfg = model.config
        self.config = cfg
        self.encoder = model.encoder
        self.similarity_level = cfg.tfc.similarity_level
        self.msda_levels = cfg.tfc.msda_levels if msda else 0
        with torch.no_grad():
            head = model.decoder.folded(torch.float32)
            for name in ("a1t", "a2t", "a3t", "a4t", "bias", "cls_t", "cls_b"):
                self.register_buffer(name, getattr(head, name).detach().clone(), persistent=False)
            level = self.similarity_level
            rw_t, r_b = model.temporal.similarity_basis(model.decoder.projection(level), level)
            self.register_buffer("rw_t", rw_t.float().clone(), persistent=False)
            self.register_buffer("r_b", r_b.float().clone(), persistent=False)
            if msda:
                vp = model.temporal.msda.value_proj
                for lv in range(1, self.msda_levels + 1):
                    lin = model.decoder.projection(lv)
                    weight = vp.weight @ lin.weight  # W_v P_l: value_proj after the level projection, one map
                    bias = vp.weight @ lin.bias + vp.bias
                    self.register_buffer(f"vw{lv}", weight.t().float().contiguous(), persistent=False)
                    self.register_buffer(f"vb{lv}", bias.float().clone(), persistent=False)
        self.msda = model.temporal.msda if msda else None

    @property
    def state_names(self) -> tuple[str, ...]:
        return STATE_NAMES + tuple(f"value{lv}" for lv in range(3, self.msda_levels + 1))

    def unit(self, x1: torch.Tensor, x2: torch.Tensor, size) -> torch.Tensor:
        """Unit features u = x̂ / |x̂| in the reduced basis, [1, h4, w4, r]."""
        x = x1 if self.similarity_level == 1 else x2
        y = _nhwc(x) @ self.rw_t + self.r_b  # [1, h_l, w_l, r]
        if self.similarity_level == 2:
            y = _nhwc(_resize(_nchw(y), size))
        return y / (y * y).sum(-1, keepdim=True).sqrt().clamp_min(1e-12)

    def values(self, level: int, x: torch.Tensor) -> torch.Tensor:
        """MSDA values of level `level` from its encoder map: [1, D, h_l, w_l]."""
        return _nchw(_nhwc(x) @ getattr(self, f"vw{level}") + getattr(self, f"vb{level}"))

    def features(self, base: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, size) -> torch.Tensor:
        """z = ReLU(base + A_1 x^1 + A_2 resize(x^2)), [1, h4, w4, D]."""
        up2 = _nhwc(_resize(x2, size))
        return F.relu(base + _nhwc(x1) @ self.a1t + up2 @ self.a2t)

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.cls_t + self.cls_b


class PortableKeyframe(_Portable):
    """pixels [1, 3, H, W] -> (logits, base, unit[, value3[, value4]]): see the module docstring."""

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x1, x2, x3, x4 = self.encoder(pixels)
        size = x1.shape[-2:]
        t3 = _nchw(_nhwc(x3) @ self.a3t)
        t4 = _nchw(_nhwc(x4) @ self.a4t + self.bias)
        base = _nhwc(_resize(t3, size) + _resize(t4, size))  # [1, h4, w4, D]
        logits = self.classify(self.features(base, x1, x2, size))
        values = [self.values(lv, x) for lv, x in ((3, x3), (4, x4))[:max(self.msda_levels - 2, 0)]]
        return (logits, base, self.unit(x1, x2, size), *values)


class PortableNonKeyframe(_Portable):
    """(pixels, logits, base, unit, msda_threshold, msda, interpolation, fixed_weight,
    msda_gate, interpolation_power[, value3[, value4]]) -> (logits, similarity, msda_share, unit): see the
    module docstring."""

    def forward(self, pixels: torch.Tensor, key_logits: torch.Tensor, key_base: torch.Tensor,
                key_unit: torch.Tensor, msda_threshold: torch.Tensor, msda: torch.Tensor,
                interpolation: torch.Tensor, fixed_weight: torch.Tensor, msda_gate: torch.Tensor,
                interpolation_power: torch.Tensor, *key_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x1, x2 = self.encoder(pixels, stages=2)
        size = x1.shape[-2:]
        unit = self.unit(x1, x2, size)
        diff = unit - key_unit
        similarity = 1.0 - 0.5 * (diff * diff).sum(-1)  # [1, h4, w4]
        z = self.features(key_base, x1, x2, size)
        soft = similarity.clamp(0.0, 1.0).pow(interpolation_power.to(similarity.dtype))
        hard = (similarity >= msda_threshold).to(similarity.dtype)
        weight = torch.where(interpolation == 1, soft, torch.where(
            interpolation == 2, hard, torch.where(
                interpolation == 3, fixed_weight.to(similarity.dtype).expand_as(similarity),
                torch.zeros_like(similarity))))[..., None]
        if self.msda is None:
            return (torch.lerp(self.classify(z), key_logits, weight), similarity,
                    torch.zeros((), dtype=torch.float32), unit)
        select = (similarity < msda_threshold) & (msda != 0)
        maps = [self.values(1, x1), self.values(2, x2), *key_values][:self.msda_levels]
        plain = torch.lerp(self.classify(z), key_logits, weight)  # [1, h4, w4, K] without MSDA
        out = torch.lerp(self.classify(self.sparse_msda(z, select, maps)), key_logits, weight)
        if out.shape[-1] < 2:  # one class: no label can change (fixed at export)
            return out, similarity, select.to(torch.float32).mean(), unit
        # the gate (TFCOptions.msda_gate): a label MSDA changed stays changed only if decided
        top2 = torch.topk(out, 2, dim=-1).values
        undecided = select & (out.argmax(-1) != plain.argmax(-1)) & (top2[..., 0] - top2[..., 1] < msda_gate)
        out = torch.where(undecided[..., None], plain, out)
        return out, similarity, select.to(torch.float32).mean(), unit

    def sparse_msda(self, z: torch.Tensor, select: torch.Tensor, maps: list[torch.Tensor]) -> torch.Tensor:
        """z [1, h4, w4, D] with the selected points updated, z[q] + MSDA(z[q]) (as
        `temporal.sparse_msda` with `MSDeformAttn`), in gather / grid_sample / scatter form."""
        msda = self.msda
        d, m, n_levels, p = msda.d_model, msda.n_heads, msda.n_levels, msda.n_points
        h, w = z.shape[1], z.shape[2]
        flat = z.reshape(-1, d)  # [h4*w4, D]
        idx = torch.nonzero(select.reshape(-1))[:, 0]  # [Q], row-major
        query = flat[idx]  # [Q, D]
        # reference points: the pixel centres of the selected points, (x, y) in [0, 1]
        ref = torch.stack([((idx % w).to(torch.float32) + 0.5) / w,
                           (torch.div(idx, w, rounding_mode="floor").to(torch.float32) + 0.5) / h], -1)
        offsets = msda.sampling_offsets(query).view(-1, m, n_levels, p, 2)
        weights = msda.attention_weights(query).view(-1, m, n_levels * p).softmax(-1).view(-1, m, n_levels, p)
        out = None
        for lv, value in enumerate(maps):
            hl, wl = value.shape[2], value.shape[3]
            # (as_tensor: under tracing the sizes are tensors already, and stay dynamic)
            normalizer = torch.stack([torch.as_tensor(wl), torch.as_tensor(hl)]).to(torch.float32)
            loc = ref[:, None, None, :] + offsets[:, :, lv] / normalizer  # [Q, M, P, 2]
            grid = (2 * loc - 1).transpose(0, 1)  # [M, Q, P, 2]
            sampled = F.grid_sample(value.reshape(m, d // m, hl, wl), grid, mode="bilinear",
                                    padding_mode="zeros", align_corners=False)  # [M, Dh, Q, P]
            attn = weights[:, :, lv].transpose(0, 1)  # [M, Q, P]
            term = (sampled * attn[:, None]).sum(-1)  # [M, Dh, Q]
            out = term if out is None else out + term
        out = msda.output_proj(out.reshape(d, -1).transpose(0, 1))  # [Q, D]
        flat = flat.index_put((idx,), query + out)
        return flat.view(z.shape)
