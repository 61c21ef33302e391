// Dtype rules shared by every op.
#pragma once

#include <c10/core/ScalarType.h>

namespace ssl_fast {

// Accumulation type of a call: float for half, bfloat16 and float; double for double.
inline at::ScalarType accumulate_type(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// The floating-point dtypes the ops accept.
inline bool is_supported_float(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

}  // namespace ssl_fast
