// CPU kernels of the ops tfcseg::ms_deform_attn and tfcseg::ms_deform_attn_backward.
//
// The schemas are defined in Python (tfcseg/ops/library.py); this file only adds kernels for the
// CPU dispatch key. tfcseg/ops/build.py compiles it on first use (g++ -O3 -fopenmp -shared)
// and loads it with torch.ops.load_library; without it the ops run their pure-PyTorch
// CompositeExplicitAutograd kernels, which define the semantics implemented here:
//
//   out[n, q, m, :] = sum_{l, p} a[n, q, m, l, p] * bilinear(value_l[n, :, :, m, :], x, y)
//   x = loc_x * W_l - 0.5,  y = loc_y * H_l - 0.5   (grid_sample, align_corners=False)
//
// with each of the four corners outside the H_l x W_l map contributing zero (zero padding);
// a non-finite location or weight makes the output NaN, as in the PyTorch kernel.
// value is read in its own [N, S, M, Dh] layout: a corner is Dh contiguous numbers, and the
// innermost loops run over them (vectorised by the compiler). Accumulation is in
// at::opmath_type (float for bfloat16 / half, else the dtype itself).
//
// Headers: only what is used (no <torch/extension.h>), to keep the build short.

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <tuple>
#include <vector>

namespace {

struct Level {
  int64_t h, w, start;
};

struct Sizes {
  int64_t n, s, m, dh, q, l, p;
};

// Checks the arguments (shapes, dtypes, level layout inside value) and returns the sizes;
// the level table is read from spatial_shapes / level_start_index.
Sizes check_args(const at::Tensor& value, const at::Tensor& spatial_shapes,
                 const at::Tensor& level_start_index, const at::Tensor& loc,
                 const at::Tensor& attn, std::vector<Level>& levels, const char* name) {
  TORCH_CHECK(value.dim() == 4, name, ": value must be [N, S, M, Dh], got ", value.sizes());
  TORCH_CHECK(loc.dim() == 6 && loc.size(5) == 2, name,
              ": sampling_locations must be [N, Q, M, L, P, 2], got ", loc.sizes());
  Sizes z{value.size(0), value.size(1), value.size(2), value.size(3),
          loc.size(1),   loc.size(3),   loc.size(4)};
  TORCH_CHECK(loc.size(0) == z.n && loc.size(2) == z.m, name, ": sampling_locations ",
              loc.sizes(), " do not match value ", value.sizes());
  TORCH_CHECK(attn.dim() == 5 && attn.sizes() == loc.sizes().slice(0, 5), name,
              ": attention_weights must be [N, Q, M, L, P] = ", loc.sizes().slice(0, 5),
              ", got ", attn.sizes());
  TORCH_CHECK(at::isFloatingType(value.scalar_type()), name,
              ": value must be floating point, got ", value.scalar_type());
  TORCH_CHECK(loc.scalar_type() == value.scalar_type() &&
                  attn.scalar_type() == value.scalar_type(),
              name, ": sampling_locations and attention_weights must have value's dtype (",
              value.scalar_type(), "), got ", loc.scalar_type(), " and ", attn.scalar_type());
  TORCH_CHECK(!at::isFloatingType(spatial_shapes.scalar_type()) &&
                  !at::isFloatingType(level_start_index.scalar_type()),
              name, ": spatial_shapes and level_start_index must be integer tensors");
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(0) == z.l &&
                  spatial_shapes.size(1) == 2,
              name, ": spatial_shapes must be [L, 2] with L = ", z.l, ", got ",
              spatial_shapes.sizes());
  TORCH_CHECK(level_start_index.numel() == z.l, name, ": level_start_index must have L = ",
              z.l, " entries, got ", level_start_index.numel());
  const at::Tensor shapes = spatial_shapes.to(at::kLong).contiguous();
  const at::Tensor starts = level_start_index.to(at::kLong).contiguous();
  const int64_t* hw = shapes.data_ptr<int64_t>();
  const int64_t* st = starts.data_ptr<int64_t>();
  levels.clear();
  for (int64_t l = 0; l < z.l; ++l) {
    Level lv{hw[2 * l], hw[2 * l + 1], st[l]};
    // the level must lie inside value: the kernels read (and write) memory by these numbers
    TORCH_CHECK(lv.h >= 0 && lv.w >= 0 && lv.start >= 0 && lv.start <= z.s &&
                    (lv.w == 0 || lv.h <= (z.s - lv.start) / lv.w),
                name, ": level ", l, " (", lv.h, " x ", lv.w, " from ", lv.start,
                ") does not fit in value's S = ", z.s);
    levels.push_back(lv);
  }
  return z;
}

