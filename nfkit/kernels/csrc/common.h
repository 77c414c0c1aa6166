// Shared includes and argument checks for nfkit's CPU kernels.
#pragma once
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>
#include <cstdint>
#include <vector>

#define CHECK_CPU_FLOAT(t)                                                                  \
  TORCH_CHECK(!(t).is_cuda() && (t).scalar_type() == at::kFloat && (t).is_contiguous(),    \
              #t " must be a contiguous float32 CPU tensor")
