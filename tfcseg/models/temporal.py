"""TFC's temporal fusion (the paper's sections 3.2-3.3): similarity, interpolation, sparse MSDA.

Keyframe k: plain SegFormer (all four encoder stages, decoder, classifier); the state kept
for the frames after it is a `KeyframeState` (state.py). `TFCSegFormer` (segformer.py) runs
the encoder and hands the maps to `TemporalFusion`, which owns everything TFC adds.

Non-keyframe t, in this order:
  1. encoder stages 1-2 on frame t; x_t = (x_t^1, x_t^2, x_k^3, x_k^4);
  2. similarity w_t = cosine(x̂_k^l, x̂_t^l) per point of the 1/4 map (l = 2, or 1), where
     x̂^l = resize(P_l x^l + b_l) is the decoder's projected level-l feature;
  3. decoder -> z_t (the level-3/4 terms come from the keyframe unchanged);
  4. sparse MSDA: the points with w < threshold get a residual update
     z_t[q] += MSDA(query = z_t[q], values = pyramid of x_t);
  5. interpolation z'_t = ŵ z_k + (1 - ŵ) z_t (ŵ = clamp(w, 0, 1) for `soft`, or its
     power `interpolation_power`, tfcseg's addition);
  6. classifier; with `msda_gate` > 0 (inference only, tfcseg's addition), a point whose
     label step 4 changed keeps the change only if its top class leads by >= the gate.

The MSDA value pyramid (a choice the paper leaves open): level l's values are the decoder's
projection P_l x^l + b_l at the level's own resolution (D channels, so every level has the
same width as the queries z_t), levels 1-2 from frame t and 3-4 from the keyframe, then
MSDA's own `value_proj`. With `msda_levels = L < 4` the L finest levels are used.

The similarity is computed as 1 - |u_k - u_t|^2 / 2 with u = x̂ / |x̂| (per point), which is
the cosine for unit vectors and is exactly 1 when the two features are bitwise equal (a
static scene), so that a threshold of 1.0 selects no point there.

Inference (`non_keyframe`) uses the decoder's folded eval form on rows (folded.py) and
computes the same quantities more cheaply: the similarity in a (C_l + 1)-dimensional basis
with the same inner products (`similarity_basis`), and steps 4-6 on logits rather than on z
(the classifier is affine, so classifier(z + r) = classifier(z) + W_cls r). Sparse MSDA then
touches only the selected points (`SparseLogitUpdate`): z of those rows alone; the output
projection and the classifier folded into one K x D map; levels 1-2 sampled from the
frame's own C_l-channel maps with a ones channel appended and mapped after sampling (bilinear
sampling and the attention-weighted sum are linear, and the ones channel carries the bias
exactly where samples fall partly outside the map), so that no D-wide value map of the frame
is ever computed; levels 3-4 from the keyframe's values, mapped to K channels per head once
per keyframe. Training (`clip`) uses the plain form, so BatchNorm and dropout behave as in
training.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.msda import MSDeformAttn, level_layout, ms_deform_attn, pixel_centres
from .config import ModelConfig, TFCOptions
from .decoder import AllMLPDecoder
from .folded import level_rows
from .layout import image_to_rows, no_autocast, resize, rows_to_image, tensor_key, upsample_to_rows
from .state import ClipOutput, KeyframeState, NonKeyframeInfo


# ---- building blocks ----------------------------------------------------------------------


def unit_features(xhat: torch.Tensor) -> torch.Tensor:
    """x̂ / |x̂| over channels: [B, D, h, w] -> [B, D, h, w] (zero vectors stay zero)."""
    return F.normalize(xhat, dim=1)


def similarity_from_rows(unit_k: torch.Tensor, unit_t: torch.Tensor) -> torch.Tensor:
    """The same from unit rows [N, r] x 2 -> [N]; overwrites unit_t (in place: these are
    large, and fresh allocations cost more than the arithmetic)."""
    if torch.is_grad_enabled() and (unit_k.requires_grad or unit_t.requires_grad):
        return 1.0 - 0.5 * (unit_k - unit_t).pow(2).sum(-1)  # autograd keeps its inputs
    diff = unit_t.sub_(unit_k)
    return torch.linalg.vector_norm(diff, dim=1).square_().mul_(-0.5).add_(1.0)


def similarity_from_units(unit_k: torch.Tensor, unit_t: torch.Tensor) -> torch.Tensor:
    """Cosine similarity per point from unit features: [..., D, h, w] x 2 -> [..., h, w].
    Exactly 1.0 where the features are equal."""
    return 1.0 - 0.5 * (unit_k - unit_t).pow(2).sum(-3)


def interpolation_weight(similarity: torch.Tensor, options: TFCOptions) -> torch.Tensor | None:
    """ŵ [B, h, w] for z' = ŵ z_k + (1 - ŵ) z_t, or None for `none` (z' = z_t)."""
    if options.interpolation == "soft":
        weight = similarity.clamp(0.0, 1.0)
        return weight if options.interpolation_power == 1 else weight.pow(options.interpolation_power)
    if options.interpolation == "hard":
        return (similarity >= options.msda_threshold).to(similarity.dtype)
    if options.interpolation == "fixed":
        return torch.full_like(similarity, options.fixed_weight)
    return None


def gate_msda(repaired: torch.Tensor, plain: torch.Tensor, gate: float) -> torch.Tensor:
    """Logit rows [q, K] of MSDA's points after the gate (`TFCOptions.msda_gate`): `repaired`
    where its label equals `plain`'s or its top class leads the runner-up by >= gate, else
    `plain` (the rows without MSDA; both after the interpolation)."""
    if repaired.shape[1] < 2:  # one class: no label can change
        return repaired
    top2 = repaired.topk(2, dim=1).values
    undecided = (repaired.argmax(1) != plain.argmax(1)) & (top2[:, 0] - top2[:, 1] < gate)
    return torch.where(undecided[:, None], plain, repaired)


def sparse_query_dtype(device_type: str) -> torch.dtype | None:
    """The dtype of sparse MSDA's query linear at inference: bf16 under bf16 autocast on
    `device_type` (its largest matmul; the sampling and sums stay fp32), else None (fp32)."""
    if torch.is_autocast_enabled(device_type) and torch.get_autocast_dtype(device_type) == torch.bfloat16:
        return torch.bfloat16
    return None


def interpolate(z_t: torch.Tensor, z_k: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """z'_t = ŵ z_k + (1 - ŵ) z_t per point (z: [..., D, h, w], ŵ: [..., h, w]).
    torch.lerp is exact at both ends: ŵ = 1 gives z_k and ŵ = 0 gives z_t bit for bit."""
    if weight is None:
        return z_t
    return torch.lerp(z_t, z_k, weight.unsqueeze(-3).to(z_t.dtype))


def flatten_levels(maps: list[torch.Tensor]) -> torch.Tensor:
    """Per-level maps [B, D, h_l, w_l] -> the flattened pyramid [B, sum_l h_l*w_l, D]."""
    return torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)


def dense_msda(msda: MSDeformAttn, z: torch.Tensor, value: torch.Tensor,
               spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
               value_projected: bool = False) -> torch.Tensor:
    """z + MSDA(z) at every point of z [B, D, h, w], reference points at pixel centres."""
    b, d, h, w = z.shape
    flat = z.flatten(2).transpose(1, 2)  # [B, h*w, D]
    ref = pixel_centres(h, w, z.device, z.dtype)[None].expand(b, -1, -1)
    out = msda(flat, ref, value, spatial_shapes, level_start_index, value_projected)
    return (flat + out).transpose(1, 2).reshape(b, d, h, w)


def sparse_msda(msda: MSDeformAttn, z: torch.Tensor, select: torch.Tensor, value: torch.Tensor,
                spatial_shapes: torch.Tensor, level_start_index: torch.Tensor,
                value_projected: bool = False) -> torch.Tensor:
    """z with the selected points updated: z[q] + MSDA(z[q]) where select[q] (else z[q]).

    z [B, D, h, w], select bool [B, h, w], value [B, S, D]. The selected queries are
    gathered (selected points first, row-major; each row padded to the largest count with
    unselected points, whose result is discarded), run through MSDA, and added back with
    a scatter. Differentiable in z and value."""
    b, d, h, w = z.shape
    sel = select.reshape(b, h * w)
    counts = sel.sum(1)  # [B]
    q = int(counts.max()) if b else 0
    if q == 0 and not (torch.is_grad_enabled() and any(p.requires_grad for p in msda.parameters())):
        return z
    # (in training an empty selection still runs, on zero queries, so that MSDA's
    # parameters get zero gradients rather than none: DDP needs no find_unused_parameters)
    flat = z.flatten(2).transpose(1, 2)  # [B, h*w, D]
    # a permutation per row with the selected points first (stable: row-major order)
    order = torch.argsort((~sel).to(torch.uint8), dim=1, stable=True)[:, :q]  # [B, q]
    idx = order[..., None].expand(b, q, d)
    query = flat.gather(1, idx)  # [B, q, D]
    ref = pixel_centres(h, w, z.device, z.dtype)[order]  # [B, q, 2]
    out = msda(query, ref, value, spatial_shapes, level_start_index, value_projected)
    valid = torch.arange(q, device=z.device)[None] < counts[:, None]  # [B, q]
    out = out * valid[..., None].to(out.dtype)
    flat = flat.scatter_add(1, idx, out.to(flat.dtype))  # indices in a row are distinct
    return flat.transpose(1, 2).reshape(b, d, h, w)


class SparseLogitUpdate:
    """Sparse MSDA at inference, as an update of the selected points' logits (see the module
    docstring): W_cls MSDA(z[q]) for the selected points q, computed from weights folded once
    (`fold`) and the keyframe's level-3/4 values mapped to classes (cached in its state).

    Folded, per level l and head m (D_h = D / M channels; W_co = W_cls W_out [K, D]):
      G_l[m] = (W_co[:, m] [W_v P_l | W_v b_l + b_v][m])^T   [C_l + 1, K]
    and the update is b_co + sum_m sum_l G_l[m]^T S_l[q, m] (b_co = W_cls b_out), with S_l[q, m]
    head m's attention-weighted samples of [x^l; 1] at point q. Levels 1-2 sample the frame's
    [x^l; 1] and map after sampling (few points); levels 3-4 sample V_l = [x^l; 1] G_l, the
    keyframe's values mapped to K channels per head once per keyframe. Computed in fp32 (or
    the model's float64), but for the query linear under bf16 autocast (`sparse_query_dtype`)."""

    def __init__(self, temporal: "TemporalFusion", decoder: AllMLPDecoder) -> None:
        self.msda, self.decoder = temporal.msda, decoder

    def key(self) -> tuple:
        """Changes when any weight that `fold` reads may have changed."""
        m, d = self.msda, self.decoder
        tensors = [*m.parameters(), d.classifier.weight]
        for level in range(1, m.n_levels + 1):
            tensors += [d.projection(level).weight, d.projection(level).bias]
        return tuple(tensor_key(t) for t in tensors)

    def fold(self) -> dict[str, torch.Tensor]:
        """The folded maps (see the class docstring), in fp32 (or float64), outside autocast;
        ordinary tensors even when called under inference mode (they are kept)."""
        with torch.inference_mode(False), torch.no_grad(), \
                torch.autocast(self.msda.value_proj.weight.device.type, enabled=False):
            return self._fold()

    def _fold(self) -> dict[str, torch.Tensor]:
        m, d = self.msda, self.decoder
        dtype = torch.promote_types(m.value_proj.weight.dtype, torch.float32)
        heads, dh = m.n_heads, m.d_model // m.n_heads
        w_cls = d.classifier.weight[:, :, 0, 0].to(dtype)  # [K, D]
        w_co = w_cls @ m.output_proj.weight.to(dtype)  # [K, D]
        out = {"w_co": w_co, "b_co": w_cls @ m.output_proj.bias.to(dtype),
               "w_q": torch.cat([m.sampling_offsets.weight, m.attention_weights.weight]).to(dtype),
               "b_q": torch.cat([m.sampling_offsets.bias, m.attention_weights.bias]).to(dtype)}
        # the query linear's weights for bf16 autocast (`sparse_query_dtype`), cast once here
        out["w_q_bf16"], out["b_q_bf16"] = out["w_q"].bfloat16(), out["b_q"].bfloat16()
        wv, bv = m.value_proj.weight.to(dtype), m.value_proj.bias.to(dtype)
        for level in range(1, m.n_levels + 1):
            lin = d.projection(level)
            a = torch.cat([wv @ lin.weight.to(dtype), (wv @ lin.bias.to(dtype) + bv)[:, None]], 1)  # [D, C_l+1]
            g = torch.einsum("kmd,mdc->mck", w_co.view(-1, heads, dh), a.view(heads, dh, -1))
            out[f"g{level}"] = g.contiguous()  # [M, C_l+1, K]
        return out

    @staticmethod
    def with_ones(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """A map [B, C, h, w] as rows [B, h*w, C + 1] with a ones channel appended."""
        rows = image_to_rows(x).to(dtype).view(x.shape[0], -1, x.shape[1])
        return torch.cat([rows, rows.new_ones(*rows.shape[:2], 1)], -1)

    def class_values(self, folded: dict[str, torch.Tensor], level: int, x: torch.Tensor) -> torch.Tensor:
        """A keyframe level's MSDA values per head in class space, V_l [B, h_l*w_l, M, K],
        from its map x [B, C_l, h_l, w_l]."""
        return torch.einsum("bsc,mck->bsmk", self.with_ones(x, folded["w_co"].dtype), folded[f"g{level}"]).contiguous()

    def __call__(self, folded: dict[str, torch.Tensor], z: torch.Tensor, points: torch.Tensor,
                 size: tuple[int, int], maps: list[tuple[torch.Tensor, tuple[int, int]]],
                 key_maps: list[tuple[torch.Tensor, tuple[int, int]]],
                 query_dtype: torch.dtype | None = None) -> torch.Tensor:
        """Logit updates [q, K] of one frame's selected points.

        z [q, D]: their features; points [q]: their indices in the frame's 1/4 map of `size`
        (h4, w4); maps: the frame's levels 1.. as (rows [S_l, C_l + 1] with a ones channel,
        (h_l, w_l)); key_maps: the levels after those, from the keyframe, as (class-space
        values [1, S_l, M, K] (`class_values`), (h_l, w_l)). query_dtype: None (fp32
        throughout) or bf16 (`sparse_query_dtype`: under bf16 autocast), the dtype of the query
        linear (offsets and attention logits, the largest matmul here), whose result continues
        in fp32."""
        msda, dtype, dev = self.msda, folded["w_co"].dtype, z.device
        heads, levels, npts = msda.n_heads, msda.n_levels, msda.n_points
        q, (h, w) = z.shape[0], size
        n_classes = folded["w_co"].shape[0]
        if query_dtype is None or query_dtype == dtype:
            pred = torch.addmm(folded["b_q"], z.to(dtype), folded["w_q"].t())  # [q, M*L*P*3]
        else:  # bf16 (`sparse_query_dtype`), with the weights folded in bf16 once
            pred = torch.addmm(folded["b_q_bf16"], z.to(torch.bfloat16), folded["w_q_bf16"].t()).to(dtype)
        n_off = heads * levels * npts * 2
        # level-major, so that each level's slice is contiguous: [L, q, M, P, 2] and [L, q, M, P]
        # (made contiguous before the addcmul below, which is then a plain sweep: faster, same values)
        offsets = pred[:, :n_off].view(q, heads, levels, npts, 2).permute(2, 0, 1, 3, 4).contiguous()
        weights = (pred[:, n_off:].view(q, heads, levels * npts).softmax(-1)
                   .view(q, heads, levels, npts).permute(2, 0, 1, 3).contiguous())
        # sampling locations in [0, 1] as (x, y): the points' pixel centres plus the offsets in
        # each level's pixels
        ref = pixel_centres(h, w, dev, dtype)[points]  # [q, 2]
        inv = torch.tensor([[1.0 / lw, 1.0 / lh] for _, (lh, lw) in maps + key_maps], dtype=dtype, device=dev)
        loc = torch.addcmul(ref[None, :, None, None, :], offsets, inv[:, None, None, None, :])  # [L, q, M, P, 2]
        zero = torch.zeros(1, dtype=torch.long, device=dev)
        out = folded["b_co"].expand(q, -1).clone()  # [q, K]
        for level, (values, (lh, lw)) in enumerate(maps + key_maps):
            shape = torch.tensor([[lh, lw]], device=dev)
            if level < len(maps):  # one head per call: a point's M heads are M queries of the shared map
                s_l = ms_deform_attn(values.view(1, lh * lw, 1, values.shape[-1]), shape, zero,
                                     loc[level].view(1, q * heads, 1, 1, npts, 2),
                                     weights[level].view(1, q * heads, 1, 1, npts))  # [1, q*M, C_l+1]
                out.addmm_(s_l.view(q, -1), folded[f"g{level + 1}"].view(-1, n_classes))  # sum over m, c
            else:  # class-space values, M heads
                s_l = ms_deform_attn(values, shape, zero, loc[level].view(1, q, heads, 1, npts, 2),
                                     weights[level].view(1, q, heads, 1, npts))  # [1, q, M*K]
                out += s_l.view(q, heads, n_classes).sum(1)
        return out


# Said once per model when sparse MSDA is asked of a model whose TFC modules were never trained.
UNTRAINED_MSDA = ("this model's TFC modules are untrained (tfc_trained=False, e.g. official SegFormer "
                  "weights): sparse MSDA is off; similarity and interpolation still apply")


# ---- the module -------------------------------------------------------------------------------


class TemporalFusion(nn.Module):
    """Everything TFC adds to SegFormer at non-keyframes: the similarity to the keyframe, the
    interpolation towards it and sparse MSDA. Parameters: `msda.*` (the only trained part).

    Owns the caches derived from weights (the reduced similarity bases, one per level) and the
    one-time warning that an untrained model runs with MSDA off. Works on the encoder maps and
    the decoder handed to it by `TFCSegFormer`; it never runs the encoder itself.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config  # the model's (shared): tfc_trained and the default options
        # Queries: z_t (D channels); values: the decoder's projections (see the module docstring).
        self.msda = MSDeformAttn(config.decoder_dim, config.tfc.msda_levels,
                                 config.tfc.msda_heads, config.tfc.msda_points)
        # level -> (key of the projection's weights, (R_w^T, R_b)); see `similarity_basis`
        self._bases: dict[int, tuple[tuple, tuple[torch.Tensor, torch.Tensor]]] = {}
        # (key of the weights it is folded from, SparseLogitUpdate.fold()); see sparse_update
        self._folded_update: tuple[tuple, dict[str, torch.Tensor]] | None = None
        self._warned_untrained = False

    # ---- inference ------------------------------------------------------------------------
    def msda_enabled(self, options: TFCOptions) -> bool:
        """Whether sparse MSDA runs at inference: asked for, and the module is trained."""
        if not options.msda:
            return False
        if not self.config.tfc_trained:
            if not self._warned_untrained:
                warnings.warn(UNTRAINED_MSDA, stacklevel=4)
                self._warned_untrained = True
            return False
        return True

    def similarity_basis(self, projection: nn.Linear, level: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(R_w^T [C_l, r], R_b [r]) with <P_l u + b_l, P_l v + b_l> = <R_w u + R_b, R_w v + R_b>
        for all u, v (fp32, or fp64 for a float64 model; r = min(D, C_l + 1)); `projection` is
        the decoder's P_l, b_l.

        With M = [P_l | b_l] (D x (C_l+1)) and its QR factorisation M = Q R, Q has orthonormal
        columns, so <M ũ, M ṽ> = <R ũ, R ṽ> (ũ = [u; 1]): the cosine of two projected features
        is the cosine of their images under R, in C_l + 1 dimensions instead of D (65 instead
        of 256 for B0's level 2). Bilinear resizing commutes with the affine map (its weights
        sum to 1), so the map is applied at the level's own resolution and its r channels
        resized."""
        lin = projection
        key = (tensor_key(lin.weight), tensor_key(lin.bias))
        if level not in self._bases or self._bases[level][0] != key:
            with torch.inference_mode(False), torch.no_grad(), \
                    torch.autocast(lin.weight.device.type, enabled=False):  # (see AllMLPDecoder.folded)
                # [D, C_l + 1], factorised in float64 on the CPU (some devices lack float64)
                m = torch.cat([lin.weight, lin.bias[:, None]], 1).detach().cpu().double()
                dtype = torch.promote_types(lin.weight.dtype, torch.float32)  # fp32, or fp64
                r = torch.linalg.qr(m, mode="r").R.to(lin.weight.device, dtype)  # [r, C_l + 1]
            self._bases[level] = (key, (r[:, :-1].t().contiguous(), r[:, -1].contiguous()))
        return self._bases[level][1]

    def unit_rows(self, decoder: AllMLPDecoder, level: int, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """u = x̂^l / |x̂^l| as rows [B*h4*w4, r] in the reduced basis (in fp32 at least, outside
        autocast). Level 2 is mapped at its own resolution and then resized (r channels: 4x
        fewer rows through the matmul than mapping after the resize)."""
        rw_t, r_b = self.similarity_basis(decoder.projection(level), level)
        x = x1 if level == 1 else x2
        y = torch.addmm(r_b, image_to_rows(x).to(r_b.dtype), rw_t)  # [B*h_l*w_l, r]
        if level == 2:
            y = upsample_to_rows(rows_to_image(y, x.shape[0], *x.shape[-2:]), tuple(x1.shape[-2:]))
        if torch.is_grad_enabled() and y.requires_grad:
            return F.normalize(y, dim=1)  # out of place: autograd keeps its inputs
        return y.div_(torch.linalg.vector_norm(y, dim=1, keepdim=True).clamp_min_(1e-12))

    def _keyframe_unit(self, decoder: AllMLPDecoder, state: KeyframeState, level: int) -> torch.Tensor:
        key = f"unit{level}"
        if key not in state.cache:
            with no_autocast(state.x1):
                state.cache[key] = self.unit_rows(decoder, level, state.x1, state.x2)
        return state.cache[key]

    def _update_maps(self, decoder: AllMLPDecoder) -> tuple[SparseLogitUpdate, dict[str, torch.Tensor]]:
        update = SparseLogitUpdate(self, decoder)
        key = update.key()
        if self._folded_update is None or self._folded_update[0] != key:
            self._folded_update = (key, update.fold())
        return update, self._folded_update[1]

    def sparse_update(self, decoder: AllMLPDecoder, head, x1_rows: torch.Tensor, up2_rows: torch.Tensor,
                      points: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor,
                      state: KeyframeState, query_dtype: torch.dtype | None = None) -> torch.Tensor:
        """Sparse MSDA's logit updates [q, K] of the selected rows `points` [q] (indices into
        the batch's B*h4*w4 rows, ascending): step 4 at inference (`SparseLogitUpdate`), from
        the folded `head` and the frame's per-point rows (`level_rows`), outside autocast but
        for the query linear in `query_dtype` (`sparse_query_dtype`: bf16, or None). The
        keyframe's class-space values are cached in its state."""
        z = head.features_rows(state.base[points], x1_rows[points], up2_rows[points])  # [q, D]
        update, folded = self._update_maps(decoder)
        dtype = folded["w_co"].dtype
        n_levels = self.msda.n_levels
        h4, w4 = x1.shape[-2:]
        own = [x1, x2][:n_levels]
        key_levels = [(3, state.x3), (4, state.x4)][:max(0, n_levels - 2)]
        if "class_values" not in state.cache:  # [B, h_l*w_l, M, K] per level
            state.cache["class_values"] = [update.class_values(folded, lv, x) for lv, x in key_levels]
        key_values = state.cache["class_values"]
        out = z.new_empty(z.shape[0], folded["w_co"].shape[0], dtype=dtype)
        bounds = torch.searchsorted(points, torch.arange(x1.shape[0] + 1, device=points.device) * (h4 * w4)).tolist()
        for b in range(x1.shape[0]):  # one frame of the batch at a time
            lo, hi = bounds[b], bounds[b + 1]
            if lo == hi:
                continue
            maps = [(update.with_ones(x[b:b + 1], dtype)[0], tuple(x.shape[-2:])) for x in own]
            key_maps = [(v[b:b + 1], tuple(x.shape[-2:])) for v, (_, x) in zip(key_values, key_levels)]
            out[lo:hi] = update(folded, z[lo:hi], points[lo:hi] - b * h4 * w4, (h4, w4), maps, key_maps,
                                query_dtype)
        return out

    def similarity(self, decoder: AllMLPDecoder, x1: torch.Tensor, x2: torch.Tensor,
                   state: KeyframeState, level: int) -> torch.Tensor:
        """w_t [B, h4, w4] of a frame's stage-1/2 maps to its keyframe's, at `level` (step 2 of
        the module docstring; eval)."""
        unit_k = self._keyframe_unit(decoder, state, level)
        with no_autocast(x1):
            unit_t = self.unit_rows(decoder, level, x1, x2)
            return similarity_from_rows(unit_k, unit_t).view(x1.shape[0], *x1.shape[-2:])

    def non_keyframe(self, decoder: AllMLPDecoder, x1: torch.Tensor, x2: torch.Tensor,
                     state: KeyframeState, options: TFCOptions,
                     similarity: torch.Tensor | None = None) -> tuple[torch.Tensor, NonKeyframeInfo]:
        """Logits rows [B*h4*w4, K] of a non-keyframe from its stage-1/2 maps and its keyframe's
        state (eval; steps 2-6 of the module docstring), and `NonKeyframeInfo`. `similarity`:
        step 2's w_t at `options.similarity_level` if the caller has it already.

        The interpolation runs on logits: the classifier is affine per point, so
        classifier(ŵ z_k + (1 - ŵ) z_t) = ŵ logits_k + (1 - ŵ) classifier(z_t), with K channels
        instead of D and without z_k."""
        b, size = x1.shape[0], tuple(x1.shape[-2:])
        if similarity is None:
            similarity = self.similarity(decoder, x1, x2, state, options.similarity_level)
        elif tuple(similarity.shape) != (b, *size):
            raise ValueError(f"similarity {tuple(similarity.shape)} is not one value per point "
                             f"of the 1/4 map {(b, *size)}")
        msda = self.msda_enabled(options)
        head = decoder.folded(state.base.dtype)
        query_dtype = sparse_query_dtype(x1.device.type)
        with no_autocast(x1):
            x1_rows, up2_rows = level_rows(x1, x2, state.base.dtype)  # [B*h4*w4, C_1 / C_2]
            rows = head.logits_rows(state.base, x1_rows, up2_rows)  # [B*h4*w4, K], no MSDA yet
            select = similarity < options.msda_threshold if msda else None  # strictly below
            count = int(select.sum()) if msda else 0
            gated = None
            if count:  # step 4 on the selected rows only, as a logit update (SparseLogitUpdate)
                points = select.reshape(-1).nonzero().squeeze(1)  # [q] row indices, batch-major
                delta = self.sparse_update(decoder, head, x1_rows, up2_rows, points, x1, x2, state,
                                           query_dtype=query_dtype)  # [q, K]
                if options.msda_gate > 0:
                    gated = (points, rows[points])  # the selected rows without MSDA, [q, K]
                rows.index_add_(0, points, delta.to(rows.dtype))
        weight = interpolation_weight(similarity, options)
        if weight is not None:
            rows = torch.lerp(rows, state.logits, weight.reshape(-1, 1).to(rows.dtype))
        if gated is not None:
            points, plain = gated
            if weight is not None:
                plain = torch.lerp(plain, state.logits[points], weight.reshape(-1, 1)[points].to(rows.dtype))
            rows[points] = gate_msda(rows[points], plain, options.msda_gate)
        share = count / similarity.numel() if msda else 0.0
        return rows, NonKeyframeInfo(similarity=similarity, msda_share=share)

    # ---- training -------------------------------------------------------------------------
    def clip(self, decoder: AllMLPDecoder, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor,
             x4: torch.Tensor, batch: int, options: TFCOptions) -> ClipOutput:
        """The differentiable pass over a clip from its encoder maps: x1, x2 of every frame
        [B*T, C, ...] (index b*T + i, frame 0 the keyframe) and x3, x4 of the keyframes
        [B, C, ...], with the plain decoder (BatchNorm over all B*T frames in training). MSDA
        runs on the points below `options.msda_threshold` when `options.msda` is on, whether
        or not `tfc_trained` is set (this is how it is trained)."""
        b, t = batch, x1.shape[0] // batch
        size = x1.shape[-2:]
        p1, p2 = decoder.project(1, x1), decoder.project(2, x2)  # [B*T, D, own resolution]
        p3, p4 = decoder.project(3, x3), decoder.project(4, x4)  # [B, D, own resolution]

        def per_frame(x: torch.Tensor) -> torch.Tensor:  # keyframe [B, ...] -> [B*T, ...]
            return x[:, None].expand(b, t, *x.shape[1:]).flatten(0, 1)

        hat1, hat2 = resize(p1, size), resize(p2, size)
        z = decoder.fuse([hat1, hat2, per_frame(resize(p3, size)), per_frame(resize(p4, size))])
        d, h, w = z.shape[1:]
        z = z.view(b, t, d, h, w)
        z_k, z_t = z[:, 0], z[:, 1:]  # [B, D, h, w], [B, T-1, D, h, w]

        unit = unit_features(hat1 if options.similarity_level == 1 else hat2).view(b, t, d, h, w)
        similarity = similarity_from_units(unit[:, :1], unit[:, 1:])  # [B, T-1, h, w]

        share = 0.0
        if options.msda and t > 1:
            n = t - 1
            select = (similarity < options.msda_threshold).flatten(0, 1)  # [B*(T-1), h, w]

            def non_key(x: torch.Tensor) -> torch.Tensor:  # [B*T, ...] -> [B*(T-1), ...]
                return x.view(b, t, *x.shape[1:])[:, 1:].flatten(0, 1)

            def repeat(x: torch.Tensor) -> torch.Tensor:  # [B, ...] -> [B*(T-1), ...]
                return x[:, None].expand(b, n, *x.shape[1:]).flatten(0, 1)

            maps = [non_key(p1), non_key(p2), repeat(p3), repeat(p4)][:self.msda.n_levels]
            value = self.msda.project_value(flatten_levels(maps))
            shapes, starts = level_layout([tuple(m.shape[-2:]) for m in maps], z.device)
            z_t = sparse_msda(self.msda, z_t.flatten(0, 1), select, value, shapes, starts,
                              value_projected=True).view(b, n, d, h, w)
            share = float(select.float().mean())
        weight = interpolation_weight(similarity, options)
        z_t = interpolate(z_t, z_k[:, None], weight)
        logits = decoder.classify(torch.cat([z_k[:, None], z_t], 1).flatten(0, 1))
        return ClipOutput(logits=logits.view(b, t, *logits.shape[1:]), similarity=similarity,
                          msda_share=share)
