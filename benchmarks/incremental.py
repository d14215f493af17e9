"""Benchmark: an incremental sync after about 1 % of the records changed, beside a full load.

Runs the job once in full (INVOICED_SYNC_MODE=incremental starts with a full load on an empty
destination), changes about `--changed` of each listing's records in the emulator (a third
inserted, a third updated, a third deleted), runs the job again, and prints for both runs the API
requests, wall time, peak RSS and rows written to the destination (rows deleted plus rows
inserted, from each table's materialization); with BENCHMARK_EVENTS=1, the events the
incremental run stored in the Dagster instance, by type, with the time each type took to store.
Each run is a process of its own, so its peak RSS is its own. Dagster start-up (importing it,
loading the definitions and the instance) is paid by each run's process and reported apart.

Rows changed are counted in the warehouse itself: for every table, the rows of the copy taken
before the incremental run that are not in the table after it, plus the rows after it that were
not there before (`EXCEPT ALL` both ways). An updated row counts twice, as it is written twice
(its old version deleted, its new one inserted).

    python benchmarks/incremental.py --scale 20 --latency-ms 0 --objects core
    python benchmarks/incremental.py --scale 5 --latency-ms 0 --objects core --cli

With `--cli`, each run is `dagster job execute -m invoiced_assets -j invoiced_sync`, as a user
runs it: its wall time is the whole command's, start-up included; rows written and versions
opened are then counted in the warehouse (rows changed both ways, history rows added).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from full_load import add_arguments, emulator_json, prepare


def mutate(url: str, listing: str, insert: int, update: int, delete: int) -> None:
    body = json.dumps(
        {"listing": listing, "insert": insert, "update": update, "delete": delete}
    ).encode()
    request = urllib.request.Request(
        url + "/_emulator/mutate", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request) as response:
        response.read()


def run_once() -> None:
    """One run of the job in this process (the environment says where): prints its figures."""
    import resource

    started = time.perf_counter()
    import dagster as dg

    from invoiced_assets.component import build_definitions
    from invoiced_assets.settings import load_settings

    job = build_definitions(load_settings()).resolve_job_def("invoiced_sync")
    (Path(os.environ["DAGSTER_HOME"]) / "dagster.yaml").touch()
    instance = dg.DagsterInstance.get()  # SQLite under DAGSTER_HOME, as `dagster dev` keeps it
    startup = time.perf_counter() - started
    event_costs = time_stored_events(instance) if os.environ.get("BENCHMARK_EVENTS") else None
    started = time.perf_counter()
    if os.environ.get("BENCHMARK_PROFILE"):  # where the run's own process spends its time
        import cProfile

        profile = cProfile.Profile()
        result = profile.runcall(job.execute_in_process, raise_on_error=False, instance=instance)
        profile.dump_stats(os.environ["BENCHMARK_PROFILE"])
    else:
        result = job.execute_in_process(raise_on_error=False, instance=instance)
    wall = time.perf_counter() - started
    materializations = result.asset_materializations_for_node("invoiced_tables")
    written = sum(
        m.metadata["invoiced/rows_deleted"].value + m.metadata["invoiced/rows_inserted"].value
        for m in materializations
    )
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the run's only process
    # The step's own duration (Dagster's run set-up and the events after the step excluded).
    (step,) = [e for e in result.all_events if e.event_type_value == "STEP_SUCCESS"] or [None]
    step_seconds = step.event_specific_data.duration_ms / 1000 if step else float("nan")
    by_table = {
        m.asset_key.path[-1]: [
            m.metadata.get("invoiced/sync_kind", dg.MetadataValue.text("history")).value,
            m.metadata["invoiced/rows_deleted"].value,
            m.metadata["invoiced/rows_inserted"].value,
        ]
        for m in materializations
    }
    versions = sum(  # history tables (INVOICED_HISTORY): the versions this run opened
        m.metadata["invoiced/versions_opened"].value
        for m in materializations
        if "invoiced/versions_opened" in m.metadata
    )
    print(json.dumps({
        "success": result.success, "wall": wall, "startup": startup, "written": written,
        "versions_opened": versions,
        "peak_rss_mb": own,
        "step": step_seconds, "tables": by_table, "events": event_costs,
    }))  # fmt: skip


def time_stored_events(instance: Any) -> dict[str, list[float]]:
    """Count and time every event the run stores in the instance's event log, by type (the
    cost Dagster adds per asset and per check: each event is serialized and written to SQLite).
    Filled in place as the run goes: {event type: [count, seconds]}."""
    storage = instance.event_log_storage
    store = storage.store_event
    costs: dict[str, list[float]] = {}

    def timed(event: Any) -> None:
        started = time.perf_counter()
        try:
            store(event)
        finally:
            kind = event.dagster_event.event_type_value if event.dagster_event else "LOG_MESSAGE"
            cost = costs.setdefault(kind, [0, 0.0])
            cost[0] += 1
            cost[1] += time.perf_counter() - started

    storage.store_event = timed
    return costs


def run_cli(database: Path) -> dict[str, Any]:
    """One run of the job through `dagster job execute`: its figures, counted in the warehouse
    where the materializations are out of reach."""
    dagster = str(Path(sys.executable).parent / "dagster")
    history_before = history_rows(database)
    started = time.perf_counter()
    done = subprocess.run(
        [dagster, "job", "execute", "-m", "invoiced_assets", "-j", "invoiced_sync"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - started
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
    return {
        "success": done.returncode == 0, "wall": wall, "startup": float("nan"),
        "written": -1, "peak_rss_mb": float("nan"), "step": float("nan"),
        "versions_opened": history_rows(database) - history_before, "events": {},
    }  # fmt: skip


def history_rows(database: Path) -> int:
    """Rows of every history table (INVOICED_HISTORY): a run adds one per version it opens."""
    import duckdb

    if not database.exists():
        return 0
    with duckdb.connect(str(database), read_only=True) as connection:
        tables = connection.execute(
            "select table_name from information_schema.tables where table_schema = 'invoiced'"
            " and table_name like '%\\_history' escape '\\'"
        ).fetchall()
        return sum(
            connection.execute(f"select count(*) from invoiced.{name}").fetchall()[0][0]
            for (name,) in tables
        )


def rows_changed(before: Path, after: Path) -> int:
    """Rows that differ between two copies of the warehouse, table by table (both ways)."""
    import duckdb

    with duckdb.connect(str(after), read_only=True) as connection:
        connection.execute(f"attach '{before}' as before_run (read_only)")
        tables = [
            name
            for (name,) in connection.execute(
                "select table_name from information_schema.tables"
                " where table_schema = 'invoiced' and table_catalog = current_database()"
            ).fetchall()
        ]
        total = 0
        for table in tables:
            old, new = f"before_run.invoiced.{table}", f"invoiced.{table}"
            for left, right in ((old, new), (new, old)):
                total += connection.execute(
                    f"select count(*) from (select * from {left} except all select * from {right})"
                ).fetchall()[0][0]
    return total


def main() -> int:
    if sys.argv[1:] == ["--run-once"]:
        run_once()
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--changed", type=float, default=0.01, help="share of records changed")
    parser.add_argument("--cli", action="store_true", help="run through `dagster job execute`")
    args = parser.parse_args()

    emulator, url, enabled = prepare(args, INVOICED_SYNC_MODE="incremental")
    database = Path(os.environ["INVOICED_DUCKDB_PATH"])
    runs = {}
    try:
        for name in ("full", "incremental"):
            if name == "incremental":
                truth = emulator_json(url, "/_emulator/truth")
                for listing in [name for name in enabled if name != "events"]:
                    third = max(1, round(truth[listing] * args.changed / 3))
                    mutate(url, listing, third, third, third)
                shutil.copy(database, database.with_name("before.duckdb"))
            emulator_json(url, "/_emulator/reset-stats", "POST")
            if args.cli:
                runs[name] = run_cli(database)
                runs[name]["requests"] = emulator_json(url, "/_emulator/stats")["requests"]
                continue
            done = subprocess.run(
                [sys.executable, __file__, "--run-once"],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            figures["requests"] = emulator_json(url, "/_emulator/stats")["requests"]
            runs[name] = figures
        changed = rows_changed(database.with_name("before.duckdb"), database)
    finally:
        emulator.terminate()
        emulator.wait()

    print(
        f"scale {args.scale:g}, latency {args.latency_ms:g} ms, objects {args.objects},"
        f" {args.changed:.0%} of records changed before the incremental run"
    )
    for name, run in runs.items():
        if args.cli:
            print(
                f"  {name:<12} success {run['success']}, API requests {run['requests']:6d};"
                f" the command {run['wall']:.2f} s (`dagster job execute`, start-up included)"
            )
            continue
        print(
            f"  {name:<12} success {run['success']}, wall {run['wall']:6.2f} s (start-up"
            f" {run['startup']:.2f} s apart), API requests {run['requests']:6d}, rows written"
            f" {run['written']:8,d}, peak RSS {run['peak_rss_mb']:5.0f} MB; of the wall, the step"
            f" {run['step']:.2f} s"
        )
    full, incremental = runs["full"], runs["incremental"]
    if os.environ.get("INVOICED_HISTORY"):
        print(
            f"  history ({os.environ['INVOICED_HISTORY']}): versions opened by the full load"
            f" {full['versions_opened']:,}, by the incremental run {incremental['versions_opened']:,}"
        )
    if os.environ.get("BENCHMARK_EVENTS"):
        print("  incremental run, events stored: count, seconds (the run's, not only the step's)")
        events = incremental["events"]
        for kind, (count, seconds) in sorted(events.items(), key=lambda kv: -kv[1][1]):
            print(f"    {kind:<32} {count:5d} {seconds:6.3f} s")
        print(
            f"    {'all':<32} {sum(c for c, _ in events.values()):5d}"
            f" {sum(s for _, s in events.values()):6.3f} s"
        )
    if os.environ.get("BENCHMARK_TABLES"):
        print("  incremental run, table: kind, rows deleted, rows inserted")
        for table, figures in sorted(incremental["tables"].items()):
            print(f"    {table:<28} {figures}")
    print(
        f"  requests ratio     {incremental['requests'] / full['requests']:.1%} of the full load's"
    )
    print(f"  wall ratio         {incremental['wall'] / full['wall']:.1%} of the full load's")
    if args.cli:
        return 0 if all(run["success"] for run in runs.values()) else 1
    print(f"  step ratio         {incremental['step'] / full['step']:.1%} of the full load's")
    print(
        f"  rows changed       {changed:,} (EXCEPT ALL both ways); written by the incremental run"
        f" {incremental['written']:,}: {incremental['written'] / max(1, changed):.2f}x"
    )
    return 0 if all(run["success"] for run in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
