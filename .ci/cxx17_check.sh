#!/usr/bin/env bash
# Compiles every source as C++17 against the headers of an older torch, front ends only
# (no code is generated): torch 2.11 and older build extensions as C++17, newer releases
# as C++20, whose headers no longer parse as C++17. So the CI build, against a newer
# torch, cannot see a C++20 feature that breaks the build on those releases.
#
#   .ci/cxx17_check.sh PYTHON [TORCH_SPEC]
# PYTHON: the interpreter of a CUDA build of torch, whose pip packages hold the CUDA
# library headers (cuBLAS ...); TORCH_SPEC: the torch whose headers are used
# (default torch==2.11.0; its wheel is downloaded once, without its dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=$1
SPEC=${2:-torch==2.11.0}
DIR=build/cxx17-check/${SPEC//[^A-Za-z0-9.]/_}

if [[ ! -d $DIR/torch/include ]]; then
  rm -rf "$DIR" && mkdir -p "$DIR"
  "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$DIR" "$SPEC"
  unzip -q "$DIR"/torch-*.whl 'torch/include/*' -d "$DIR"
  rm "$DIR"/torch-*.whl
fi

site=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
pyinc=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
nvcc=${CUDA_HOME:-/usr/local/cuda}/bin/nvcc
includes=(-Icsrc "-I$DIR/torch/include" "-I$DIR/torch/include/torch/csrc/api/include"
  "-I$site/nvidia/cu13/include" "-I${CUDA_HOME:-/usr/local/cuda}/include" "-I$pyinc")
# The macros setup.py defines, and those torch's CUDA builds add.
defines=(-DSSL_FAST_WITH_CUDA '-DSSL_FAST_BUILD_TORCH="cxx17-check"' '-DSSL_FAST_CUDA_ARCHS="9.0"'
  -DTORCH_API_INCLUDE_EXTENSION_H -DTORCH_EXTENSION_NAME=_C)
cuda_defines=(-D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__
  -D__CUDA_NO_HALF2_OPERATORS__ --expt-relaxed-constexpr)

check() {
  local src=$1 out
  case $src in
    *.cu) out=$("$nvcc" --cuda -std=c++17 "${includes[@]}" "${defines[@]}" "${cuda_defines[@]}" \
      -gencode=arch=compute_90,code=compute_90 "$src" -o /dev/null 2>&1) ;;
    *) out=$(g++ -std=c++17 -fsyntax-only -fopenmp "${includes[@]}" "${defines[@]}" "$src" 2>&1) ;;
  esac || { printf 'FAILED  %s\n%s\n' "$src" "$out"; return 1; }
  echo "ok      $src"
}
sources=(csrc/*.cpp csrc/*/*.cpp csrc/*/*.cu)
echo "C++17 front ends against $SPEC's headers: ${#sources[@]} sources"
status=0
running=()
for src in "${sources[@]}"; do
  if ((${#running[@]} == 2)); then  # two at a time: the CI machine has two cores
    wait "${running[0]}" || status=1
    running=("${running[@]:1}")
  fi
  check "$src" &
  running+=($!)
done
for pid in "${running[@]}"; do wait "$pid" || status=1; done
exit "$status"
