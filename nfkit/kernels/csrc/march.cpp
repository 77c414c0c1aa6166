// Occupancy-grid ray marching on the CPU (two passes: count, then fill). Reference:
// renderers/sampling.py::march_reference. Output: packed sample midpoints, rays in increasing order.
#include "common.h"

namespace {

struct Grid {
  const bool* bin;
  float lo[3], ext[3];
  int res;
  inline bool occupied(float x, float y, float z) const {
    float u[3] = {(x - lo[0]) / ext[0], (y - lo[1]) / ext[1], (z - lo[2]) / ext[2]};  // as the reference
    int ijk[3];
    for (int d = 0; d < 3; ++d) {
      if (!(u[d] >= 0.f && u[d] < 1.f)) return false;
      ijk[d] = std::min((int)(u[d] * res), res - 1);
    }
    return bin[((int64_t)ijk[0] * res + ijk[1]) * res + ijk[2]];
  }
};

}  // namespace

std::vector<at::Tensor> march(at::Tensor rays_o, at::Tensor rays_d, at::Tensor t_near, at::Tensor t_far,
                              at::Tensor jitter, double step, at::Tensor binary, at::Tensor aabb, int64_t res,
                              int64_t max_per_ray) {
  CHECK_CPU_FLOAT(rays_o);
  CHECK_CPU_FLOAT(rays_d);
  CHECK_CPU_FLOAT(t_near);
  CHECK_CPU_FLOAT(t_far);
  CHECK_CPU_FLOAT(jitter);
  TORCH_CHECK(binary.scalar_type() == at::kBool && binary.is_contiguous(), "binary must be contiguous bool");
  const int64_t n = rays_o.size(0);
  Grid g;
  g.bin = binary.data_ptr<bool>();
  g.res = (int)res;
  auto a = aabb.accessor<float, 2>();
  for (int d = 0; d < 3; ++d) {
    g.lo[d] = a[0][d];
    g.ext[d] = a[1][d] - a[0][d];
  }
  const float* o = rays_o.data_ptr<float>();
  const float* dd = rays_d.data_ptr<float>();
  const float* tn = t_near.data_ptr<float>();
  const float* tf = t_far.data_ptr<float>();
  const float* jt = jitter.data_ptr<float>();
  const float st = (float)step;
  auto counts = at::zeros({n + 1}, at::kLong);
  int64_t* cnt = counts.data_ptr<int64_t>();
  const int64_t cap = max_per_ray > 0 ? max_per_ray : INT64_MAX;
  // Same float arithmetic as the reference: t = t_near + (k + jitter) * step. Returns the lattice index after
  // the last sample visited (the place to continue from when the cap stopped the walk), or -1 at t_far.
  auto walk = [&](int64_t r, auto&& emit) -> int64_t {
    const float* ro = o + 3 * r;
    const float* rd = dd + 3 * r;
    int64_t c = 0;
    for (int64_t k = 0;; ++k) {
      float t = tn[r] + ((float)k + jt[r]) * st;
      if (!(t < tf[r])) return -1;
      if (g.occupied(ro[0] + t * rd[0], ro[1] + t * rd[1], ro[2] + t * rd[2])) {
        emit(t);
        if (++c >= cap) return k + 1;
      }
    }
  };
  at::parallel_for(0, n, 256, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      int64_t c = 0;
      walk(r, [&](float) { ++c; });
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
      int64_t w = cnt[r];
      int64_t k = walk(r, [&](float t) { ri[w] = r; tp[w] = t; ++w; });
      tnx[r] = k < 0 ? tf[r] : tn[r] + (float)k * st;
    }
  });
  return {ray_idx, ts, t_next};
}
