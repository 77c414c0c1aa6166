// Shared includes and argument checks for nfkit's CPU kernels. Every kernel checks every input (dtype, device,
// contiguity, dims, matching lengths, value ranges it indexes with) with TORCH_CHECK before touching memory, so a
// bad call raises a Python RuntimeError instead of reading or writing out of bounds.
#pragma once
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <cstdint>
#include <vector>

#define CHECK_CPU_FLOAT(t)                                                                  \
  TORCH_CHECK(!(t).is_cuda() && (t).scalar_type() == at::kFloat && (t).is_contiguous(),    \
              #t " must be a contiguous float32 CPU tensor")

#define CHECK_CPU_TYPE(t, dtype, what)                                                      \
  TORCH_CHECK((t).device().is_cpu() && (t).scalar_type() == (dtype) && (t).is_contiguous(), \
              #t " must be a contiguous " what " CPU tensor")

// [N, 3] float32 points or directions.
#define CHECK_POINTS(t)                                                                     \
  CHECK_CPU_FLOAT(t);                                                                       \
  TORCH_CHECK((t).dim() == 2 && (t).size(1) == 3, #t " must be [N, 3], got ", (t).sizes())

// [N] float32, N given.
#define CHECK_PER_RAY(t, n)                                                                 \
  CHECK_CPU_FLOAT(t);                                                                       \
  TORCH_CHECK((t).dim() == 1 && (t).size(0) == (n), #t " must be [N] with N = ", (n), " rays, got ", (t).sizes())

// A [2, 3] float32 box with finite corners and min < max on every axis.
inline void check_aabb(const at::Tensor& aabb, const char* name) {
  TORCH_CHECK(aabb.device().is_cpu() && aabb.scalar_type() == at::kFloat && aabb.dim() == 2 && aabb.size(0) == 2 &&
                  aabb.size(1) == 3,
              name, " must be a [2, 3] float32 CPU tensor, got ", aabb.sizes(), " ", aabb.scalar_type());
  auto a = aabb.accessor<float, 2>();
  for (int d = 0; d < 3; ++d)
    TORCH_CHECK(std::isfinite(a[0][d]) && std::isfinite(a[1][d]) && a[0][d] < a[1][d], name,
                " must be finite with min < max on every axis");
}