// One sampling point in one level: its four corners' bilinear weights and element offsets
// into value ([N, S, M, Dh] with n and m already applied). A corner outside the map has
// weight 0 and offset -1.
template <typename acc_t>
struct Corners {
  acc_t fx, fy;       // fractional parts (for the gradient)
  acc_t w[4];         // (x0, y0), (x0 + 1, y0), (x0, y0 + 1), (x0 + 1, y0 + 1)
  int64_t off[4];
  bool any;           // false: every corner outside (or a non-finite location)
  bool finite;        // the location is finite
};

template <typename acc_t>
inline Corners<acc_t> corners(acc_t lx, acc_t ly, const Level& lv, int64_t row /* M * Dh */,
                              int64_t head /* m * Dh */) {
  Corners<acc_t> c;
  const acc_t x = lx * static_cast<acc_t>(lv.w) - acc_t(0.5);
  const acc_t y = ly * static_cast<acc_t>(lv.h) - acc_t(0.5);
  // some corner can be inside only for -1 <= x < W and -1 <= y < H (NaN fails too);
  // this also keeps the integer conversion below in range.
  c.any = x >= acc_t(-1) && x < static_cast<acc_t>(lv.w) && y >= acc_t(-1) &&
          y < static_cast<acc_t>(lv.h);
  if (!c.any) {
    c.finite = std::isfinite(x) && std::isfinite(y);
    return c;
  }
  c.finite = true;
  const acc_t x0f = std::floor(x), y0f = std::floor(y);
  c.fx = x - x0f;
  c.fy = y - y0f;
  const int64_t x0 = static_cast<int64_t>(x0f), y0 = static_cast<int64_t>(y0f);
  const acc_t wx[2] = {acc_t(1) - c.fx, c.fx}, wy[2] = {acc_t(1) - c.fy, c.fy};
  for (int k = 0; k < 4; ++k) {
    const int64_t cx = x0 + (k & 1), cy = y0 + (k >> 1);
    const bool inside = cx >= 0 && cx < lv.w && cy >= 0 && cy < lv.h;
    c.w[k] = inside ? wx[k & 1] * wy[k >> 1] : acc_t(0);
    c.off[k] = inside ? (lv.start + cy * lv.w + cx) * row + head : -1;
  }
  return c;
}

// On x86-64 with GCC the hot loops are compiled three times (AVX-512, AVX2 + FMA, baseline
// x86-64) and the loader picks the best one for the CPU it runs on (function multiversioning),
// so the cached library stays portable while using the vector units it finds (-march=native
// would tie it to the machine that built it).
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MSDA_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MSDA_CLONES
#endif

// ---- forward --------------------------------------------------------------------------------

