// CPU kernel of the op tfcseg::attention(q, k, v) = softmax(q k^T / sqrt(d)) v.
//
// The schema and the pure-PyTorch kernel (F.scaled_dot_product_attention, every device) are
// in tfcseg/ops/library.py and ops/attention.py; tfcseg/ops/build.py compiles it with msda.cpp
// into one library. q [B, M, N, d], k / v [B, M, S, d] (any strides with the last dimension
// contiguous) -> [B, M, N, d], returned as a view of [B, N, M, d] memory (what SegFormer's
// attention reshapes to next, without a copy).
//
// The fast path (bfloat16 tensors, a CPU with AVX512-BF16, d a multiple of 16 and <= 128,
// S <= 4096) computes, per (b, m) and block of QB queries:
//   scores  = q k^T with vdpbf16ps (bf16 products, fp32 sums), 16 keys per vector lane set;
//   softmax = exp2((s - max) * log2(e) / sqrt(d)) in fp32 (own polynomial exp2, rel. error
//             ~1e-7), normalised by the fp32 sum at the end;
//   out     = p v with vdpbf16ps (the probabilities rounded to bf16, fp32 sums), written as
//             bf16.
// k and v are repacked once per (b, m): k as [S/16][d/2][16 keys][2], v as [S/2][d][2 keys],
// the layouts vdpbf16ps's pairs want.
//
// The fp32 path (float32 tensors, a CPU with AVX-512F, the same shapes) does the same in fp32
// throughout (FMAs for q k^T and p v, the same exp2 softmax), in groups of QG queries so the
// scores stay in L1: equal to PyTorch's fp32 SDPA up to float rounding (~1e-6 at unit scale),
// ~1.35x faster than its flash kernel at SegFormer-B0's shapes on a 2-core Zen 4.
//
// Everything else (other or mixed dtypes, CPUs without the instructions, other shapes) runs
// at::scaled_dot_product_attention.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define TFC_ATTN_X86 1
#endif

