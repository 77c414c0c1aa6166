// Occupancy-grid ray marching on the CPU. References (pure torch): renderers/sampling.py::march_reference and
// renderers/density_cache.py::march_cached_reference. Samples sit at t_k = t_near + (k + jitter) * step; a sample
// is kept when t_k < t_far and its cell is occupied. Empty space is skipped through a small mip hierarchy (each
// coarse cell ORs factor^3 fine cells; coarsest first) and the fine grid. In an empty cell the walk jumps to the last lattice point
// at least 1% of a step before the cell's exit (far more than float error), so no lattice point that could lie in
// another cell is ever skipped: the output is the reference's, sample for sample.
#include "common.h"

#include <algorithm>
#include <limits>

namespace {

constexpr int kMaxLevels = 4;
constexpr int64_t kMaxRes = 4096;                 // occupancy grids beyond 4096^3 cells are not a CPU use
constexpr double kMaxSamplesPerRay = 1e8;         // lattice points one ray may walk (step vs. segment length)

// Per-ray inputs: [N, 3] origins and directions, [N] t_near / t_far (and jitter in [0, 1)); the step positive and
// finite, and every ray that has a segment (t_near < t_far) a finite one of at most kMaxSamplesPerRay steps, so
// every walk ends.
int64_t check_rays(const at::Tensor& rays_o, const at::Tensor& rays_d, const at::Tensor& t_near,
                   const at::Tensor& t_far, double step) {
  CHECK_POINTS(rays_o);
  CHECK_POINTS(rays_d);
  const int64_t n = rays_o.size(0);
  TORCH_CHECK(rays_d.size(0) == n, "rays_d must be [N, 3] with N = ", n, ", got ", rays_d.sizes());
  CHECK_PER_RAY(t_near, n);
  CHECK_PER_RAY(t_far, n);
  TORCH_CHECK(std::isfinite(step) && step > 0.0, "step must be finite and > 0, got ", step);
  const float* tn = t_near.data_ptr<float>();
  const float* tf = t_far.data_ptr<float>();
  for (int64_t r = 0; r < n; ++r) {
    if (!(tn[r] < tf[r])) continue;  // no segment (or NaN): the walk returns at once
    TORCH_CHECK(std::isfinite(tn[r]) && std::isfinite(tf[r]) && (tf[r] - tn[r]) / step <= kMaxSamplesPerRay,
                "ray ", r, ": the segment [", tn[r], ", ", tf[r], "] must be finite and at most ",
                kMaxSamplesPerRay, " steps of ", step);
  }
  return n;
}

struct Grid {
  const bool* bin;
  const bool* mip[kMaxLevels];  // coarse levels, coarsest first: [cres^3] bool, each cell ORs factor^3 fine cells
  int factor[kMaxLevels], shift[kMaxLevels], cres[kMaxLevels], n_levels;  // factor = 1 << shift
  float lo[3], ext[3];
  int res;

