"""Benchmark: what history mode (INVOICED_HISTORY=all) costs an incremental sync after 1 % of
the records changed, against the same sync without it, interleaved.

Runs `benchmarks/incremental.py` (a full load, 1 % of each listing's records changed, then an
incremental run; see there) alternately with and without history, `--pairs` times, and prints
each run's incremental step time, the versions it opened and the ratio of the medians.

    python benchmarks/history.py --scale 5 --latency-ms 0 --objects core --pairs 3
    python benchmarks/history.py --scale 5 --latency-ms 0 --objects core --pairs 3 --cli

With `--cli`, the runs are `dagster job execute` (see `incremental.py --cli`), and the time
compared is the incremental run's whole command, start-up included.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent


def run(args: argparse.Namespace, history: bool) -> tuple[float, int, int]:
    """(incremental step seconds, or with --cli the command's, versions it opened, records
    changed) of one run."""
    env = {k: v for k, v in os.environ.items() if k != "INVOICED_HISTORY"}
    if history:
        env["INVOICED_HISTORY"] = "all"
    done = subprocess.run(
        [sys.executable, str(HERE / "incremental.py"), "--scale", str(args.scale),
         "--latency-ms", str(args.latency_ms), "--objects", args.objects]
        + (["--cli"] if args.cli else []),
        env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(done.stdout + done.stderr[-3000:])
    timed = r"the command ([0-9.]+) s" if args.cli else r"the step ([0-9.]+) s"
    step = float(re.search(r"incremental .*" + timed, done.stdout).group(1))
    versions = re.search(
        r"versions opened by the full load [0-9,]+, by the incremental run ([0-9,]+)", done.stdout
    )
    changed = re.search(r"rows changed +([0-9,]+)", done.stdout)
    return (
        step,
        int(versions.group(1).replace(",", "")) if versions else 0,
        int(changed.group(1).replace(",", "")) if changed else 0,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=5)
    parser.add_argument("--latency-ms", type=float, default=0)
    parser.add_argument("--objects", choices=("core", "all"), default="core")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--cli", action="store_true", help="runs through `dagster job execute`")
    args = parser.parse_args()
    steps: dict[bool, list[float]] = {False: [], True: []}
    what = "command" if args.cli else "step"
    for pair in range(args.pairs):
        for history in (False, True) if pair % 2 == 0 else (True, False):
            step, versions, changed = run(args, history)
            steps[history].append(step)
            label = "with history   " if history else "without history"
            print(f"  {label} incremental {what} {step:6.2f} s, versions opened {versions:,}"
                  + (f" (rows changed in the warehouse {changed:,})" if history and not args.cli else ""))  # fmt: skip
    without, with_history = statistics.median(steps[False]), statistics.median(steps[True])
    print(
        f"scale {args.scale:g}, {args.latency_ms:g} ms, objects {args.objects}: median incremental"
        f" {what} {with_history:.2f} s with history, {without:.2f} s without:"
        f" {with_history / without:.2f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