namespace {

constexpr int64_t QB = 32;          // queries per task
constexpr int64_t MAX_S = 4096;     // longer key sequences: PyTorch's kernel

#ifdef TFC_ATTN_X86
#define TFC_BF16 __attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl,avx512dq")))
#define TFC_F32 __attribute__((target("avx512f")))

struct Dims {
  int64_t n, s, d, s32;                 // s32: s rounded up to the packed block (32 bf16, 16 fp32)
  int64_t q_sb, q_sm, q_sn;             // strides of q (elements)
  int64_t k_sb, k_sm, k_sn, v_sb, v_sm, v_sn;
  int64_t m;
};

TFC_F32 static inline __m512 exp2_ps(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-127.0f));
  const __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(x, n);  // [-0.5, 0.5]
  __m512 p = _mm512_set1_ps(1.5403530393381608e-4f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3333558146428443e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(9.618129107628477e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.550410866482158e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(2.402265069591007e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(6.931471805599453e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

TFC_BF16 static inline __m512bh as_bh(__m512i x) { return (__m512bh)x; }

// k [S, d] -> kp [S32/16][d/2][16][2];  v [S, d] -> vp [S32/2][d][2] (zero padded)
TFC_BF16 static void pack_kv(const uint16_t* k, const uint16_t* v, int64_t k_sn, int64_t v_sn,
                             const Dims& z, uint16_t* kp, uint16_t* vp) {
  const int64_t d = z.d, half = d / 2;
  std::memset(kp, 0, sizeof(uint16_t) * z.s32 * d);
  std::memset(vp, 0, sizeof(uint16_t) * z.s32 * d);
  for (int64_t j = 0; j < z.s; ++j) {
    const uint16_t* kr = k + j * k_sn;
    uint16_t* kb = kp + (j / 16) * half * 32 + (j % 16) * 2;
    for (int64_t p = 0; p < half; ++p) {
      kb[p * 32] = kr[2 * p];
      kb[p * 32 + 1] = kr[2 * p + 1];
    }
    const uint16_t* vr = v + j * v_sn;
    uint16_t* vb = vp + (j / 2) * d * 2 + (j % 2);
    for (int64_t i = 0; i < d; ++i) vb[2 * i] = vr[i];
  }
}

// G queries at a time, DV = d / 16 output vectors per query
template <int DV>
TFC_BF16 static void block(const uint16_t* qblk, int64_t nq, const uint16_t* kp,
                           const uint16_t* vp, const Dims& z, float* sc, uint16_t* pr,
                           float* sums, uint16_t* out, int64_t out_sn) {
  constexpr int G = DV <= 4 ? 4 : 2;
  const int64_t d = z.d, half = d / 2, s32 = z.s32, s = z.s;
  const int64_t nq_pad = (nq + G - 1) / G * G;
  // ---- scores [nq_pad][s32] ----
  for (int64_t g0 = 0; g0 < nq_pad; g0 += 4) {
    const uint16_t* q0 = qblk + g0 * d;
    for (int64_t kb = 0; kb < s32 / 16; kb += 2) {
      __m512 acc[4][2];
      for (int g = 0; g < 4; ++g) acc[g][0] = acc[g][1] = _mm512_setzero_ps();
      const uint16_t* k0 = kp + kb * half * 32;
      const uint16_t* k1 = k0 + half * 32;
      for (int64_t p = 0; p < half; ++p) {
        const __m512bh ka = as_bh(_mm512_loadu_si512(k0 + p * 32));
        const __m512bh kc = as_bh(_mm512_loadu_si512(k1 + p * 32));
        for (int g = 0; g < 4; ++g) {
          int32_t pair;
          std::memcpy(&pair, q0 + g * d + 2 * p, 4);
          const __m512bh qb = as_bh(_mm512_set1_epi32(pair));
          acc[g][0] = _mm512_dpbf16_ps(acc[g][0], qb, ka);
          acc[g][1] = _mm512_dpbf16_ps(acc[g][1], qb, kc);
        }
      }
      for (int g = 0; g < 4; ++g) {
        _mm512_storeu_ps(sc + (g0 + g) * s32 + kb * 16, acc[g][0]);
        _mm512_storeu_ps(sc + (g0 + g) * s32 + kb * 16 + 16, acc[g][1]);
      }
    }
  }
  // ---- softmax numerators (bf16) and fp32 sums ----
  const float scale = static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(d)));
  const __m512 vscale = _mm512_set1_ps(scale);
  const int64_t full = s / 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (s % 16)) - 1u);
  for (int64_t r = 0; r < nq_pad; ++r) {
    const float* row = sc + r * s32;
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < full; ++i) mx = _mm512_max_ps(mx, _mm512_loadu_ps(row + 16 * i));
    if (tail) mx = _mm512_mask_max_ps(mx, tail, mx, _mm512_maskz_loadu_ps(tail, row + 16 * full));
    const __m512 vmax = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 sum = _mm512_setzero_ps();
    uint16_t* prow = pr + r * s32;
    for (int64_t i = 0; i < s32 / 16; ++i) {
      __m512 e;
      if (i < full) {
        e = exp2_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(row + 16 * i), vmax), vscale));
      } else if (i == full && tail) {
        e = exp2_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(row + 16 * i), vmax), vscale));
        e = _mm512_maskz_mov_ps(tail, e);
      } else {
        e = _mm512_setzero_ps();
      }
      sum = _mm512_add_ps(sum, e);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(prow + 16 * i),
                          (__m256i)_mm512_cvtneps_pbh(e));
    }
    sums[r] = _mm512_reduce_add_ps(sum);
  }
  // ---- out = p v ----
  const int64_t pairs = (s + 1) / 2;
  for (int64_t g0 = 0; g0 < nq_pad; g0 += G) {
    __m512 acc[G][DV];
    for (int g = 0; g < G; ++g)
      for (int t = 0; t < DV; ++t) acc[g][t] = _mm512_setzero_ps();
    for (int64_t jp = 0; jp < pairs; ++jp) {
      __m512bh vv[DV];
      for (int t = 0; t < DV; ++t) vv[t] = as_bh(_mm512_loadu_si512(vp + (jp * d + 16 * t) * 2));
      for (int g = 0; g < G; ++g) {
        int32_t pair;
        std::memcpy(&pair, pr + (g0 + g) * s32 + 2 * jp, 4);
        const __m512bh pb = as_bh(_mm512_set1_epi32(pair));
        for (int t = 0; t < DV; ++t) acc[g][t] = _mm512_dpbf16_ps(acc[g][t], pb, vv[t]);
      }
    }
    for (int g = 0; g < G; ++g) {
      if (g0 + g >= nq) break;
      const __m512 inv = _mm512_set1_ps(1.0f / sums[g0 + g]);
      uint16_t* o = out + (g0 + g) * out_sn;
      for (int t = 0; t < DV; ++t) {
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + 16 * t),
                            (__m256i)_mm512_cvtneps_pbh(_mm512_mul_ps(acc[g][t], inv)));
      }
    }
  }
}