// queries nq in [begin, end) (nq = n * Q + q): all heads, levels and points of each
template <typename scalar_t>
MSDA_CLONES void forward_range(const scalar_t* value, const scalar_t* loc, const scalar_t* attn,
                               scalar_t* out, const Sizes& z, const Level* levels,
                               int64_t begin, int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t dh = z.dh, row = z.m * z.dh, lp = z.l * z.p;
  std::vector<acc_t> acc(dh);
  const std::vector<scalar_t> zeros(dh, scalar_t(0));  // the "value" of a corner outside
  for (int64_t nq = begin; nq < end; ++nq) {
    const scalar_t* v_n = value + (nq / z.q) * z.s * row;
    for (int64_t m = 0; m < z.m; ++m) {
      const int64_t nqm = nq * z.m + m;
      const scalar_t* loc_p = loc + nqm * lp * 2;
      const scalar_t* attn_p = attn + nqm * lp;
      acc_t* a = acc.data();
      for (int64_t d = 0; d < dh; ++d) a[d] = acc_t(0);
      bool nan = false;
      for (int64_t l = 0; l < z.l; ++l) {
        for (int64_t p = 0; p < z.p; ++p) {
          const int64_t i = l * z.p + p;
          const Corners<acc_t> c = corners<acc_t>(static_cast<acc_t>(loc_p[2 * i]),
                                                  static_cast<acc_t>(loc_p[2 * i + 1]),
                                                  levels[l], row, m * dh);
          const acc_t w = static_cast<acc_t>(attn_p[i]);
          if (!c.any) {
            // a point outside adds 0, unless its location or weight is not finite: NaN then,
            // as from the PyTorch kernel (a NaN must not vanish into a zero)
            nan = nan || !c.finite || !std::isfinite(w);
            continue;
          }
          const acc_t w0 = w * c.w[0], w1 = w * c.w[1], w2 = w * c.w[2], w3 = w * c.w[3];
          const scalar_t* v0 = c.off[0] >= 0 ? v_n + c.off[0] : zeros.data();
          const scalar_t* v1 = c.off[1] >= 0 ? v_n + c.off[1] : zeros.data();
          const scalar_t* v2 = c.off[2] >= 0 ? v_n + c.off[2] : zeros.data();
          const scalar_t* v3 = c.off[3] >= 0 ? v_n + c.off[3] : zeros.data();
          for (int64_t d = 0; d < dh; ++d) {
            a[d] += w0 * static_cast<acc_t>(v0[d]) + w1 * static_cast<acc_t>(v1[d]) +
                    w2 * static_cast<acc_t>(v2[d]) + w3 * static_cast<acc_t>(v3[d]);
          }
        }
      }
      if (nan) {
        for (int64_t d = 0; d < dh; ++d) a[d] = std::numeric_limits<acc_t>::quiet_NaN();
      }
      scalar_t* o = out + nqm * dh;
      for (int64_t d = 0; d < dh; ++d) o[d] = static_cast<scalar_t>(a[d]);
    }
  }
}

template <typename scalar_t>
void forward_kernel(const scalar_t* value, const scalar_t* loc, const scalar_t* attn,
                    scalar_t* out, const Sizes& z, const std::vector<Level>& levels) {
  at::parallel_for(0, z.n * z.q, 8, [&](int64_t begin, int64_t end) {
    forward_range<scalar_t>(value, loc, attn, out, z, levels.data(), begin, end);
  });
}

at::Tensor ms_deform_attn_cpu(const at::Tensor& value_, const at::Tensor& spatial_shapes,
                              const at::Tensor& level_start_index, const at::Tensor& loc_,
                              const at::Tensor& attn_) {
  std::vector<Level> levels;
  const Sizes z = check_args(value_, spatial_shapes, level_start_index, loc_, attn_, levels,
                             "tfcseg::ms_deform_attn");
  const at::Tensor value = value_.contiguous(), loc = loc_.contiguous(), attn = attn_.contiguous();
  at::Tensor out = at::empty({z.n, z.q, z.m * z.dh}, value.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, value.scalar_type(),
                                  "tfcseg::ms_deform_attn", [&] {
    forward_kernel<scalar_t>(value.const_data_ptr<scalar_t>(), loc.const_data_ptr<scalar_t>(),
                             attn.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(),
                             z, levels);
  });
  return out;
}

