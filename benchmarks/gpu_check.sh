#!/usr/bin/env bash
# GPU check of ssl_fast, for a Linux machine with an NVIDIA GPU, a CUDA build of torch
# (with pytest and pytest-benchmark), nvcc, and no network:
#   1. build ssl_fast._C in place for this card's compute capability only;
#   2. print nvidia-smi, nvcc and `python -m ssl_fast info`;
#   3. run the CUDA tests (`pytest tests -k cuda`), those under torch.compile last;
#   4. benchmark every op on the GPU (`python -m ssl_fast bench all --device cuda`);
#   5. print a summary of the steps, then the benchmark table last.
# Every step is timed and limited so that the whole check stays under 9 minutes. A
# failed step is reported and the script goes on where the next steps still make sense
# (no tests or benchmarks without a build); the exit status is 1 if any step failed.
# All outputs go under ${OUT:-benchmarks/out}/; with ARCHIVE=FILE (outside OUT) they are
# also packed into one .tar.gz after every step, for a runner that brings back only a few
# files and may stop the script before its end:
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
# Only this run's outputs: none of an earlier run's may pass for this one's.
rm -f "$OUT"/*.log "$OUT"/*.txt "$OUT"/arch.err "$OUT"/results.csv "$OUT"/bench.json "$OUT"/table.md
if [[ -n ${ARCHIVE:-} ]]; then
  ARCHIVE=$(cd "$(dirname "$ARCHIVE")" && pwd)/$(basename "$ARCHIVE")
fi

# Seconds per step; with the short steps (15 + 15 + 30 and two 30 s probes) at most
# 530 s in all, plus up to 10 s per step to kill one at its limit. The CUDA tests run
# twice over (tiled and fused kernels) and the benchmarks reach 2N = 64k.
BUILD_LIMIT=150
TEST_LIMIT=110
COMPILE_TEST_LIMIT=70
BENCH_LIMIT=110

SUMMARY=()
FAILED=0

# Packs $OUT into $ARCHIVE when set (written aside, then renamed: never half a file).
pack() {
  [[ -n ${ARCHIVE:-} ]] || return 0
  tar czf "$ARCHIVE.part" -C "$OUT" . && mv -f "$ARCHIVE.part" "$ARCHIVE" && return 0
  FAILED=1
  echo "!!! packing $OUT into $ARCHIVE failed" >&2
}
trap pack EXIT

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
  pack
  if ((status == 0)); then
    SUMMARY+=("ok      $name (${took} s)")
    return 0
  fi
  local why="exit status $status"
  if ((status == 124 || status == 137)); then  # 137: killed 10 s after the limit
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
if arch=$(timeout -k 5 30 "$PYTHON" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())' \
  2>"$OUT/arch.err"); then
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
  # 45 s is hung: where pytest-timeout is installed, it names the test and ends the run
  # (its thread method, the one that works while a CUDA call blocks, exits the process).
  pytest_args=(-q --maxfail=25 -rfE --durations=10 -p no:cacheprovider)
  timeout_args=()
  if timeout -k 5 30 "$PYTHON" -c 'import pytest_timeout' 2>/dev/null; then
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
exit "$FAILED"  # the EXIT trap packs the outputs a last time
