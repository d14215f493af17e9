"""Benchmark: an incremental sync after about 1 % of the records changed, beside a full load.

Runs the job once in full (INVOICED_SYNC_MODE=incremental starts with a full load on an empty
destination), changes about `--changed` of each listing's records in the emulator (a third
inserted, a third updated, a third deleted), runs the job again, and prints both runs' API
requests and wall time. Dagster start-up (importing it and loading the definitions) is a fixed
cost paid once per process and is reported apart.

    python benchmarks/incremental.py --scale 5 --latency-ms 100 --objects core
"""

import argparse
import json
import os
import sys
import time
import urllib.request

from full_load import add_arguments, emulator_json, peak_rss_line, peak_rss_mb, prepare


def mutate(url: str, listing: str, insert: int, update: int, delete: int) -> None:
    body = json.dumps(
        {"listing": listing, "insert": insert, "update": update, "delete": delete}
    ).encode()
    request = urllib.request.Request(
        url + "/_emulator/mutate", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request) as response:
        response.read()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--changed", type=float, default=0.01, help="share of records changed")
    args = parser.parse_args()

    emulator, url, enabled = prepare(args, INVOICED_SYNC_MODE="incremental")
    workdir = os.environ["DAGSTER_HOME"]
    try:
        started = time.perf_counter()
        import dagster as dg

        from invoiced_assets.definitions import build_definitions
        from invoiced_assets.settings import load_settings

        job = build_definitions(load_settings()).resolve_job_def("invoiced_sync")
        startup = time.perf_counter() - started
        runs = {}
        with dg.instance_for_test(temp_dir=workdir) as instance:
            for name in ("full", "incremental"):
                if name == "incremental":
                    truth = emulator_json(url, "/_emulator/truth")
                    for listing in [name for name in enabled if name != "events"]:
                        third = max(1, round(truth[listing] * args.changed / 3))
                        mutate(url, listing, third, third, third)
                emulator_json(url, "/_emulator/reset-stats", "POST")
                started = time.perf_counter()
                result = job.execute_in_process(instance=instance, raise_on_error=False)
                wall = time.perf_counter() - started
                requests = emulator_json(url, "/_emulator/stats")["requests"]
                runs[name] = (result.success, wall, requests)
        child_rss = peak_rss_mb(children=True)
    finally:
        emulator.terminate()
        emulator.wait()

    print(
        f"scale {args.scale:g}, latency {args.latency_ms:g} ms,"
        f" {args.changed:.0%} of records changed before the incremental run"
    )
    print(f"  Dagster start-up   {startup:.2f} s (once per process, not in the figures below)")
    for name, (ok, wall, requests) in runs.items():
        print(f"  {name:<12} success {ok}, wall {wall:6.2f} s, API requests {requests:5d}")
    full_requests, incremental_requests = runs["full"][2], runs["incremental"][2]
    print(f"  requests ratio     {incremental_requests / full_requests:.1%} of the full load's")
    print(f"  wall ratio         {runs['incremental'][1] / runs['full'][1]:.2f}x")
    print(f"  peak RSS           {peak_rss_line(child_rss)}")
    return 0 if all(ok for ok, _, _ in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