using BlockFn = void (*)(const uint16_t*, int64_t, const uint16_t*, const uint16_t*,
                         const Dims&, float*, uint16_t*, float*, uint16_t*, int64_t);

BlockFn block_fn(int64_t d) {
  switch (d / 16) {
    case 1: return &block<1>;
    case 2: return &block<2>;
    case 3: return &block<3>;
    case 4: return &block<4>;
    case 5: return &block<5>;
    case 6: return &block<6>;
    case 7: return &block<7>;
    case 8: return &block<8>;
    default: return nullptr;
  }
}

bool cpu_has_bf16() {
  static const bool has = __builtin_cpu_supports("avx512bf16") &&
                          __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  return has;
}

// q, k, v with their last dimension contiguous, and their sizes and strides; `pad`: the
// multiple S is rounded up to in `s32` (the packed key layouts' block).
struct Prepared {
  at::Tensor q, k, v;
  Dims z{};
};

Prepared prepare(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                 int64_t pad) {
  Prepared p;
  p.q = q_in.stride(3) == 1 ? q_in : q_in.contiguous();
  p.k = k_in.stride(3) == 1 ? k_in : k_in.contiguous();
  p.v = v_in.stride(3) == 1 ? v_in : v_in.contiguous();
  Dims& z = p.z;
  z.n = p.q.size(2);
  z.s = p.k.size(2);
  z.d = p.q.size(3);
  z.m = p.q.size(1);
  z.s32 = (z.s + pad - 1) / pad * pad;
  z.q_sb = p.q.stride(0); z.q_sm = p.q.stride(1); z.q_sn = p.q.stride(2);
  z.k_sb = p.k.stride(0); z.k_sm = p.k.stride(1); z.k_sn = p.k.stride(2);
  z.v_sb = p.v.stride(0); z.v_sm = p.v.stride(1); z.v_sn = p.v.stride(2);
  return p;
}

at::Tensor attention_bf16(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in) {
  const Prepared in = prepare(q_in, k_in, v_in, 32);
  const at::Tensor &q = in.q, &k = in.k, &v = in.v;
  const Dims& z = in.z;
  const int64_t b = q.size(0), m = z.m;
  at::Tensor out = at::empty({b, z.n, m, z.d}, q.options());  // [B, N, M, d] memory
  if (z.n == 0 || b == 0 || m == 0) return out.permute({0, 2, 1, 3});
  const uint16_t* qd = reinterpret_cast<const uint16_t*>(q.data_ptr());
  const uint16_t* kd = reinterpret_cast<const uint16_t*>(k.data_ptr());
  const uint16_t* vd = reinterpret_cast<const uint16_t*>(v.data_ptr());
  uint16_t* od = reinterpret_cast<uint16_t*>(out.data_ptr());
  const int64_t bm = b * m, packed = z.s32 * z.d;
  std::vector<uint16_t> kp(bm * packed), vp(bm * packed);
  at::parallel_for(0, bm, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t bi = i / m, mi = i % m;
      pack_kv(kd + bi * z.k_sb + mi * z.k_sm, vd + bi * z.v_sb + mi * z.v_sm, z.k_sn, z.v_sn, z,
              kp.data() + i * packed, vp.data() + i * packed);
    }
  });
  const BlockFn fn = block_fn(z.d);
  const int64_t nblocks = (z.n + QB - 1) / QB;
  const int64_t out_sn = m * z.d;
  at::parallel_for(0, bm * nblocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> sc(QB * z.s32), sums(QB);
    std::vector<uint16_t> pr(QB * z.s32), qbuf(QB * z.d, 0);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t i = t / nblocks, blk = t % nblocks;
      const int64_t bi = i / m, mi = i % m;
      const int64_t n0 = blk * QB, nq = std::min<int64_t>(QB, z.n - n0);
      const uint16_t* qsrc = qd + bi * z.q_sb + mi * z.q_sm + n0 * z.q_sn;
      for (int64_t r = 0; r < nq; ++r)
        std::memcpy(qbuf.data() + r * z.d, qsrc + r * z.q_sn, sizeof(uint16_t) * z.d);
      if (nq < QB) std::memset(qbuf.data() + nq * z.d, 0, sizeof(uint16_t) * (QB - nq) * z.d);
      fn(qbuf.data(), nq, kp.data() + i * packed, vp.data() + i * packed, z, sc.data(),
         pr.data(), sums.data(), od + ((bi * z.n + n0) * m + mi) * z.d, out_sn);
    }
  });
  return out.permute({0, 2, 1, 3});
}

