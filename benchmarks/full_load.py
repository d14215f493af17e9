"""Benchmark: a full load (job invoiced_sync) from the emulator into a fresh DuckDB file.

Prints wall time, records/s, API requests, peak memory (RSS of this process, which runs the job;
the emulator runs in its own process), and the API lower bound of a single walk: the longest
listing's pages times the added latency (pages of one listing must be fetched one after another).

`--objects core` replicates the seven objects the hosted service copies (customers, invoices,
payments, subscriptions, credit notes, estimates, credit balance adjustments); `--objects all`
(the default) the whole catalogue, events and the per-customer listings included.

    python benchmarks/full_load.py --scale 5 --latency-ms 100 --objects core
    python benchmarks/full_load.py --scale 5 --latency-ms 0
    python benchmarks/full_load.py --scale 5 --latency-ms 0 --objects core --instance memory
    python benchmarks/full_load.py --scale 1 --cli   # through `dagster job execute`, start-up included
"""

import argparse
import atexit
import json
import math
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

API_KEY = "benchmark-key"


def start_emulator(scale: float, latency_ms: float) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "invoiced_assets.emulator", "--port", "0", "--scale", str(scale),
         "--latency-ms", str(latency_ms), "--api-key", API_KEY],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"http://\S+", line)
    if not match:
        process.kill()
        raise SystemExit(f"emulator did not start: {line!r}")
    return process, match.group(0)


def emulator_json(url: str, path: str, method: str = "GET") -> dict:
    request = urllib.request.Request(
        url + path, method=method, data=b"" if method == "POST" else None
    )
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read() or b"{}")


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one by default), or NaN where unknown."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_seconds() -> float:
    """Time of a fixed pure-Python loop: this machine's speed at the moment (it varies between
    runs of shared machines; compare figures measured at similar values)."""
    started = time.perf_counter()
    sum(i * i for i in range(10**7))
    return time.perf_counter() - started


def peak_rss_mb(*, children: bool = False) -> float:
    """Peak RSS of this process, or of the largest of its ended child processes (call it before
    the emulator is waited for: then the child is `dagster job execute`'s)."""
    who = resource.RUSAGE_CHILDREN if children else resource.RUSAGE_SELF
    return resource.getrusage(who).ru_maxrss / 1024  # Linux: KiB


