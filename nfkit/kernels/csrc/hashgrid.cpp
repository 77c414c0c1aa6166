// Multiresolution hash encoding on the CPU, forward and backward (tiny-cuda-nn compatible indexing).
// Reference: fields/encodings.py::hash_encode_reference (pure torch). Threads: ATen's pool (torch.set_num_threads).
#include "common.h"

#include <algorithm>
#include <memory>

namespace {

constexpr uint32_t P1 = 2654435761u, P2 = 805459861u;

struct Level {
  float scale;
  uint32_t res, size;  // resolution (vertices per side), entries in this level
  int64_t offset;      // first entry
  bool dense;
};

// Checks the level layout (offsets [L+1] int64 increasing from >= 0, scales [L] finite float32, res [L] int64 >= 1,
// every level 1 .. 2^32-1 entries) and that the table holds offsets[L] * n_features entries.
std::vector<Level> make_levels(const at::Tensor& offsets, const at::Tensor& scales, const at::Tensor& res,
                               int64_t n_features, int64_t table_entries) {
  TORCH_CHECK(n_features == 1 || n_features == 2 || n_features == 4 || n_features == 8,
              "n_features_per_level must be 1, 2, 4 or 8, got ", n_features);
  CHECK_CPU_TYPE(offsets, at::kLong, "int64");
  CHECK_CPU_TYPE(scales, at::kFloat, "float32");
  CHECK_CPU_TYPE(res, at::kLong, "int64");
  TORCH_CHECK(scales.dim() == 1 && scales.size(0) >= 1, "scales must be [L] with L >= 1, got ", scales.sizes());
  const int64_t nl = scales.size(0);
  TORCH_CHECK(res.dim() == 1 && res.size(0) == nl, "res must be [L] (L = ", nl, "), got ", res.sizes());
  TORCH_CHECK(offsets.dim() == 1 && offsets.size(0) == nl + 1, "offsets must be [L + 1] (L = ", nl, "), got ",
              offsets.sizes());
  auto o = offsets.accessor<int64_t, 1>();
  auto s = scales.accessor<float, 1>();
  auto r = res.accessor<int64_t, 1>();
  TORCH_CHECK(o[0] >= 0, "offsets[0] must be >= 0");
  std::vector<Level> lv(nl);
  for (int64_t l = 0; l < nl; ++l) {
    const int64_t size = o[l + 1] - o[l];
    TORCH_CHECK(size >= 1 && size <= (int64_t)UINT32_MAX, "level ", l, " must hold 1 .. 2^32-1 entries, got ", size);
    TORCH_CHECK(r[l] >= 1 && r[l] <= (int64_t)UINT32_MAX, "res[", l, "] must be >= 1, got ", r[l]);
    TORCH_CHECK(std::isfinite(s[l]), "scales[", l, "] must be finite");
    lv[l].scale = s[l];
    lv[l].res = (uint32_t)r[l];
    lv[l].size = (uint32_t)size;
    lv[l].offset = o[l];
    uint64_t r3 = (uint64_t)r[l] * r[l] * r[l];
    lv[l].dense = r3 <= lv[l].size;
  }
  TORCH_CHECK(o[nl] <= table_entries / n_features, "the table holds ", table_entries, " values, the levels need ",
              o[nl], " x ", n_features);
  return lv;
}

// Index of the 8 corners and their trilinear weights for one point in one level.
inline void corners(const Level& L, const float* p, uint32_t idx[8], float w[8]) {
  float f[3];
  uint32_t g[3];
  for (int d = 0; d < 3; ++d) {
    float pos = std::fmaf(L.scale, p[d], 0.5f);  // one rounding, as tcnn's fmaf
    float fl = std::floor(pos);
    g[d] = (uint32_t)(int32_t)fl;
    f[d] = pos - fl;
  }
  for (int c = 0; c < 8; ++c) {
    uint32_t x = g[0] + (c & 1), y = g[1] + ((c >> 1) & 1), z = g[2] + ((c >> 2) & 1);
    uint32_t i;
    if (L.dense) i = x + y * L.res + z * L.res * L.res;
    else i = x ^ (y * P1) ^ (z * P2);
    idx[c] = i % L.size;
    w[c] = ((c & 1) ? f[0] : 1.f - f[0]) * (((c >> 1) & 1) ? f[1] : 1.f - f[1]) * (((c >> 2) & 1) ? f[2] : 1.f - f[2]);
  }
}

constexpr int BLOCK = 32;  // points whose corners are computed (and prefetched) before any is gathered

template <int F>
void fwd_impl(const float* x, const float* table, float* out, int64_t n, const std::vector<Level>& lv) {
  const int64_t nl = lv.size();
  // Chunks of points x all levels: a chunk's output rows (CHUNK * nl * F floats) stay in L2 while every level
  // visits them; within a level, BLOCK points' corners are computed and prefetched before any is gathered.
  constexpr int64_t CHUNK = 2048;
  at::parallel_for(0, (n + CHUNK - 1) / CHUNK, 1, [&](int64_t cb, int64_t ce) {
    uint32_t idx[BLOCK][8];
    float w[BLOCK][8];
    for (int64_t ch = cb; ch < ce; ++ch) {
      const int64_t b = ch * CHUNK, e = std::min(n, b + CHUNK);
      for (int64_t l = 0; l < nl; ++l) {
        const Level L = lv[l];
        const float* t = table + L.offset * F;
        for (int64_t i0 = b; i0 < e; i0 += BLOCK) {
          const int m = (int)std::min<int64_t>(BLOCK, e - i0);
          for (int j = 0; j < m; ++j) {
            corners(L, x + 3 * (i0 + j), idx[j], w[j]);
            for (int c = 0; c < 8; c += 2) __builtin_prefetch(t + (int64_t)idx[j][c] * F);
          }
          for (int j = 0; j < m; ++j) {
            float acc[F] = {0};
            for (int c = 0; c < 8; ++c) {
              const float* v = t + (int64_t)idx[j][c] * F;
              for (int k = 0; k < F; ++k) acc[k] += w[j][c] * v[k];
            }
            float* o = out + (i0 + j) * nl * F + l * F;
            for (int k = 0; k < F; ++k) o[k] = acc[k];
          }
        }
      }
    }
  });
}

template <int F>
void bwd_impl(const float* go_rows, const float* x, float* gt, int64_t n, const std::vector<Level>& lv) {
  const int64_t nl = lv.size();
  // Level-major copy of the incoming gradient, so each level's pass reads it contiguously instead of striding
  // through every row (16 strided passes over [N, L*F] cost more than the scatter itself).
  std::unique_ptr<float[]> go_t(new float[(size_t)(nl * n * F)]);  // no zero-fill: every entry is written
  at::parallel_for(0, n, 4096, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      for (int64_t l = 0; l < nl; ++l)
        for (int k = 0; k < F; ++k) go_t[(l * n + i) * F + k] = go_rows[i * nl * F + l * F + k];
  });
  const float* go = go_t.get();
  // Each thread owns whole levels, so table gradients need no atomics or per-thread copies.
  at::parallel_for(0, nl, 1, [&](int64_t lb, int64_t le) {
    uint32_t idx[BLOCK][8];
    float w[BLOCK][8];
    int64_t pts[BLOCK];
    for (int64_t l = lb; l < le; ++l) {
      const Level L = lv[l];
      float* g = gt + L.offset * F;
      std::fill(g, g + (int64_t)L.size * F, 0.f);  // zeroed by the owning thread: parallel, cache-warm
      for (int64_t i0 = 0; i0 < n;) {
        int m = 0;
        for (; i0 < n && m < BLOCK; ++i0) {
          const float* gi = go + (l * n + i0) * F;
          bool any = false;
          for (int k = 0; k < F; ++k) any |= gi[k] != 0.f;
          if (!any) continue;  // e.g. samples outside the AABB or pruned
          corners(L, x + 3 * i0, idx[m], w[m]);
          for (int c = 0; c < 8; c += 2) __builtin_prefetch(g + (int64_t)idx[m][c] * F, 1);
          pts[m++] = i0;
        }
        for (int j = 0; j < m; ++j) {
          const float* gi = go + (l * n + pts[j]) * F;
          for (int c = 0; c < 8; ++c) {
            float* v = g + (int64_t)idx[j][c] * F;
            for (int k = 0; k < F; ++k) v[k] += w[j][c] * gi[k];
          }
        }
      }
    }
  });
}

}  // namespace

