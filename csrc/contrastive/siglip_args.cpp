#include <cmath>

#include "siglip.h"

namespace ssl_fast {

namespace {

void check_features(const char* op, const char* what, const at::Tensor& t) {
  TORCH_CHECK(
      t.dim() == 2, op, ": ", what, " must be a 2-D [batch, features] tensor, got shape ", t.sizes());
  TORCH_CHECK(
      is_supported_float(t.scalar_type()), op, ": ", what,
      " must be float16, bfloat16, float32 or float64, got ", t.scalar_type());
  TORCH_CHECK(t.size(0) > 0, op, ": ", what, " is an empty batch (shape ", t.sizes(), ")");
  TORCH_CHECK(t.size(1) > 0, op, ": ", what, " has no features (shape ", t.sizes(), ")");
}

// A 0-dim floating-point tensor on the CPU or img's device.
void check_scalar(const char* op, const char* what, const at::Tensor& t, const at::Tensor& img) {
  TORCH_CHECK(
      t.dim() == 0 && t.is_floating_point(), op, ": ", what, " must be a 0-dim floating-point tensor, got ",
      t.scalar_type(), " of shape ", t.sizes());
  TORCH_CHECK(
      t.device() == img.device() || t.device().is_cpu(), op, ": ", what, " is on ", t.device(), " but img is on ",
      img.device());
}

// A scale or bias. Its value is checked only on the CPU, where reading it is free: reading a
// device value would make the host wait for the device.
void check_logit_term(const char* op, const char* what, const at::Tensor& t, const at::Tensor& img) {
  check_scalar(op, what, t, img);
  if (!t.device().is_cpu()) return;
  const double v = t.item<double>();
  TORCH_CHECK(std::isfinite(v), op, ": ", what, " must be finite, got ", v);
}

}  // namespace

SiglipCall check_siglip_call(
    const char* op, const at::Tensor& img, const at::Tensor& txt, const at::Tensor& scale, const at::Tensor& bias,
    int64_t offset) {
  check_features(op, "img", img);
  check_features(op, "txt", txt);
  TORCH_CHECK(txt.device() == img.device(), op, ": txt is on ", txt.device(), " but img is on ", img.device());
  TORCH_CHECK(
      txt.scalar_type() == img.scalar_type(), op, ": txt dtype ", txt.scalar_type(), " differs from img dtype ",
      img.scalar_type());
  TORCH_CHECK(
      txt.size(1) == img.size(1), op, ": img has ", img.size(1), " features but txt has ", txt.size(1));
  TORCH_CHECK(offset >= 0, op, ": offset (the column of row 0's positive) must be >= 0, got ", offset);
  SiglipCall c;
  c.acc = accumulate_type(img.scalar_type());
  c.img = img.to(c.acc).contiguous();
  c.txt = txt.to(c.acc).contiguous();
  c.rows = img.size(0);
  c.cols = txt.size(0);
  c.dim = img.size(1);
  c.offset = offset;
  check_logit_term(op, "scale", scale, img);
  check_logit_term(op, "bias", bias, img);
  c.scale = scale;
  c.bias = bias;
  return c;
}

void check_siglip_grad(const char* op, const at::Tensor& grad, const at::Tensor& img) {
  check_scalar(op, "grad", grad, img);
}

}  // namespace ssl_fast
