#!/usr/bin/env bash
# Full loads of two checkouts, alternated, so that the machine's drifting speed affects both alike.
# Usage: bash benchmarks/interleave.sh OTHER_CHECKOUT   (e.g. `git worktree add /tmp/old <commit>`)
# Prints one line per run: which checkout, the arguments, and full_load.py's figures.
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
other="$(cd "$1" && pwd)"
python="$here/.venv/bin/python"
run() {  # label, checkout, full_load.py arguments...
  local label=$1 dir=$2
  shift 2
  out=$(cd "$dir" && PYTHONPATH="$dir" timeout 900 "$python" benchmarks/full_load.py "$@" 2>&1 |
    grep -E "machine|success|wall time|peak RSS|wall / bound")
  echo "== $label $* :: $(echo "$out" | tr '\n' ' ' | tr -s ' ')"
}
for _ in 1 2 3; do
  run this "$here" --scale 5 --latency-ms 0 --objects core
  run other "$other" --scale 5 --latency-ms 0 --objects core
done
for _ in 1 2; do
  run other "$other" --scale 5 --latency-ms 100 --objects core
  run this "$here" --scale 5 --latency-ms 100 --objects core
done
for _ in 1 2; do
  run this "$here" --scale 5 --latency-ms 0
  run other "$other" --scale 5 --latency-ms 0
done
