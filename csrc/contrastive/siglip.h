// SigLIP's sigmoid loss, written once for every backend: the checks of a call and the op
// entry points.
//
// For rows img [rows, dim], txt [cols, dim] (taken as they are: SigLIP's towers
// normalise their own features), scale a and bias b, the logits are
// z_ij = a img_i . txt_j + b and the loss is
//   (1 / rows) sum_ij softplus(-y_ij z_ij),  y_ij = +1 where j = i + offset, else -1
// (offset = 0: the diagonal; a rank of a distributed batch puts its rows' positives at
// rank * rows among the gathered texts). With G_ij = d softplus(-y z) / dz = -y sigmoid(-y z):
//   d img = (a / rows) G txt,  d txt = (a / rows) G^T img,
//   d scale = (1 / rows) sum_ij G_ij s_ij (s = img txt^T),  d bias = (1 / rows) sum_ij G_ij.
//
// A backend supplies its pass as
//   struct Passes {
//     // The sums of the call over every pair: the loss when `loss` is set, and the
//     // gradients that `grads` asks for (img, txt, scale, bias), each times `weight`
//     // (the incoming gradient of the loss over rows). dimg and dtxt are in the
//     // accumulation type, undefined when not asked for.
//     static SiglipSums run(const SiglipCall& c, bool loss, std::array<bool, 4> grads, double weight);
//   };
// and registers SiglipOps<Passes>::impl(m) in its TORCH_LIBRARY_IMPL block.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "../common/dtypes.h"

namespace ssl_fast {

// A validated call: img and txt contiguous in the accumulation type; scale and bias read once.
struct SiglipCall {
  at::Tensor img, txt;
  double scale, bias;
  int64_t rows, cols, dim, offset;
  at::ScalarType acc;  // float for half, bfloat16 and float; double for double
};

struct SiglipSums {
  double loss = 0, dscale = 0, dbias = 0;  // each already times weight / rows
  at::Tensor dimg, dtxt;                   // [rows, dim], [cols, dim] in the accumulation type
};

// Checks shapes, dtypes, devices and values with messages naming `op`.
SiglipCall check_siglip_call(
    const char* op, const at::Tensor& img, const at::Tensor& txt, const at::Tensor& scale, const at::Tensor& bias,
    int64_t offset);

// The incoming gradient of the loss, a finite 0-dim floating-point tensor, as a number.
double siglip_grad_output(const char* op, const at::Tensor& grad);

template <class Passes>
struct SiglipOps {
  using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> siglip(
      const at::Tensor& img, const at::Tensor& txt, const at::Tensor& scale, const at::Tensor& bias,
      int64_t offset, std::array<bool, 4> compute_grad) {
    const SiglipCall c = check_siglip_call("siglip", img, txt, scale, bias, offset);
    const c10::DeviceGuard guard(img.device());
    const SiglipSums sums = Passes::run(c, true, compute_grad, 1.0);
    const auto [dimg, dtxt, dscale, dbias] = gradients(c, sums, compute_grad, img, txt, scale, bias);
    return {at::full({}, sums.loss, img.options().dtype(c.acc)), dimg, dtxt, dscale, dbias};
  }

  static Grads siglip_backward(
      const at::Tensor& grad, const at::Tensor& img, const at::Tensor& txt, const at::Tensor& scale,
      const at::Tensor& bias, int64_t offset, std::array<bool, 4> output_mask) {
    constexpr const char* op = "siglip_backward";
    const SiglipCall c = check_siglip_call(op, img, txt, scale, bias, offset);
    const double weight = siglip_grad_output(op, grad);
    const c10::DeviceGuard guard(img.device());
    return gradients(c, Passes::run(c, false, output_mask, weight), output_mask, img, txt, scale, bias);
  }

  static void impl(torch::Library& m) {
    m.impl("siglip", &siglip);
    m.impl("siglip_backward", &siglip_backward);
  }

 private:
  // The gradients asked for, each in the dtype of its input; the others empty.
  static Grads gradients(
      const SiglipCall& c, const SiglipSums& sums, std::array<bool, 4> mask, const at::Tensor& img,
      const at::Tensor& txt, const at::Tensor& scale, const at::Tensor& bias) {
    auto empty = [&] { return at::empty({0}, img.options()); };
    return {
        mask[0] ? sums.dimg.to(img.scalar_type()) : empty(),
        mask[1] ? sums.dtxt.to(txt.scalar_type()) : empty(),
        mask[2] ? at::full({}, sums.dscale, scale.options()) : empty(),
        mask[3] ? at::full({}, sums.dbias, bias.options()) : empty()};
  }
};

}  // namespace ssl_fast
