"""Build of ssl_fast and its extension ssl_fast._C.

Install with `pip install --no-build-isolation .` into an environment that already
has torch: the extension is compiled against that torch.

Switches (environment):
  SSL_FAST_CUDA=0|1   force the CUDA kernels off or on (default: on when torch is a
                      CUDA build and nvcc is found; no GPU is needed to build)
  SSL_FAST_NO_EXT=1   pure-Python install: every op runs its PyTorch reference
  DEBUG=1             -O0 -g, device debug info
  TORCH_CUDA_ARCH_LIST  overrides the default arch list (8.0;9.0+PTX)
"""

import glob
import os
import shutil
import site
import sys

from setuptools import find_packages, setup

DEFAULT_CUDA_ARCHS = "8.0;9.0+PTX"


def _env_flag(name: str) -> str | None:
    value = os.environ.get(name)
    if value not in (None, "", "0", "1"):
        sys.exit(f"setup.py: {name} must be 0 or 1, got {value!r}")
    return value or None


def _find_cuda_home() -> str | None:
    """The toolkit root: $CUDA_HOME, else the folder of the real nvcc (which may be
    reached through a wrapper script on PATH), else /usr/local/cuda."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates.append("/usr/local/cuda")
    for root in candidates:
        if root and os.path.exists(os.path.join(root, "bin", "nvcc")) and os.path.exists(
            os.path.join(root, "include", "cuda_runtime.h")
        ):
            return root
    return None


def _pip_cuda_includes() -> list[str]:
    """Header folders of the nvidia-* wheels that a CUDA build of torch depends on
    (cuBLAS, cuSPARSE, ...); some toolkits ship without them."""
    roots = list(site.getsitepackages()) + [site.getusersitepackages()] + sys.path
    found = []
    for root in roots:
        for inc in sorted(glob.glob(os.path.join(root, "nvidia", "*", "include"))):
            if inc not in found:
                found.append(inc)
    return found


def _extensions():
    if _env_flag("SSL_FAST_NO_EXT") == "1":
        return [], {}
    cuda_home = _find_cuda_home()
    if cuda_home and not os.environ.get("CUDA_HOME"):
        os.environ["CUDA_HOME"] = cuda_home  # read by torch.utils.cpp_extension at import
    import torch
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    forced = _env_flag("SSL_FAST_CUDA")
    cuda_possible = torch.version.cuda is not None and cuda_home is not None
    if forced == "1" and not cuda_possible:
        sys.exit(
            "setup.py: SSL_FAST_CUDA=1 but "
            + ("torch is a CPU build" if torch.version.cuda is None else "nvcc was not found (set CUDA_HOME)")
        )
    with_cuda = cuda_possible if forced is None else forced == "1"
    debug = _env_flag("DEBUG") == "1"

    here = os.path.dirname(os.path.abspath(__file__))
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    sources += sorted(glob.glob(os.path.join("csrc", "*", "*.cpp")))
    archs = ""
    macros = [("SSL_FAST_BUILD_TORCH", f'"{torch.__version__}"')]
    # -fno-trapping-math lets GCC if-convert the clamps and selects of the loss
    # functors and so vectorise them; no result changes (NaN and inf included).
    # -g0 overrides the -g of Python's own CFLAGS: debug info costs a third of the compile time.
    cxx = ["-O0", "-g"] if debug else ["-O3", "-g0", "-fno-trapping-math"]
    nvcc = (["-O0", "-g", "-G"] if debug else ["-O3", "-lineinfo"]) + ["--threads", "2"]  # archs in parallel
    if debug:
        macros.append(("SSL_FAST_DEBUG", None))
    # at::parallel_for is inlined into the extension and runs serially unless the
    # extension itself is compiled with OpenMP; libgomp then resolves to torch's copy.
    link = []
    if torch.backends.openmp.is_available() and sys.platform.startswith("linux"):
        cxx.append("-fopenmp")
        link.append("-fopenmp")
    include_dirs = [os.path.join(here, "csrc")]
    if with_cuda:
        archs = os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_CUDA_ARCHS
        os.environ["TORCH_CUDA_ARCH_LIST"] = archs
        sources += sorted(glob.glob(os.path.join("csrc", "*", "*.cu")))
        macros += [("SSL_FAST_WITH_CUDA", None)]
        include_dirs += _pip_cuda_includes()
    macros.append(("SSL_FAST_CUDA_ARCHS", f'"{archs}"'))
    kind = CUDAExtension if with_cuda else CppExtension
    ext = kind(
        name="ssl_fast._C",
        sources=sources,
        include_dirs=include_dirs,
        define_macros=macros,
        extra_compile_args={"cxx": cxx, "nvcc": nvcc} if with_cuda else {"cxx": cxx},
        extra_link_args=link,
    )
    print(f"setup.py: building ssl_fast._C with CUDA {'on (' + archs + ')' if with_cuda else 'off'}")
    return [ext], {"build_ext": BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = _extensions()
setup(
    packages=find_packages(include=["ssl_fast", "ssl_fast.*"]),
    package_data={"ssl_fast.data": ["*.csv"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