at::Tensor hash_encode_forward(at::Tensor x, at::Tensor params, at::Tensor offsets, at::Tensor scales,
                               at::Tensor res, int64_t n_features) {
  CHECK_POINTS(x);
  CHECK_CPU_FLOAT(params);
  auto lv = make_levels(offsets, scales, res, n_features, params.numel());
  const int64_t n = x.size(0), nl = lv.size();
  auto out = at::empty({n, nl * n_features}, x.options());
  const float* xp = x.data_ptr<float>();
  const float* tp = params.data_ptr<float>();
  float* op = out.data_ptr<float>();
  switch (n_features) {
    case 1: fwd_impl<1>(xp, tp, op, n, lv); break;
    case 2: fwd_impl<2>(xp, tp, op, n, lv); break;
    case 4: fwd_impl<4>(xp, tp, op, n, lv); break;
    case 8: fwd_impl<8>(xp, tp, op, n, lv); break;
    default: TORCH_CHECK(false, "n_features_per_level must be 1, 2, 4 or 8");
  }
  return out;
}

at::Tensor hash_encode_backward(at::Tensor grad_out, at::Tensor x, at::Tensor offsets, at::Tensor scales,
                                at::Tensor res, int64_t n_features, int64_t n_params) {
  CHECK_CPU_FLOAT(grad_out);
  CHECK_POINTS(x);
  TORCH_CHECK(n_params >= 0, "n_params must be >= 0, got ", n_params);
  auto lv = make_levels(offsets, scales, res, n_features, n_params);
  const int64_t n = x.size(0), nl = lv.size();
  TORCH_CHECK(grad_out.dim() == 2 && grad_out.size(0) == n && grad_out.size(1) == nl * n_features,
              "grad_out must be [N, L * F] = [", n, ", ", nl * n_features, "], got ", grad_out.sizes());
  auto grad = at::empty({n_params}, x.options());
  const float* gp = grad_out.data_ptr<float>();
  const float* xp = x.data_ptr<float>();
  float* tp = grad.data_ptr<float>();
  switch (n_features) {
    case 1: bwd_impl<1>(gp, xp, tp, n, lv); break;
    case 2: bwd_impl<2>(gp, xp, tp, n, lv); break;
    case 4: bwd_impl<4>(gp, xp, tp, n, lv); break;
    case 8: bwd_impl<8>(gp, xp, tp, n, lv); break;
    default: TORCH_CHECK(false, "n_features_per_level must be 1, 2, 4 or 8");
  }
  return grad;
}
