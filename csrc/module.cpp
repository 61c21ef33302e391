// The Python module ssl_fast._C: importing it runs the operator registrations;
// build_info() records how this binary was built. Plain pybind11, not torch/extension.h:
// nothing here crosses a tensor, and that header alone costs most of a minute to compile.
#include <pybind11/pybind11.h>

#include "common/alloc.h"
#include "common/simd.h"

#ifndef SSL_FAST_CUDA_ARCHS
#define SSL_FAST_CUDA_ARCHS ""
#endif
#ifndef SSL_FAST_BUILD_TORCH
#define SSL_FAST_BUILD_TORCH ""
#endif

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
#ifdef SSL_FAST_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
  info["cuda_archs"] = SSL_FAST_CUDA_ARCHS;
  info["torch"] = SSL_FAST_BUILD_TORCH;
#ifdef SSL_FAST_DEBUG
  info["debug"] = true;
#else
  info["debug"] = false;
#endif
  info["compiler"] = __VERSION__;
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("build_info", &build_info, "How this binary was built (flags, CUDA archs, torch version).");
  m.def("empty_cache", &ssl_fast::cpu::empty_cache, "Frees the CPU output buffers kept for reuse.");
  m.def("cpu_isa", &ssl_fast::cpu::simd_level_name,
        "The instruction set of the CPU kernels with a path per set (tile GEMMs, Philox lanes).");
}