  // Fine cell of x, or false when x is outside [lo, lo + ext) (same float arithmetic as the reference).
  inline bool cell(const float* x, int* ijk) const {
    for (int d = 0; d < 3; ++d) {
      float u = (x[d] - lo[d]) / ext[d];
      if (!(u >= 0.f && u < 1.f)) return false;
      ijk[d] = std::min((int)(u * res), res - 1);
    }
    return true;
  }
  inline bool occupied(const int* ijk) const { return bin[((int64_t)ijk[0] * res + ijk[1]) * res + ijk[2]]; }
  // Block side of the coarsest empty level holding fine cell ijk, 1 if only the fine cell is empty, 0 if occupied.
  inline int empty_block(const int* ijk) const {
    for (int l = 0; l < n_levels; ++l) {
      const int sh = shift[l], c = cres[l];
      if (!mip[l][((int64_t)(ijk[0] >> sh) * c + (ijk[1] >> sh)) * c + (ijk[2] >> sh)]) return factor[l];
    }
    return occupied(ijk) ? 0 : 1;
  }
  // Ray parameter where the ray leaves the block of f^3 fine cells (aligned to multiples of f) holding ijk.
  // inv_d: 1 / d per axis (+-inf for a zero component, whose axis is then never left).
  inline float block_exit(const float* o, const float* inv_d, const int* ijk, int f) const {
    float te = std::numeric_limits<float>::infinity();
    for (int a = 0; a < 3; ++a) {
      int c = ijk[a] / f;
      int edge = inv_d[a] > 0.f ? std::min((c + 1) * f, res) : c * f;
      float ta = (lo[a] + ext[a] * ((float)edge * inv_res) - o[a]) * inv_d[a];
      te = ta < te ? ta : te;  // NaN-safe for 0 * inf on an axis the ray runs along
    }
    return te;
  }
  float inv_res;
};

Grid make_grid(const at::Tensor& binary, const std::vector<at::Tensor>& mips, const std::vector<int64_t>& factors,
               const at::Tensor& aabb, int64_t res) {
  TORCH_CHECK(res >= 1 && res <= kMaxRes, "grid resolution must be 1 .. ", kMaxRes, ", got ", res);
  CHECK_CPU_TYPE(binary, at::kBool, "bool");
  TORCH_CHECK(binary.numel() == res * res * res, "binary must hold res^3 = ", res * res * res, " cells, got ",
              binary.numel());
  check_aabb(aabb, "aabb");
  TORCH_CHECK(mips.size() == factors.size() && (int)mips.size() <= kMaxLevels, "one factor per mip level, at most 4");
  Grid g;
  g.bin = binary.data_ptr<bool>();
  g.res = (int)res;
  g.inv_res = 1.f / (float)res;
  g.n_levels = (int)mips.size();
  for (int l = 0; l < g.n_levels; ++l) {
    g.factor[l] = (int)factors[l];
    g.cres[l] = (g.res + g.factor[l] - 1) / g.factor[l];
    TORCH_CHECK(g.factor[l] >= 2 && (g.factor[l] & (g.factor[l] - 1)) == 0 && (l == 0 || g.factor[l] < g.factor[l - 1]),
                "mip factors must be decreasing powers of two >= 2");
    g.shift[l] = __builtin_ctz(g.factor[l]);
    TORCH_CHECK(mips[l].device().is_cpu() && mips[l].scalar_type() == at::kBool && mips[l].is_contiguous() &&
                    mips[l].numel() == (int64_t)g.cres[l] * g.cres[l] * g.cres[l],
                "mip level must be a contiguous bool grid of ceil(res / factor)^3 cells");
    g.mip[l] = mips[l].data_ptr<bool>();
  }
  auto a = aabb.accessor<float, 2>();
  for (int d = 0; d < 3; ++d) {
    g.lo[d] = a[0][d];
    g.ext[d] = a[1][d] - a[0][d];
  }
  return g;
}

// Walk ray r over its lattice from index k0, calling emit(t, x) for every occupied sample while emit returns
// true. Returns the lattice index after the last visited sample, or -1 when t_far was reached.
template <typename Emit>
inline int64_t walk(const Grid& g, const float* ro, const float* rd, float tn, float tf, float jt, float st,
                    Emit&& emit) {
  int ijk[3];
  float x[3], inv_d[3];
  for (int a = 0; a < 3; ++a) inv_d[a] = 1.f / rd[a];
  const float inv_st = 1.f / st;
  for (int64_t k = 0;;) {
    float t = tn + ((float)k + jt) * st;
    if (!(t < tf)) return -1;
    for (int d = 0; d < 3; ++d) x[d] = ro[d] + t * rd[d];
    if (!g.cell(x, ijk)) {
      ++k;
      continue;
    }
    const int block = g.empty_block(ijk);
    if (block) {
      float te = g.block_exit(ro, inv_d, ijk, block);
      if (!(te - 0.01f * st < tf)) return -1;  // the block holds the rest of the ray (also: te = inf, d = 0)
      float kn = std::ceil((te - tn) * inv_st - jt - 0.01f) - 1.f;  // last k with t < te - st/100
      k = kn >= (float)(k + 1) ? (int64_t)kn + 1 : k + 1;  // resume at the first lattice point beyond it
      continue;
    }
    if (!emit(t, x)) return k + 1;
    ++k;
  }
}

}  // namespace