CORE_OBJECTS = (
    "customers",
    "invoices",
    "payments",
    "subscriptions",
    "credit_notes",
    "estimates",
    "credit_balance_adjustments",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", type=float, default=5)
    parser.add_argument("--latency-ms", type=float, default=100)
    parser.add_argument("--objects", choices=("core", "all"), default="all")


def prepare(args: argparse.Namespace, **environment: str) -> tuple[subprocess.Popen, str, list]:
    """Start the emulator, point the project at it and a fresh DuckDB file; the listings read."""
    from invoiced_assets.catalogue import CATALOGUE

    emulator, url = start_emulator(args.scale, args.latency_ms)
    workdir = tempfile.mkdtemp(prefix="invoiced-bench-")
    atexit.register(shutil.rmtree, workdir, ignore_errors=True)  # the DuckDB file and instance
    enabled = [o.name for o in CATALOGUE if args.objects == "all" or o.name in CORE_OBJECTS]
    os.environ.update(
        INVOICED_API_KEY=API_KEY,
        INVOICED_BASE_URL=url,
        INVOICED_DUCKDB_PATH=str(Path(workdir) / "warehouse.duckdb"),
        INVOICED_DISABLED_OBJECTS=",".join(o.name for o in CATALOGUE if o.name not in enabled),
        DAGSTER_HOME=workdir,
        **environment,
    )
    return emulator, url, enabled


def load_job(instance_kind: str = "sqlite") -> tuple[object, object]:
    """The job, and the Dagster instance it runs in: SQLite storage under DAGSTER_HOME (what
    `dagster dev` uses), or in memory (the pipeline's own speed, without writing Dagster's
    ~250 events of a run to disk).

    Both are start-up: `dagster dev` and `dagster job execute` create them before any run.
    """
    import dagster as dg

    from invoiced_assets.component import build_definitions
    from invoiced_assets.settings import load_settings

    job = build_definitions(load_settings()).resolve_job_def("invoiced_sync")
    if instance_kind == "memory":
        return job, dg.DagsterInstance.ephemeral()
    (Path(os.environ["DAGSTER_HOME"]) / "dagster.yaml").touch()  # the defaults, said so
    return job, dg.DagsterInstance.get()


def run_in_process(job: object, instance: object) -> tuple[bool, int]:
    result = job.execute_in_process(raise_on_error=False, instance=instance)
    rows = sum(
        m.metadata["dagster/row_count"].value
        for m in result.asset_materializations_for_node("invoiced_tables")
    )
    return result.success, int(rows)


def tree_rss_mb(root: int) -> float:
    """The summed RSS of a process and all its descendants (Linux /proc), in MB."""
    parents: dict[int, int] = {}
    rss: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        parents[int(entry.name)] = int(fields["PPid"])
        rss[int(entry.name)] = int(fields.get("VmRSS", "0 kB").split()[0]) / 1024
    tree, grown = {root}, True
    while grown:
        found = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= found
        grown = bool(found)
    return sum(rss.get(pid, 0.0) for pid in tree)


def run_cli() -> tuple[bool, float]:
    """`dagster job execute`; whether it succeeded, and the most RSS its processes held
    together (sampled)."""
    dagster = str(Path(sys.executable).parent / "dagster")
    command = subprocess.Popen([dagster, "job", "execute", "-m", "invoiced_assets", "-j",
                                "invoiced_sync"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # fmt: skip
    peak_mb = 0.0
    while command.poll() is None:
        peak_mb = max(peak_mb, tree_rss_mb(command.pid))
        time.sleep(0.2)
    return command.returncode == 0, peak_mb


def counts_against_truth(truth: dict[str, int], enabled: list[str]) -> list[str]:
    """Each object table's row count in the DuckDB file against the emulator's ground truth
    (every record: archived plans and items, hidden payment sources, every customer's
    contacts); returns the tables that differ."""
    import duckdb

    path = os.environ["INVOICED_DUCKDB_PATH"]
    with duckdb.connect(path, read_only=True) as connection:
        stored = {
            name: connection.execute(f"select count(*) from invoiced.{name}").fetchall()[0][0]
            for name in enabled
        }
    return [f"{n}: {stored[n]} rows, truth {truth[n]}" for n in enabled if stored[n] != truth[n]]


def hidden_payment_sources(url: str) -> int:
    """Payment sources the listing leaves out unless asked with include_hidden=1."""
    request = urllib.request.Request(url + "/_emulator/records/payment_sources")
    with urllib.request.urlopen(request) as response:
        return sum(1 for source in json.loads(response.read()) if not source.get("chargeable"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    parser.add_argument("--cli", action="store_true", help="run through `dagster job execute`")
    parser.add_argument(
        "--instance",
        choices=("sqlite", "memory"),
        default="sqlite",
        help="the Dagster instance's storage (in process): SQLite on disk, or in memory",
    )
    args = parser.parse_args()

    emulator, url, enabled = prepare(args)
    try:
        truth = emulator_json(url, "/_emulator/truth")
        counts = {k: v for k, v in truth.items() if k in enabled}
        records = sum(counts.values())
        longest = max(counts, key=lambda name: counts[name])
        longest_pages = math.ceil(counts[longest] / 100)
        bound = longest_pages * args.latency_ms / 1000
        emulator_json(url, "/_emulator/reset-stats", "POST")
        emulator_cpu = cpu_seconds(emulator.pid)

        started = time.perf_counter()
        job, instance = (None, None) if args.cli else load_job(args.instance)
        startup = time.perf_counter() - started
        started, job_cpu = time.perf_counter(), cpu_seconds()
        if args.cli:
            (ok, tree_mb), rows = run_cli(), -1
        else:
            ok, rows = run_in_process(job, instance)
        wall, job_cpu = time.perf_counter() - started, cpu_seconds() - job_cpu
        cli_rss = peak_rss_mb(children=True)
        emulator_cpu = cpu_seconds(emulator.pid) - emulator_cpu
        stats = emulator_json(url, "/_emulator/stats")
        differ = counts_against_truth(truth, enabled) if ok else ["the run failed"]
        hidden = hidden_payment_sources(url) if "payment_sources" in enabled else 0
    finally:
        emulator.terminate()
        emulator.wait()

    how = "CLI" if args.cli else f"in process, Dagster instance in {args.instance}"
    print(f"scale {args.scale:g}, latency {args.latency_ms:g} ms, {how}")
    print(
        f"  machine            {machine_seconds():.2f} s for a fixed Python loop (lower is faster)"
    )
    print(f"  success            {ok}")
    print(f"  records (API)      {records:,} in {len(enabled)} objects; rows written {rows:,}")
    exact = "every object table equals the emulator's truth" if not differ else "; ".join(differ)
    print(f"  counts             {exact}")
    if hidden:
        print(f"  hidden sources     {hidden} payment sources not chargeable, among those counted")
    if not args.cli:
        print(
            f"  start-up           {startup:.2f} s (importing dagster, loading the definitions and"
            " the instance)"
        )
    print(
        f"  wall time          {wall:.2f} s ({'the whole command' if args.cli else 'the job run'})"
    )
    print(f"  records/s          {records / wall:,.0f}")
    print(
        f"  API requests       {stats['requests']:,} (by status {stats['by_status']}; at most"
        f" {stats['max_in_flight_seen']} in flight)"
    )
    if not args.cli:
        print(f"  CPU                {job_cpu:.2f} s job process, {emulator_cpu:.2f} s emulator"
              f" (sharing {os.cpu_count()} cores)")  # fmt: skip
    if args.cli:
        print(f"  peak RSS           {cli_rss:,.0f} MB the largest process of the command;"
              f" {tree_mb:,.0f} MB all its processes together (sampled)")  # fmt: skip
    else:
        print(f"  peak RSS           {peak_rss_mb():,.0f} MB (the job's process: the only one)")
    if bound:
        print(
            f"  API lower bound    {bound:.2f} s ({longest}: {longest_pages} pages x {args.latency_ms:g} ms)"
        )
        print(f"  wall / bound       {wall / bound:.2f}x")
    return 0 if ok and not differ else 1


if __name__ == "__main__":
    sys.exit(main())