// ---- backward -------------------------------------------------------------------------------
// One task per (n, m, l): it alone writes grad_value's [n, level l, m, :] slice (levels are
// disjoint ranges of S), and grad_loc / grad_attn at [n, :, m, l, :]. No atomics and no
// per-thread copies, and the result does not depend on the number of threads.

// tasks (n * M + m) * L + l in [begin, end)
template <typename scalar_t, typename gv_t>
MSDA_CLONES void backward_range(const scalar_t* value, const scalar_t* loc,
                                const scalar_t* attn, const scalar_t* grad_out,
                                gv_t* grad_value, scalar_t* grad_loc, scalar_t* grad_attn,
                                const Sizes& z, const Level* levels, int64_t begin,
                                int64_t end) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t dh = z.dh, row = z.m * z.dh, lp = z.l * z.p;
  const std::vector<scalar_t> zeros(dh, scalar_t(0));
  for (int64_t task = begin; task < end; ++task) {
    const int64_t l = task % z.l, m = (task / z.l) % z.m, n = task / (z.l * z.m);
    const Level& lv = levels[l];
    const scalar_t* v_n = value + n * z.s * row;
    gv_t* gv_n = grad_value + n * z.s * row;
    for (int64_t q = 0; q < z.q; ++q) {
      const int64_t nqm = (n * z.q + q) * z.m + m;
      const scalar_t* g = grad_out + nqm * dh;
      for (int64_t p = 0; p < z.p; ++p) {
        const int64_t i = nqm * lp + l * z.p + p;  // index into attn (and loc / 2)
        const Corners<acc_t> c = corners<acc_t>(static_cast<acc_t>(loc[2 * i]),
                                                static_cast<acc_t>(loc[2 * i + 1]), lv,
                                                row, m * dh);
        const acc_t w = static_cast<acc_t>(attn[i]);
        if (!c.any) {  // zero gradients; NaN where the forward gave NaN (see there)
          constexpr acc_t nan = std::numeric_limits<acc_t>::quiet_NaN();
          grad_attn[i] = static_cast<scalar_t>(c.finite ? acc_t(0) : nan);
          grad_loc[2 * i] = grad_loc[2 * i + 1] =
              static_cast<scalar_t>(c.finite && std::isfinite(w) ? acc_t(0) : nan);
          continue;
        }
        const scalar_t* v0 = c.off[0] >= 0 ? v_n + c.off[0] : zeros.data();
        const scalar_t* v1 = c.off[1] >= 0 ? v_n + c.off[1] : zeros.data();
        const scalar_t* v2 = c.off[2] >= 0 ? v_n + c.off[2] : zeros.data();
        const scalar_t* v3 = c.off[3] >= 0 ? v_n + c.off[3] : zeros.data();
        // d bilinear / dx = gx0 (v1 - v0) + gx1 (v3 - v2)
        // d bilinear / dy = gy0 (v2 - v0) + gy1 (v3 - v1)
        const acc_t gx0 = acc_t(1) - c.fy, gx1 = c.fy;
        const acc_t gy0 = acc_t(1) - c.fx, gy1 = c.fx;
        acc_t dot_s = 0, dot_x = 0, dot_y = 0;
#pragma omp simd reduction(+ : dot_s, dot_x, dot_y)
        for (int64_t d = 0; d < dh; ++d) {
          const acc_t gd = static_cast<acc_t>(g[d]);
          const acc_t a0 = static_cast<acc_t>(v0[d]), a1 = static_cast<acc_t>(v1[d]);
          const acc_t a2 = static_cast<acc_t>(v2[d]), a3 = static_cast<acc_t>(v3[d]);
          dot_s += gd * (c.w[0] * a0 + c.w[1] * a1 + c.w[2] * a2 + c.w[3] * a3);
          dot_x += gd * (gx0 * (a1 - a0) + gx1 * (a3 - a2));
          dot_y += gd * (gy0 * (a2 - a0) + gy1 * (a3 - a1));
        }
        grad_attn[i] = static_cast<scalar_t>(dot_s);
        grad_loc[2 * i] = static_cast<scalar_t>(w * dot_x * static_cast<acc_t>(lv.w));
        grad_loc[2 * i + 1] = static_cast<scalar_t>(w * dot_y * static_cast<acc_t>(lv.h));
        for (int k = 0; k < 4; ++k) {
          if (c.off[k] < 0) continue;
          const acc_t wk = w * c.w[k];
          gv_t* gv = gv_n + c.off[k];
          for (int64_t d = 0; d < dh; ++d) {
            gv[d] = static_cast<gv_t>(static_cast<acc_t>(gv[d]) + wk * static_cast<acc_t>(g[d]));
          }
        }
      }
    }
  }
}

