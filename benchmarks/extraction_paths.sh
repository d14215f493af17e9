#!/usr/bin/env bash
# The extraction in a forked child process against the step's own threads (INVOICED_EXTRACTION),
# alternated run by run so that the machine's drifting speed affects both alike, at 0, 50, 100
# and 200 ms of API latency: the core objects at scale 5, every object at scale 1.
# Usage: bash benchmarks/extraction_paths.sh [repetitions, default 2]
# Prints one line per run: the mode, the arguments, and full_load.py's figures.
set -uo pipefail
cd "$(dirname "$0")/.."
python=.venv/bin/python
repetitions="${1:-2}"
run() {  # mode, full_load.py arguments...
  local mode=$1
  shift
  out=$(INVOICED_EXTRACTION=$mode timeout 900 "$python" benchmarks/full_load.py "$@" 2>&1 |
    grep -E "machine|success|wall time|peak RSS|wall / bound")
  echo "== $mode $* :: $(echo "$out" | tr '\n' ' ' | tr -s ' ')"
}
for latency in 0 50 100 200; do
  for _ in $(seq "$repetitions"); do
    run process --scale 5 --latency-ms "$latency" --objects core
    run threads --scale 5 --latency-ms "$latency" --objects core
  done
done
for latency in 0 50 100 200; do
  for _ in $(seq "$repetitions"); do
    run threads --scale 1 --latency-ms "$latency"
    run process --scale 1 --latency-ms "$latency"
  done
done