// ---------------------------------------------------------------------------------------
// fp32 path (AVX-512F): q is pre-multiplied by log2(e) / sqrt(d) while it is copied, so the
// fp32 scores are already in exp2's units; softmax as above (fp32 numerators kept), then
// out = p v with fp32 FMAs, divided by the fp32 sum. k is repacked as [S16/16][d][16 keys]
// (zero padded; the padded keys are masked out of max and sum), v as contiguous [S][d].
// A task is a block of QB queries, processed in groups of QG so that the scores stay in L1.

constexpr int64_t QG = 8;

// k [S, d] -> kp [S16/16][d][16];  v [S, d] -> vp [S][d]
TFC_F32 static void pack_kv_f32(const float* k, const float* v, int64_t k_sn, int64_t v_sn,
                                const Dims& z, float* kp, float* vp) {
  const int64_t d = z.d;
  std::memset(kp, 0, sizeof(float) * z.s32 * d);  // s32 holds S rounded up to 16 here
  for (int64_t j = 0; j < z.s; ++j) {
    const float* kr = k + j * k_sn;
    float* kb = kp + (j / 16) * d * 16 + (j % 16);
    for (int64_t c = 0; c < d; ++c) kb[c * 16] = kr[c];
    std::memcpy(vp + j * d, v + j * v_sn, sizeof(float) * d);
  }
}

// scores of NQ queries (rows of q, d apart) x NKB blocks of 16 keys
template <int NQ, int NKB>
TFC_F32 static inline void score_tile(const float* q, const float* kp, int64_t d, float* sc,
                                      int64_t s16) {
  __m512 acc[NQ][NKB];
  for (int g = 0; g < NQ; ++g)
    for (int t = 0; t < NKB; ++t) acc[g][t] = _mm512_setzero_ps();
  for (int64_t c = 0; c < d; ++c) {
    __m512 kv[NKB];
    for (int t = 0; t < NKB; ++t) kv[t] = _mm512_loadu_ps(kp + (t * d + c) * 16);
    for (int g = 0; g < NQ; ++g) {
      const __m512 qb = _mm512_set1_ps(q[g * d + c]);
      for (int t = 0; t < NKB; ++t) acc[g][t] = _mm512_fmadd_ps(qb, kv[t], acc[g][t]);
    }
  }
  for (int g = 0; g < NQ; ++g)
    for (int t = 0; t < NKB; ++t) _mm512_storeu_ps(sc + g * s16 + t * 16, acc[g][t]);
}

