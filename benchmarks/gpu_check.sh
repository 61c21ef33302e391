#!/usr/bin/env bash
# GPU check of ssl_fast, for a Linux machine with an NVIDIA GPU, a CUDA build of torch
# (with pytest and pytest-benchmark), nvcc, and no network:
#   1. build ssl_fast._C in place for this card's compute capability only;
#   2. print nvidia-smi, nvcc and `python -m ssl_fast info`;
#   3. run the CUDA tests (`pytest tests -k cuda`), those under torch.compile last;
#   4. benchmark every op on the GPU (`python -m ssl_fast bench all --device cuda`);
#   5. print a summary of the steps, then the benchmark table last.
# Every step is timed and limited so that the whole check stays under 8 minutes. A
# failed step is reported and the script goes on where the next steps still make sense
# (no tests or benchmarks without a build); the exit status is 1 if any step failed.
# All outputs go under ${OUT:-benchmarks/out}/; with ARCHIVE=FILE they are also packed
# into one .tar.gz, for a runner that brings back only a few files:
#
#   bash benchmarks/gpu_check.sh                 # PYTHON=python OUT=/tmp/out bash ...
#   a=$OUT/gpu_check.tgz; OUT=/tmp/gpu_check ARCHIVE=$a bash benchmarks/gpu_check.sh
set -euo pipefail
export PYTHONUNBUFFERED=1  # a step killed at its limit keeps its output up to then

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
rm -f "$OUT/table.md"  # so that only this run's table is printed at the end

# Seconds per step; with the short steps (15 + 15 + 30) at most 480 s in all. The CUDA
# tests run twice over (tiled and fused kernels) and the benchmarks reach 2N = 64k.
BUILD_LIMIT=160
TEST_LIMIT=110
COMPILE_TEST_LIMIT=40
BENCH_LIMIT=110

SUMMARY=()
FAILED=0

# run_step NAME LIMIT LOG COMMAND...: runs COMMAND for at most LIMIT seconds, with its
# output on the terminal and in $OUT/LOG, and records the outcome in SUMMARY. Returns
# COMMAND's exit status, so that later steps can depend on it.
run_step() {
  local name=$1 limit=$2 log=$OUT/$3
  shift 3
  local start=$SECONDS status=0
  echo "=== $name: $*"
  timeout -k 10 "$limit" "$@" 2>&1 | tee "$log" || status=$?
  local took=$((SECONDS - start))
  if ((status == 0)); then
    SUMMARY+=("ok      $name (${took} s)")
    return 0
  fi
  local why="exit status $status"
  if ((status == 124)); then
    why="timed out after ${limit} s"
  fi
  FAILED=1
  SUMMARY+=("FAILED  $name: $why after ${took} s; log: $log")
  echo "!!! $name FAILED: $why; log: $log" >&2
  return "$status"
}

run_step "nvidia-smi" 15 nvidia-smi.txt nvidia-smi || true
run_step "nvcc" 15 nvcc.txt nvcc --version || true

# Compile for this card only: one arch instead of setup.py's default list.
build_env=(SSL_FAST_CUDA=1 MAX_JOBS=16)
if arch=$("$PYTHON" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())' 2>"$OUT/arch.err"); then
  build_env+=("TORCH_CUDA_ARCH_LIST=$arch")
else
  FAILED=1
  SUMMARY+=("FAILED  reading the GPU's compute capability (see $OUT/arch.err): building for setup.py's default archs")
fi

if run_step "build (${build_env[*]})" "$BUILD_LIMIT" build.log \
  env "${build_env[@]}" "$PYTHON" setup.py build_ext --inplace; then
  if run_step "ssl_fast info" 30 info.txt "$PYTHON" -m ssl_fast info; then
    # Lines "op cpu cuda" of the info table whose cuda column says no.
    if missing=$(grep -E '^[a-z_0-9]+ +(yes|no) +no$' "$OUT/info.txt"); then
      FAILED=1
      SUMMARY+=("FAILED  no CUDA kernel for: $(echo "$missing" | cut -d' ' -f1 | tr '\n' ' ')(ssl_fast rows run the reference)")
    fi
  fi
  # Many failures are shown, not the first alone: a GPU run is rare. A single test taking
  # 45 s is hung (where pytest-timeout is installed, it names the test).
  pytest_args=(-q --maxfail=25 -rfE --durations=10 -p no:cacheprovider)
  timeout_args=()
  if "$PYTHON" -c 'import pytest_timeout' 2>/dev/null; then
    timeout_args=(--timeout=45 --timeout-method=thread)
  fi
  run_step "CUDA tests" "$TEST_LIMIT" tests.log \
    "$PYTHON" -m pytest tests "${pytest_args[@]}" ${timeout_args[@]+"${timeout_args[@]}"} -k "cuda and not torch_compile" || true
  run_step "CUDA torch.compile tests" "$COMPILE_TEST_LIMIT" compile_tests.log \
    "$PYTHON" -m pytest tests "${pytest_args[@]}" -k "cuda and torch_compile" || true
  run_step "GPU benchmarks" "$BENCH_LIMIT" bench.log \
    "$PYTHON" -m ssl_fast bench all --device cuda \
    --csv "$OUT/results.csv" --table "$OUT/table.md" --json "$OUT/bench.json" || true
else
  SUMMARY+=("skipped info, CUDA tests and GPU benchmarks: no build")
fi

echo
echo "=== summary (${SECONDS} s in all; outputs in $OUT)"
printf '%s\n' "${SUMMARY[@]}" | tee "$OUT/summary.txt"
echo
if [[ -s $OUT/table.md ]]; then
  cat "$OUT/table.md"
else
  echo "no benchmark table: the GPU benchmarks did not complete"
fi
if [[ -n ${ARCHIVE:-} ]]; then
  tar czf "$ARCHIVE" -C "$OUT" . && echo "outputs packed into $ARCHIVE"
fi
exit "$FAILED"
