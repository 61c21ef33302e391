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
//     // gradients that `grads` asks for (img, txt, scale, bias), each times `weight`, the
//     // incoming gradient of the loss (a 0-dim tensor on the CPU or img's device; undefined
//     // in the forward, where it is 1). dimg and dtxt are in the accumulation type,
//     // undefined when not asked for.
//     static SiglipSums run(const SiglipCall& c, bool loss, std::array<bool, 4> grads, const at::Tensor& weight);
//   };
// and registers SiglipOps<Passes>::impl(m) in its TORCH_LIBRARY_IMPL block.
//
// Scale, bias and the incoming gradient stay tensors, and the sums come back as 0-dim
// tensors on the call's device: no device value is read on the host, so that a call
// neither makes the host wait nor breaks a CUDA graph capture (one exception: the gradient
// of a CPU scale or bias, see gradients()).
#pragma once

#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include <array>
#include <tuple>

#include "../common/dtypes.h"

namespace ssl_fast {

// A validated call: img and txt contiguous in the accumulation type; scale and bias as
// given, 0-dim, each on the CPU or img's device.
struct SiglipCall {
  at::Tensor img, txt;
  at::Tensor scale, bias;
  int64_t rows, cols, dim, offset;
  at::ScalarType acc;  // float for half, bfloat16 and float; double for double
};

struct SiglipSums {
  // 0-dim float64 on the call's device, each already times weight / rows; undefined when
  // the call asks for neither the loss nor a gradient.
  at::Tensor loss, dscale, dbias;
  at::Tensor dimg, dtxt;  // [rows, dim], [cols, dim] in the accumulation type
};

// Checks shapes, dtypes, devices and values with messages naming `op`. A scale or bias on
// the CPU must be finite; one on the device is not read on the host to check it (a
// non-finite value gives a non-finite loss, as the formula does).
SiglipCall check_siglip_call(
    const char* op, const at::Tensor& img, const at::Tensor& txt, const at::Tensor& scale, const at::Tensor& bias,
    int64_t offset);

// Checks the incoming gradient of the loss: a 0-dim floating-point tensor on the CPU or
// img's device.
void check_siglip_grad(const char* op, const at::Tensor& grad, const at::Tensor& img);

template <class Passes>
struct SiglipOps {
  using Grads = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

  static std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> siglip(
      const at::Tensor& img, const at::Tensor& txt, const at::Tensor& scale, const at::Tensor& bias,
      int64_t offset, std::array<bool, 4> compute_grad) {
    const SiglipCall c = check_siglip_call("siglip", img, txt, scale, bias, offset);
    const c10::DeviceGuard guard(img.device());
    const SiglipSums sums = Passes::run(c, true, compute_grad, at::Tensor());
    const auto [dimg, dtxt, dscale, dbias] = gradients(c, sums, compute_grad, img, txt, scale, bias);
    return {sums.loss.to(c.acc), dimg, dtxt, dscale, dbias};
  }

  static Grads siglip_backward(
      const at::Tensor& grad, const at::Tensor& img, const at::Tensor& txt, const at::Tensor& scale,
      const at::Tensor& bias, int64_t offset, std::array<bool, 4> output_mask) {
    constexpr const char* op = "siglip_backward";
    const SiglipCall c = check_siglip_call(op, img, txt, scale, bias, offset);
    check_siglip_grad(op, grad, img);
    const c10::DeviceGuard guard(img.device());
    return gradients(c, Passes::run(c, false, output_mask, grad), output_mask, img, txt, scale, bias);
  }

  static void impl(torch::Library& m) {
    m.impl("siglip", &siglip);
    m.impl("siglip_backward", &siglip_backward);
  }

 private:
  // The gradients asked for, each in the dtype and on the device of its input; the others
  // empty. A CPU scale or bias of a device call thus receives its gradient by a copy to the
  // host, which waits for the device: that wait is the price of a CPU tensor that requires
  // a gradient.
  static Grads gradients(
      const SiglipCall& c, const SiglipSums& sums, std::array<bool, 4> mask, const at::Tensor& img,
      const at::Tensor& txt, const at::Tensor& scale, const at::Tensor& bias) {
    auto empty = [&] { return at::empty({0}, img.options()); };
    return {
        mask[0] ? sums.dimg.to(img.scalar_type()) : empty(),
        mask[1] ? sums.dtxt.to(txt.scalar_type()) : empty(),
        mask[2] ? sums.dscale.to(scale.options()) : empty(),
        mask[3] ? sums.dbias.to(bias.options()) : empty()};
  }
};

}  // namespace ssl_fast