// QG queries (qg: QG rows of d, scaled, zero padded; nq of them real)
template <int DV>
TFC_F32 static void group_f32(const float* qg, int64_t nq, const float* kp, const float* vp,
                              const Dims& z, float* sc, float* out, int64_t out_sn) {
  const int64_t d = z.d, s16 = z.s32, s = z.s, nkb = s16 / 16;
  // ---- scores [QG][s16]: tiles of 8 queries x 3 key blocks (24 accumulators) ----
  static_assert(QG == 8, "score tiles are 8 queries high");
  {
    const float* q = qg;
    float* row = sc;
    int64_t kb = 0;
    for (; kb + 3 <= nkb; kb += 3) score_tile<8, 3>(q, kp + kb * d * 16, d, row + kb * 16, s16);
    switch (nkb - kb) {
      case 2: score_tile<8, 2>(q, kp + kb * d * 16, d, row + kb * 16, s16); break;
      case 1: score_tile<8, 1>(q, kp + kb * d * 16, d, row + kb * 16, s16); break;
      default: break;
    }
  }
  // ---- softmax numerators (in place) and 1 / sums ----
  float inv[QG];
  const int64_t full = s / 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (s % 16)) - 1u);
  for (int64_t r = 0; r < QG; ++r) {
    float* row = sc + r * s16;
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < full; ++i) mx = _mm512_max_ps(mx, _mm512_loadu_ps(row + 16 * i));
    if (tail) mx = _mm512_mask_max_ps(mx, tail, mx, _mm512_maskz_loadu_ps(tail, row + 16 * full));
    const __m512 vmax = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t i = 0; i < full; ++i) {
      const __m512 e = exp2_ps(_mm512_sub_ps(_mm512_loadu_ps(row + 16 * i), vmax));
      sum = _mm512_add_ps(sum, e);
      _mm512_storeu_ps(row + 16 * i, e);
    }
    if (tail) {
      __m512 e = exp2_ps(_mm512_sub_ps(_mm512_loadu_ps(row + 16 * full), vmax));
      e = _mm512_maskz_mov_ps(tail, e);
      sum = _mm512_add_ps(sum, e);
      _mm512_storeu_ps(row + 16 * full, e);
    }
    inv[r] = 1.0f / _mm512_reduce_add_ps(sum);
  }
  // ---- out = p v ----
  constexpr int GP = DV <= 2 ? 8 : (DV <= 4 ? 4 : 2);
  for (int64_t g0 = 0; g0 < nq; g0 += GP) {
    __m512 acc[GP][DV];
    for (int g = 0; g < GP; ++g)
      for (int t = 0; t < DV; ++t) acc[g][t] = _mm512_setzero_ps();
    for (int64_t j = 0; j < s; ++j) {
      __m512 vv[DV];
      for (int t = 0; t < DV; ++t) vv[t] = _mm512_loadu_ps(vp + j * d + 16 * t);
      for (int g = 0; g < GP; ++g) {
        const __m512 pb = _mm512_set1_ps(sc[(g0 + g) * s16 + j]);
        for (int t = 0; t < DV; ++t) acc[g][t] = _mm512_fmadd_ps(pb, vv[t], acc[g][t]);
      }
    }
    for (int g = 0; g < GP; ++g) {
      if (g0 + g >= nq) break;
      const __m512 iv = _mm512_set1_ps(inv[g0 + g]);
      float* o = out + (g0 + g) * out_sn;
      for (int t = 0; t < DV; ++t) _mm512_storeu_ps(o + 16 * t, _mm512_mul_ps(acc[g][t], iv));
    }
  }
}

using GroupFn = void (*)(const float*, int64_t, const float*, const float*, const Dims&, float*,
                         float*, int64_t);

GroupFn group_fn(int64_t d) {
  switch (d / 16) {
    case 1: return &group_f32<1>;
    case 2: return &group_f32<2>;
    case 3: return &group_f32<3>;
    case 4: return &group_f32<4>;
    case 5: return &group_f32<5>;
    case 6: return &group_f32<6>;
    case 7: return &group_f32<7>;
    case 8: return &group_f32<8>;
    default: return nullptr;
  }
}

bool cpu_has_avx512f() {
  static const bool has = __builtin_cpu_supports("avx512f");
  return has;
}