std::vector<at::Tensor> march(at::Tensor rays_o, at::Tensor rays_d, at::Tensor t_near, at::Tensor t_far,
                              at::Tensor jitter, double step, at::Tensor binary, at::Tensor aabb, int64_t res,
                              int64_t max_per_ray, std::vector<at::Tensor> mips, std::vector<int64_t> factors) {
  const int64_t n = check_rays(rays_o, rays_d, t_near, t_far, step);
  CHECK_PER_RAY(jitter, n);
  for (int64_t r = 0; r < n; ++r) {
    const float j = jitter.data_ptr<float>()[r];
    TORCH_CHECK(j >= 0.f && j <= 1.f, "jitter must lie in [0, 1], ray ", r, " has ", j);
  }
  TORCH_CHECK(max_per_ray >= 0, "max_per_ray must be >= 0 (0: no cap), got ", max_per_ray);
  const Grid g = make_grid(binary, mips, factors, aabb, res);
  const float* o = rays_o.data_ptr<float>();
  const float* dd = rays_d.data_ptr<float>();
  const float* tn = t_near.data_ptr<float>();
  const float* tf = t_far.data_ptr<float>();
  const float* jt = jitter.data_ptr<float>();
  const float st = (float)step;
  auto counts = at::zeros({n + 1}, at::kLong);
  int64_t* cnt = counts.data_ptr<int64_t>();
  const int64_t cap = max_per_ray > 0 ? max_per_ray : INT64_MAX;
  at::parallel_for(0, n, 256, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      int64_t c = 0;
      walk(g, o + 3 * r, dd + 3 * r, tn[r], tf[r], jt[r], st, [&](float, const float*) { return ++c < cap; });
      cnt[r + 1] = c;
    }
  });
  for (int64_t r = 0; r < n; ++r) cnt[r + 1] += cnt[r];
  const int64_t total = cnt[n];
  auto ray_idx = at::empty({total}, at::kLong);
  auto ts = at::empty({total}, rays_o.options());
  auto t_next = at::empty({n}, rays_o.options());
  int64_t* ri = ray_idx.data_ptr<int64_t>();
  float* tp = ts.data_ptr<float>();
  float* tnx = t_next.data_ptr<float>();
  at::parallel_for(0, n, 256, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      int64_t w = cnt[r], c = 0;
      int64_t k = walk(g, o + 3 * r, dd + 3 * r, tn[r], tf[r], jt[r], st, [&](float t, const float*) {
        ri[w] = r;
        tp[w] = t;
        ++w;
        return ++c < cap;
      });
      tnx[r] = k < 0 ? tf[r] : tn[r] + (float)k * st;
    }
  });
  return {ray_idx, ts, t_next};
}

