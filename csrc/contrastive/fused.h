// Stage 2 of the CUDA contrastive log-sum-exp: fused tensor-core kernels that keep every
// logit tile on chip (contrastive/fused.cu). contrastive/cuda.cu decides which stage
// serves a call.
#pragma once

#include <ATen/ATen.h>

#include "args.h"

namespace ssl_fast::cuda {

// Whether the fused kernels serve this call: 16-bit inputs, or float32 ones while TF32
// matmuls are allowed; at most 256 features; a card of compute capability 8.0 or above
// with the shared memory the tiles need.
bool fused_supported(const ContrastiveCall& c);

// Row lse (and, when col is not empty, column lse) of the call from its unit rows qn and
// kn (kn unused without k), both in the accumulation type.
void fused_forward(
    const ContrastiveCall& c, const at::Tensor& qn, const at::Tensor& kn, at::Tensor& row, at::Tensor& col);

// The gradients of the unit rows from those of the lse's: dqn and dkn (each when defined)
// are overwritten; g_dot_s (when defined) receives, per query row, sum_j G_ij s_ij.
void fused_backward(
    const ContrastiveCall& c, const ContrastiveGrads& g, at::Tensor& dqn, at::Tensor& dkn, at::Tensor& g_dot_s);

}  // namespace ssl_fast::cuda
