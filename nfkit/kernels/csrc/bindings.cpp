// Python bindings of nfkit's CPU kernels (one extension module, built lazily by nfkit/kernels/__init__.py).
#include "common.h"

at::Tensor hash_encode_forward(at::Tensor x, at::Tensor params, at::Tensor offsets, at::Tensor scales,
                               at::Tensor res, int64_t n_features);
at::Tensor hash_encode_backward(at::Tensor grad_out, at::Tensor x, at::Tensor offsets, at::Tensor scales,
                                at::Tensor res, int64_t n_features, int64_t n_params);

std::vector<at::Tensor> march(at::Tensor rays_o, at::Tensor rays_d, at::Tensor t_near, at::Tensor t_far,
                              at::Tensor jitter, double step, at::Tensor binary, at::Tensor aabb, int64_t res,
                              int64_t max_per_ray, std::vector<at::Tensor> mips, std::vector<int64_t> factors);
std::vector<at::Tensor> march_cached(at::Tensor rays_o, at::Tensor rays_d, at::Tensor t_near, at::Tensor t_far,
                                     double step, at::Tensor binary, at::Tensor aabb, int64_t res,
                                     std::vector<at::Tensor> mips, std::vector<int64_t> factors, at::Tensor cache,
                                     at::Tensor cache_aabb, double weight_eps, double early_stop);

bool tune_malloc(int64_t mmap_threshold, int64_t trim_threshold);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("hash_encode_forward", &hash_encode_forward, "hash grid encoding forward [N,3] -> [N, L*F]");
  m.def("hash_encode_backward", &hash_encode_backward, "hash grid encoding backward -> dL/dparams");
  m.def("tune_malloc", &tune_malloc, "raise glibc mmap/trim thresholds (keeps large blocks for reuse)");
  m.def("march", &march, "occupancy-grid ray marching -> (ray_indices, t_mid, t_next)");
  m.def("march_cached", &march_cached, "marching on a baked density lattice -> (ray_indices, t, weights, trans)");
}