// Viewer mode: march each ray (jitter 0.5), read the density from a baked [R, R, R] lattice (indexed z, y, x;
// trilinear with the lattice's end points on the AABB corners, as grid_sample(align_corners=True)), composite the
// transmittance front to back, stop once it falls below early_stop, and keep only samples of weight > weight_eps.
// Returns (ray_indices [S] long, t [S], weights [S], transmittance [N]).
std::vector<at::Tensor> march_cached(at::Tensor rays_o, at::Tensor rays_d, at::Tensor t_near, at::Tensor t_far,
                                     double step, at::Tensor binary, at::Tensor aabb, int64_t res,
                                     std::vector<at::Tensor> mips, std::vector<int64_t> factors, at::Tensor cache,
                                     at::Tensor cache_aabb, double weight_eps, double early_stop) {
  const int64_t n = check_rays(rays_o, rays_d, t_near, t_far, step);
  CHECK_CPU_FLOAT(cache);
  TORCH_CHECK(cache.dim() == 3 && cache.size(0) == cache.size(1) && cache.size(1) == cache.size(2) &&
                  cache.size(0) >= 2, "cache must be [R, R, R] with R >= 2, got ", cache.sizes());
  check_aabb(cache_aabb, "cache_aabb");
  TORCH_CHECK(std::isfinite(weight_eps) && std::isfinite(early_stop), "weight_eps and early_stop must be finite");
  const Grid g = make_grid(binary, mips, factors, aabb, res);
  const int64_t cr = cache.size(0);
  const float* cv = cache.data_ptr<float>();
  auto ca = cache_aabb.accessor<float, 2>();
  float clo[3], cext[3];
  for (int d = 0; d < 3; ++d) {
    clo[d] = ca[0][d];
    cext[d] = ca[1][d] - ca[0][d];
  }
  auto density = [&](const float* x) -> float {
    int i0[3];
    float fr[3];
    for (int d = 0; d < 3; ++d) {
      float f = (x[d] - clo[d]) / cext[d] * (float)(cr - 1);
      if (!(f >= 0.f && f <= (float)(cr - 1))) return 0.f;  // outside the lattice (zero padding)
      int i = std::min((int)f, (int)cr - 2);
      i0[d] = i;
      fr[d] = f - (float)i;
    }
    const float* p = cv + ((int64_t)i0[2] * cr + i0[1]) * cr + i0[0];
    const int64_t sy = cr, sz = cr * cr;
    float c00 = p[0] + (p[1] - p[0]) * fr[0];
    float c01 = p[sy] + (p[sy + 1] - p[sy]) * fr[0];
    float c10 = p[sz] + (p[sz + 1] - p[sz]) * fr[0];
    float c11 = p[sz + sy] + (p[sz + sy + 1] - p[sz + sy]) * fr[0];
    float c0 = c00 + (c01 - c00) * fr[1], c1 = c10 + (c11 - c10) * fr[1];
    return c0 + (c1 - c0) * fr[2];
  };
  const float* o = rays_o.data_ptr<float>();
  const float* dd = rays_d.data_ptr<float>();
  const float* tn = t_near.data_ptr<float>();
  const float* tf = t_far.data_ptr<float>();
  const float st = (float)step, weps = (float)weight_eps, stop = (float)early_stop;
  auto trans = at::empty({n}, rays_o.options());
  float* tr = trans.data_ptr<float>();
  const int64_t block = 512, n_blocks = (n + block - 1) / block;
  std::vector<std::vector<int64_t>> bri(n_blocks);
  std::vector<std::vector<float>> bt(n_blocks), bw(n_blocks);
  at::parallel_for(0, n_blocks, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      for (int64_t r = b * block; r < std::min(n, (b + 1) * block); ++r) {
        float T = 1.f;
        walk(g, o + 3 * r, dd + 3 * r, tn[r], tf[r], 0.5f, st, [&](float t, const float* x) {
          const float e = std::exp(-density(x) * st);
          const float w = T * (1.f - e);
          if (w > weps) {
            bri[b].push_back(r);
            bt[b].push_back(t);
            bw[b].push_back(w);
          }
          T *= e;
          return T >= stop;
        });
        tr[r] = T;
      }
    }
  });
  int64_t total = 0;
  std::vector<int64_t> start(n_blocks + 1, 0);
  for (int64_t b = 0; b < n_blocks; ++b) start[b + 1] = start[b] + (int64_t)bri[b].size();
  total = start[n_blocks];
  auto ray_idx = at::empty({total}, at::kLong);
  auto ts = at::empty({total}, rays_o.options());
  auto ws = at::empty({total}, rays_o.options());
  int64_t* ri = ray_idx.data_ptr<int64_t>();
  float* tp = ts.data_ptr<float>();
  float* wp = ws.data_ptr<float>();
  for (int64_t b = 0; b < n_blocks; ++b) {
    std::copy(bri[b].begin(), bri[b].end(), ri + start[b]);
    std::copy(bt[b].begin(), bt[b].end(), tp + start[b]);
    std::copy(bw[b].begin(), bw[b].end(), wp + start[b]);
  }
  return {ray_idx, ts, ws, trans};
}