template <typename scalar_t, typename gv_t>
void backward_kernel(const scalar_t* value, const scalar_t* loc, const scalar_t* attn,
                     const scalar_t* grad_out, gv_t* grad_value, scalar_t* grad_loc,
                     scalar_t* grad_attn, const Sizes& z, const std::vector<Level>& levels) {
  at::parallel_for(0, z.n * z.m * z.l, 1, [&](int64_t begin, int64_t end) {
    backward_range<scalar_t, gv_t>(value, loc, attn, grad_out, grad_value, grad_loc, grad_attn,
                                   z, levels.data(), begin, end);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& value_, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& loc_, const at::Tensor& attn_,
    const at::Tensor& grad_out_) {
  std::vector<Level> levels;
  const Sizes z = check_args(value_, spatial_shapes, level_start_index, loc_, attn_, levels,
                             "tfcseg::ms_deform_attn_backward");
  TORCH_CHECK(grad_out_.dim() == 3 && grad_out_.size(0) == z.n && grad_out_.size(1) == z.q &&
                  grad_out_.size(2) == z.m * z.dh,
              "tfcseg::ms_deform_attn_backward: grad_output must be [N, Q, M*Dh] = [", z.n,
              ", ", z.q, ", ", z.m * z.dh, "], got ", grad_out_.sizes());
  TORCH_CHECK(grad_out_.scalar_type() == value_.scalar_type(),
              "tfcseg::ms_deform_attn_backward: grad_output must have value's dtype (",
              value_.scalar_type(), "), got ", grad_out_.scalar_type());
  const at::Tensor value = value_.contiguous(), loc = loc_.contiguous(), attn = attn_.contiguous();
  const at::Tensor grad_out = grad_out_.contiguous();
  // grad_value accumulates over queries: in float for bfloat16 / half, cast at the end
  const bool reduced = value.scalar_type() == at::kBFloat16 || value.scalar_type() == at::kHalf;
  at::Tensor grad_value = at::zeros(value.sizes(), value.options().dtype(
                                                       reduced ? at::kFloat : value.scalar_type()));
  at::Tensor grad_loc = at::empty(loc.sizes(), loc.options());
  at::Tensor grad_attn = at::empty(attn.sizes(), attn.options());
  if (grad_attn.numel() > 0 && value.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, value.scalar_type(),
                                    "tfcseg::ms_deform_attn_backward", [&] {
      using gv_t = at::opmath_type<scalar_t>;
      backward_kernel<scalar_t, gv_t>(
          value.const_data_ptr<scalar_t>(), loc.const_data_ptr<scalar_t>(),
          attn.const_data_ptr<scalar_t>(), grad_out.const_data_ptr<scalar_t>(),
          grad_value.mutable_data_ptr<gv_t>(), grad_loc.mutable_data_ptr<scalar_t>(),
          grad_attn.mutable_data_ptr<scalar_t>(), z, levels);
    });
  } else {
    grad_loc.zero_();
    grad_attn.zero_();
  }
  if (reduced) grad_value = grad_value.to(value.scalar_type());
  return {grad_value, grad_loc, grad_attn};
}

}  // namespace

TORCH_LIBRARY_IMPL(tfcseg, CPU, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_cpu);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cpu);
}
