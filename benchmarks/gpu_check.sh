#!/usr/bin/env bash
# GPU check of ssl_fast, for a Linux machine with an NVIDIA GPU, a CUDA build of torch
# (with pytest and pytest-benchmark), nvcc, and no network. Steps, in this order:
#   build     ssl_fast._C in place, for this card's compute capability only, then
#             `python -m ssl_fast info` (every op must have its CUDA kernel);
#   cases     benchmarks/gpu_cases.py: one small call of every kernel, forward and
#             backward, against the CPU, under torch.cuda.set_sync_debug_mode("error");
#   tests     the CUDA tests (`pytest tests -k cuda`), those under torch.compile apart;
#   sanitize  compute-sanitizer on the cases: memcheck, then racecheck (shared memory),
#             both limited to ssl_fast's own kernels;
#   train     `ssl_fast train simclr --device cuda`, in fp32 and with --amp bf16;
#   sweep     NT-Xent and InfoNCE, bf16 and fp32, 2N from 8k to 256k, D = 128 and 256, and
#             2N = 1M in bf16: the materialised formula, stage 1, stage 2, open_clip's
#             ClipLoss and inf_cl where installed;
#   bench     the other ops at their default sizes: the regression losses and the masking
#             (against the copy bandwidth measured in the same run), and SigLIP.
# Name steps to run only those (without `build`, the build already in the checkout), or
# one of the two passes that each fit a 10-minute call (the sums of their steps' limits):
#   bash benchmarks/gpu_check.sh                 # every step (935 s of limits in all)
#   bash benchmarks/gpu_check.sh pass1           # build cases tests train (530 s)
#   bash benchmarks/gpu_check.sh pass2           # build sanitize sweep bench (585 s)
#   bash benchmarks/gpu_check.sh cases sweep     # with the build in the checkout
# Each step is timed and limited; one killed at its limit is reported as timed out. A
# failed step is reported and the script goes on where the next
# steps still make sense (nothing needs a build that failed); the exit status is 1 if
# any step failed. Outputs go under ${OUT:-benchmarks/out}/; with ARCHIVE=FILE (outside
# OUT) they are also packed into one .tar.gz after every step, for a runner that brings
# back only a few files and may stop the script before its end:
#   a=$OUT/gpu_check.tgz; OUT=/tmp/gpu_check ARCHIVE=$a bash benchmarks/gpu_check.sh pass1
set -euo pipefail
export PYTHONUNBUFFERED=1  # a step killed at its limit keeps its output up to then

cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# Only this run's outputs: none of an earlier run's may pass for this one's.
rm -rf "$OUT"/*.log "$OUT"/*.txt "$OUT"/*.csv "$OUT"/*.json "$OUT"/*.md "$OUT"/train
if [[ -n ${ARCHIVE:-} ]]; then
  ARCHIVE=$(cd "$(dirname "$ARCHIVE")" && pwd)/$(basename "$ARCHIVE")
fi

ALL_STEPS=(build cases tests sanitize train sweep bench)
steps=()
for arg in "$@"; do
  case $arg in
    pass1) steps+=(build cases tests train) ;;
    pass2) steps+=(build sanitize sweep bench) ;;
    build | cases | tests | sanitize | train | sweep | bench) steps+=("$arg") ;;
    *) echo "unknown step '$arg': pass1, pass2 or any of ${ALL_STEPS[*]}" >&2; exit 2 ;;
  esac
done
((${#steps[@]})) || steps=("${ALL_STEPS[@]}")
wants() { [[ " ${steps[*]} " == *" $1 "* ]]; }

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
run_step "versions" 15 versions.txt "$PYTHON" -c 'import sys, torch; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda); print(torch.cuda.get_device_name(), torch.cuda.get_device_capability())' || true
git log -1 --format='commit %H %s' >"$OUT/commit.txt" 2>/dev/null || echo "commit: not a git checkout" >"$OUT/commit.txt"

built=1
if wants build; then
  build_env=(SSL_FAST_CUDA=1 MAX_JOBS=16)
  if arch=$(timeout -k 5 30 "$PYTHON" -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())' \
    2>"$OUT/arch.txt"); then
    build_env+=("TORCH_CUDA_ARCH_LIST=$arch")
  else
    FAILED=1
    SUMMARY+=("FAILED  reading the GPU's compute capability (see $OUT/arch.txt): building for setup.py's default archs")
  fi
  # The resource report of every kernel (registers, shared memory, spills) goes to the log.
  run_step "build (${build_env[*]})" 120 build.log \
    env "${build_env[@]}" NVCC_APPEND_FLAGS="-Xptxas=-v" "$PYTHON" setup.py build_ext --inplace || built=0
fi
if ((built)) && run_step "ssl_fast info" 30 info.txt "$PYTHON" -m ssl_fast info; then
  # Lines "op cpu cuda" of the info table whose cuda column says no.
  if missing=$(grep -E '^[a-z_0-9]+ +(yes|no) +no$' "$OUT/info.txt"); then
    FAILED=1
    SUMMARY+=("FAILED  no CUDA kernel for: $(echo "$missing" | cut -d' ' -f1 | tr '\n' ' ')(ssl_fast rows run the reference)")
  fi
else
  built=0
  SUMMARY+=("skipped every step after the build: no usable build of ssl_fast._C")
fi

if ((built)) && wants cases; then
  run_step "cases, sync debug mode on" 60 cases.log "$PYTHON" -m benchmarks.gpu_cases || true
fi

if ((built)) && wants tests; then
  # Many failures are shown, not the first alone: a GPU run is rare. Eight workers where
  # pytest-xdist is installed. A single test taking 45 s is hung: where pytest-timeout is
  # installed, it names the test and ends the run (its thread method, the one that works
  # while a CUDA call blocks, exits the process).
  pytest_args=(-q --maxfail=50 -rfE --durations=10 -p no:cacheprovider)
  if timeout -k 5 30 "$PYTHON" -c 'import xdist' 2>/dev/null; then
    pytest_args+=(-n 8)
  fi
  if timeout -k 5 30 "$PYTHON" -c 'import pytest_timeout' 2>/dev/null; then
    pytest_args+=(--timeout=45 --timeout-method=thread)
  fi
  run_step "CUDA tests" 100 tests.log \
    "$PYTHON" -m pytest tests "${pytest_args[@]}" -k "cuda and not torch_compile" || true
  run_step "CUDA torch.compile tests" 70 compile_tests.log \
    "$PYTHON" -m pytest tests "${pytest_args[@]}" -k "cuda and torch_compile" || true
fi

if ((built)) && wants sanitize; then
  # Only kernels whose name holds "ssl_fast" are instrumented (cuBLAS and torch's run as
  # they are); the sync check is off, as the tool's own calls would trip it.
  sanitizer=(compute-sanitizer --kernel-name kns=ssl_fast --error-exitcode 3 --print-limit 20)
  run_step "compute-sanitizer memcheck" 90 memcheck.log \
    "${sanitizer[@]}" --tool memcheck "$PYTHON" -m benchmarks.gpu_cases --no-sync-check || true
  run_step "compute-sanitizer racecheck" 45 racecheck.log \
    "${sanitizer[@]}" --tool racecheck "$PYTHON" -m benchmarks.gpu_cases --no-sync-check \
    --cases nt_xent info_nce_queue siglip mse_mask bce mask_tokens_exact random_masking || true
fi

if ((built)) && wants train; then
  train=("$PYTHON" -m ssl_fast train simclr --device cuda --steps 200 --quiet --json --no-tensorboard
         --checkpoint-every 0)
  run_step "train simclr --device cuda" 60 train_fp32.log "${train[@]}" --out "$OUT/train/fp32" || true
  run_step "train simclr --device cuda --amp bf16" 60 train_bf16.log \
    "${train[@]}" --amp bf16 --out "$OUT/train/bf16" || true
fi

bench=("$PYTHON" -m ssl_fast bench --device cuda --csv "$OUT/results.csv" --json "$OUT/bench.json")
if ((built)) && wants sweep; then
  # N pairs (2N rows); the formula and stage 1 stop where their cases say (memory, time).
  # 2N = 1M in bf16 alone: fp32 runs stage 1 there (TF32 is off), tens of seconds a round.
  run_step "contrastive sweep" 150 sweep.log "${bench[@]}" --table "$OUT/sweep.md" --rounds 3 \
    --sizes 4096x128,4096x256,32768x128,32768x256,131072x128 --dtypes bf16,fp32 nt_xent info_nce || true
  run_step "contrastive sweep, 2N = 1M" 45 sweep_1m.log "${bench[@]}" --table "$OUT/sweep_1m.md" \
    --rounds 3 --sizes 524288x128 --dtypes bf16 nt_xent info_nce || true
fi
if ((built)) && wants bench; then
  run_step "GPU benchmarks" 75 bench.log "${bench[@]}" --table "$OUT/table.md" \
    smooth_l1 mse bce bce_with_logits mask_tokens random_masking siglip || true
fi

echo
echo "=== summary (${SECONDS} s in all; steps: ${steps[*]}; outputs in $OUT)"
printf '%s\n' "${SUMMARY[@]}" | tee "$OUT/summary.txt"
for table in "$OUT/table.md" "$OUT/sweep.md" "$OUT/sweep_1m.md"; do
  if [[ -s $table ]]; then
    echo
    cat "$table"
  fi
done
exit "$FAILED"  # the EXIT trap packs the outputs a last time
