#!/usr/bin/env bash
# The wheel as a user gets it: installed with the train, bench and plot extras into a fresh
# venv outside the checkout, beside an exactly pinned CPU torch, then run from that folder:
# `info`, a 2-step `train simclr` (curves.png beside its metrics), a small `bench` with
# --plot (outputs in ./bench-out), and nothing written into the installed package.
#
#   .ci/wheel_check.sh DIST TORCH_SPEC     e.g. .ci/wheel_check.sh dist torch==2.13.0
#   (make wheel-check builds DIST first; PYTHON makes the venv, python3 by default)
set -euo pipefail
dist=$(cd "${1:?usage: wheel_check.sh DIST TORCH_SPEC}" && pwd)
torch_spec=${2:?usage: wheel_check.sh DIST TORCH_SPEC}
wheels=("$dist"/ssl_fast-*.whl)
if [[ ${#wheels[@]} -ne 1 || ! -f ${wheels[0]} ]]; then
  echo "wheel_check: expected one ssl_fast wheel in $dist" >&2
  exit 1
fi

work=$(mktemp -d /tmp/ssl_fast-wheel-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
"${PYTHON:-python3}" -m venv "$work/venv"
export PATH="$work/venv/bin:$PATH"
python -m pip install -q "$torch_spec"
python -m pip install -q "${wheels[0]}[train,bench,plot]"
package=$(python -c 'import pathlib, ssl_fast; print(pathlib.Path(ssl_fast.__file__).parent)')
touch "$work/installed"

cd "$work"
step() {
  echo "=== $*"
  "$@"
}
step python -m ssl_fast info
step ssl-fast train simclr --steps 2 --batch-size 32 --quiet --out runs
step test -s runs/simclr/curves.png
step ssl-fast bench nt_xent --device cpu --sizes 256x64 --rounds 2 --plot nt_xent.png
step test -s bench-out/table.md -a -s bench-out/results.csv -a -s nt_xent.png
written=$(find "$package" -newer "$work/installed")
if [[ -n $written ]]; then
  echo "wheel_check: the runs wrote into the installed package:" >&2
  echo "$written" >&2
  exit 1
fi
echo "wheel_check: ok ($(basename "${wheels[0]}"))"