at::Tensor attention_f32(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in) {
  const Prepared in = prepare(q_in, k_in, v_in, 16);  // z.s32: S rounded up to 16 here
  const at::Tensor &q = in.q, &k = in.k, &v = in.v;
  const Dims& z = in.z;
  const int64_t b = q.size(0), m = z.m;
  at::Tensor out = at::empty({b, z.n, m, z.d}, q.options());  // [B, N, M, d] memory
  if (z.n == 0 || b == 0 || m == 0) return out.permute({0, 2, 1, 3});
  const float* qd = q.data_ptr<float>();
  const float* kd = k.data_ptr<float>();
  const float* vd = v.data_ptr<float>();
  float* od = out.data_ptr<float>();
  const int64_t bm = b * m, kpacked = z.s32 * z.d, vpacked = z.s * z.d;
  std::vector<float> kp(bm * kpacked), vp(bm * vpacked);
  at::parallel_for(0, bm, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t bi = i / m, mi = i % m;
      pack_kv_f32(kd + bi * z.k_sb + mi * z.k_sm, vd + bi * z.v_sb + mi * z.v_sm, z.k_sn,
                  z.v_sn, z, kp.data() + i * kpacked, vp.data() + i * vpacked);
    }
  });
  const GroupFn fn = group_fn(z.d);
  const float scale = static_cast<float>(1.4426950408889634 / std::sqrt(static_cast<double>(z.d)));
  const int64_t nblocks = (z.n + QB - 1) / QB;
  const int64_t out_sn = m * z.d;
  at::parallel_for(0, bm * nblocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> sc(QG * z.s32), qbuf(QG * z.d);
    for (int64_t t = begin; t < end; ++t) {
      const int64_t i = t / nblocks, blk = t % nblocks;
      const int64_t bi = i / m, mi = i % m;
      const int64_t nb0 = blk * QB, nbq = std::min<int64_t>(QB, z.n - nb0);
      for (int64_t g0 = 0; g0 < nbq; g0 += QG) {
        const int64_t n0 = nb0 + g0, nq = std::min<int64_t>(QG, nbq - g0);
        const float* qsrc = qd + bi * z.q_sb + mi * z.q_sm + n0 * z.q_sn;
        for (int64_t r = 0; r < nq; ++r)
          for (int64_t c = 0; c < z.d; ++c) qbuf[r * z.d + c] = qsrc[r * z.q_sn + c] * scale;
        if (nq < QG) std::fill(qbuf.begin() + nq * z.d, qbuf.end(), 0.0f);
        fn(qbuf.data(), nq, kp.data() + i * kpacked, vp.data() + i * vpacked, z, sc.data(),
           od + ((bi * z.n + n0) * m + mi) * z.d, out_sn);
      }
    }
  });
  return out.permute({0, 2, 1, 3});
}
#endif  // TFC_ATTN_X86

at::Tensor attention_cpu(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
              "tfcseg::attention: q, k, v must be [B, M, N, d] / [B, M, S, d], got ", q.sizes(),
              ", ", k.sizes(), ", ", v.sizes());
  TORCH_CHECK(k.sizes() == v.sizes() && k.size(0) == q.size(0) && k.size(1) == q.size(1) &&
                  k.size(3) == q.size(3),
              "tfcseg::attention: shapes do not match: q ", q.sizes(), ", k ", k.sizes(), ", v ",
              v.sizes());
#ifdef TFC_ATTN_X86
  const int64_t d = q.size(3), s = k.size(2);
  if (q.scalar_type() == at::kBFloat16 && k.scalar_type() == at::kBFloat16 &&
      v.scalar_type() == at::kBFloat16 && d % 16 == 0 && d <= 128 && s >= 1 && s <= MAX_S &&
      cpu_has_bf16()) {
    return attention_bf16(q, k, v);
  }
  if (q.scalar_type() == at::kFloat && k.scalar_type() == at::kFloat &&
      v.scalar_type() == at::kFloat && d % 16 == 0 && d <= 128 && s >= 1 && s <= MAX_S &&
      cpu_has_avx512f()) {
    return attention_f32(q, k, v);
  }
#endif
  return at::scaled_dot_product_attention(q, k, v);
}

}  // namespace

TORCH_LIBRARY_IMPL(tfcseg, CPU, m) {
  m.impl("attention", &attention_cpu);
}
