"""No overlapping syncs: at most one sync reads and writes a warehouse at a time.

Proves: the schedule skips a tick, with a reason naming the run and its status, while a sync is
queued, not started, starting, started or canceling, and runs otherwise; where the instance does
not enforce the pool `invoiced_sync`, the step of a later run fails at once, before any API
request or warehouse write, naming the earlier run, while the earlier run is never stopped by a
later one; where it does (SQLite instance, `concurrency: pools: default_limit: 1`), the step
trusts the pool. End to end, two `dagster job execute` runs on one DuckDB file, the second
launched while the first is reading: with the pool setting both succeed, in full and in
incremental mode, the second's step waiting for the first's; without it the second fails at once
naming the first; either way every table ends exact.

The first run is kept in progress by a gate in front of the emulator (`GatedProxy`) that holds
its API requests until the test has seen what the second run does, so nothing depends on how
fast the machine is.
"""

import http.client
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import duckdb
import pytest

from invoiced_assets import assets, schedules
from invoiced_assets.catalogue import CATALOGUE, INVOICES
from invoiced_assets.component import build_definitions
from invoiced_assets.emulator import EmulatorServer
from invoiced_assets.settings import load_settings
from invoiced_assets.sync import exclusivity
from invoiced_assets.sync.exclusivity import POOL, SyncRun

from .conftest import API_KEY, use_emulator, wait_for

PREFIX = (assets.KEY_PREFIX,)
SELECTED = ("customers", "invoices")
ONLY_SELECTED = ",".join(obj.name for obj in CATALOGUE if obj.name not in SELECTED)
POOL_YAML = "concurrency:\n  pools:\n    default_limit: 1\n"
WAIT_SECONDS = 120  # generous: only reached when something is wrong
# Headers the proxy sets itself (or that concern one connection), not copied from the other side.
NOT_FORWARDED = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"}
)


def add_run(
    instance: dg.DagsterInstance,
    status: dg.DagsterRunStatus,
    job_name: str = schedules.JOB_NAME,
    asset_selection: frozenset[dg.AssetKey] | None = None,
) -> str:
    run = dg.DagsterRun(job_name=job_name, status=status, asset_selection=asset_selection)
    instance.add_run(run)
    return run.run_id


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """An on-disk SQLite instance: a schedule's context needs one it can refer to."""
    with sqlite_instance(tmp_path / "home", None) as instance:
        yield instance


def evaluate_schedule(instance: dg.DagsterInstance) -> Any:
    prefix = [assets.KEY_PREFIX]
    schedule = schedules.build_sync_schedule(schedules.build_sync_job(prefix), 6, prefix)
    return schedule(dg.build_schedule_context(instance=instance))


# -- the schedule --------------------------------------------------------------------------


IN_PROGRESS = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


# A queued run needs the origin of a loaded code location, which no public API builds: its
# status is covered below, by the statuses the instance is asked for.
@pytest.mark.parametrize("status", IN_PROGRESS[1:], ids=lambda s: s.value)
def test_the_schedule_skips_while_a_sync_is_queued_or_in_progress(
    instance: dg.DagsterInstance, status: dg.DagsterRunStatus
) -> None:
    add_run(instance, dg.DagsterRunStatus.SUCCESS)
    run_id = add_run(instance, status)
    result = evaluate_schedule(instance)
    assert isinstance(result, dg.SkipReason)
    assert f"run {run_id} ({status.value}," in (result.skip_message or "")


def test_queued_syncs_count_as_in_progress() -> None:
    assert set(exclusivity.IN_PROGRESS) == set(IN_PROGRESS)
    queued = SyncRun("queued-run", dg.DagsterRunStatus.QUEUED, datetime(2030, 1, 1), 1)
    assert "run queued-run (QUEUED," in (exclusivity.skip_reason([queued]) or "")


def test_the_schedule_skips_while_the_ui_materializes_the_assets(
    instance: dg.DagsterInstance,
) -> None:
    key = dg.AssetKey([assets.KEY_PREFIX, "invoices"])
    run_id = add_run(instance, dg.DagsterRunStatus.STARTED, "__ASSET_JOB", frozenset([key]))
    result = evaluate_schedule(instance)
    assert isinstance(result, dg.SkipReason) and run_id in (result.skip_message or "")


def test_the_schedule_runs_otherwise(instance: dg.DagsterInstance) -> None:
    assert isinstance(evaluate_schedule(instance), dg.RunRequest)
    for status in (
        dg.DagsterRunStatus.SUCCESS,
        dg.DagsterRunStatus.FAILURE,
        dg.DagsterRunStatus.CANCELED,
    ):
        add_run(instance, status)
    add_run(instance, dg.DagsterRunStatus.STARTED, "some_other_job")
    other = frozenset([dg.AssetKey(["elsewhere", "table"])])
    add_run(instance, dg.DagsterRunStatus.STARTED, "__ASSET_JOB", other)
    assert isinstance(evaluate_schedule(instance), dg.RunRequest)


# -- who gives way ---------------------------------------------------------------------------


def sync(run_id: str, order: int) -> SyncRun:
    return SyncRun(run_id, dg.DagsterRunStatus.STARTED, datetime(2030, 1, 1, tzinfo=UTC), order)


def test_only_the_later_recorded_run_gives_way() -> None:
    older, newer = sync("older", 1), sync("newer", 2)
    assert exclusivity.run_to_give_way_to(newer, [older, newer]) == older
    assert exclusivity.run_to_give_way_to(older, [older, newer]) is None
    assert exclusivity.run_to_give_way_to(older, [older]) is None
    # Several earlier ones: the earliest is named.
    assert exclusivity.run_to_give_way_to(sync("third", 3), [newer, older]) == older
    # A run the instance does not list gives way to any.
    assert exclusivity.run_to_give_way_to(None, [newer]) == newer


@pytest.mark.parametrize(
    "has_pools, limit, holds_slot, gap",
    [
        (True, 1, True, None),
        (False, None, False, "keeps no concurrency pools"),
        (True, None, False, "has no limit"),
        (True, 2, True, "allows 2 steps at once"),
        (True, 1, False, "holds no slot"),
    ],
)
def test_the_pool_counts_only_when_it_holds_this_step_alone(
    has_pools: bool, limit: int | None, holds_slot: bool, gap: str | None
) -> None:
    found = exclusivity.pool_gap(has_pools, limit, holds_slot)
    assert found is None if gap is None else gap in (found or "")


def test_an_older_run_is_not_blocked_by_a_newer_one(instance: dg.DagsterInstance) -> None:
    older = add_run(instance, dg.DagsterRunStatus.STARTED)
    newer = add_run(instance, dg.DagsterRunStatus.STARTING)
    assert "give way to this run" in exclusivity.check_sole_sync(instance, older, PREFIX)
    with pytest.raises(dg.Failure) as raised:
        exclusivity.check_sole_sync(instance, newer, PREFIX)
    message = raised.value.description or ""
    assert f"run {older} (STARTED," in message and "terminate (or delete) it" in message
    assert "default_limit: 1" in message and not raised.value.allow_retries


def test_the_constants_agree_with_the_definitions() -> None:
    job = build_definitions(load_settings({})).resolve_job_def(schedules.JOB_NAME)
    assert {node.definition.pool for node in job.graph.nodes} == {POOL}


# -- the step, in process ------------------------------------------------------------------


def run_in_process(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = build_definitions(load_settings()).resolve_job_def(schedules.JOB_NAME)
    return job.execute_in_process(instance=instance, raise_on_error=False)


@contextmanager
def sqlite_instance(path: Path, pools: dict[str, Any] | None) -> Iterator[dg.DagsterInstance]:
    overrides = {"concurrency": {"pools": pools}} if pools else None
    path.mkdir()
    with dg.instance_for_test(temp_dir=str(path), overrides=overrides) as instance:
        yield instance


@pytest.mark.parametrize(
    "instance_for, gap",
    [
        (lambda path: sqlite_instance(path, None), "has no limit"),
        # Pools per run hold only runs launched through the run queue, not this one.
        (lambda path: sqlite_instance(path, {"default_limit": 1, "granularity": "run"}),
         "holds no slot"),
        (lambda path: dg.DagsterInstance.ephemeral(), "keeps no concurrency pools"),
    ],
    ids=["no-limit", "granularity-run", "ephemeral"],
)  # fmt: skip
def test_without_the_pool_a_later_run_fails_at_once(
    fresh_emulator: EmulatorServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    instance_for: Callable[[Path], AbstractContextManager[dg.DagsterInstance]],
    gap: str,
) -> None:
    database = tmp_path / "warehouse.duckdb"
    use_emulator(monkeypatch, fresh_emulator, database, INVOICED_DISABLED_OBJECTS=ONLY_SELECTED)
    fresh_emulator.reset_stats()
    with instance_for(tmp_path / "home") as instance:
        earlier = add_run(instance, dg.DagsterRunStatus.STARTED)
        result = run_in_process(instance)
    assert not result.success
    events = [e.event_type_value for e in result.all_events]
    # Step retries are on (INVOICED_STEP_RETRIES defaults to 2) but this failure skips them.
    assert events.count("STEP_FAILURE") == 1 and "STEP_UP_FOR_RETRY" not in events
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.error.message
    assert f"run {earlier} (STARTED," in message and gap in message
    assert fresh_emulator.stats()["requests"] == 0
    assert not database.exists()


def test_where_the_pool_holds_the_step_trusts_it(
    fresh_emulator: EmulatorServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run recorded as in progress that holds no slot (e.g. still starting) does not stop the
    one holding the pool's slot: the other's step will wait for it."""
    use_emulator(
        monkeypatch, fresh_emulator, tmp_path / "w.duckdb", INVOICED_DISABLED_OBJECTS=ONLY_SELECTED
    )
    overrides = {"concurrency": {"pools": {"default_limit": 1}}}
    with dg.instance_for_test(temp_dir=str(tmp_path), overrides=overrides) as instance:
        add_run(instance, dg.DagsterRunStatus.STARTING)
        result = run_in_process(instance)
        assert result.success
        logs = [e.message for e in instance.all_logs(result.run_id)]
        assert any(f"only slot of the pool {POOL}" in m for m in logs)


# -- two `dagster job execute` runs on one warehouse -------------------------------------------


class GatedProxy:
    """A forwarding HTTP proxy to the emulator that holds every request while it is closed."""

    def __init__(self, target: str) -> None:
        self.target = urlsplit(target)
        self.gate = threading.Event()
        self.arrived = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Forward(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                proxy.arrived.set()
                proxy.gate.wait(WAIT_SECONDS)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in NOT_FORWARDED}
                upstream = http.client.HTTPConnection(
                    proxy.target.hostname, proxy.target.port, timeout=60
                )
                try:
                    upstream.request(self.command, self.path, body, headers)
                    response = upstream.getresponse()
                    data = response.read()
                finally:
                    upstream.close()
                self.send_response(response.status)
                for name, value in response.getheaders():
                    if name.lower() not in NOT_FORWARDED:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_POST = do_GET

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Forward

    def __enter__(self) -> "GatedProxy":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Launched:
    """One `dagster job execute` process, its output in a file."""

    process: subprocess.Popen[bytes]
    output: Path

    def finish(self) -> tuple[int, str]:
        code = self.process.wait(timeout=WAIT_SECONDS)
        return code, self.output.read_text()


@dataclass
class Setup:
    home: Path
    database: Path
    proxy: GatedProxy
    account: EmulatorServer
    instance: dg.DagsterInstance
    launched: list[Launched] = field(default_factory=list)

    def launch(self, name: str, mode: str) -> Launched:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(self.home),
            "INVOICED_BASE_URL": self.proxy.url,
            "INVOICED_SYNC_MODE": mode,
        }
        output = self.home.parent / f"{name}.log"
        with output.open("wb") as sink:
            process = subprocess.Popen(
                [str(Path(sys.executable).parent / "dagster"), "job", "execute",
                 "-m", "invoiced_assets", "-j", schedules.JOB_NAME],
                env=env, stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
        self.launched.append(Launched(process, output))
        return self.launched[-1]

    def stop_what_is_left(self) -> None:
        """After a failed test: stop the runs this test launched that are still going."""
        for launched in self.launched:
            if launched.process.poll() is None:
                launched.process.kill()
                launched.process.wait(timeout=30)

    def new_run(self, known: set[str]) -> str | None:
        records = self.instance.get_run_records(dg.RunsFilter(job_name=schedules.JOB_NAME))
        fresh = [r.dagster_run.run_id for r in records if r.dagster_run.run_id not in known]
        return fresh[0] if fresh else None

    def known_runs(self) -> set[str]:
        records = self.instance.get_run_records(dg.RunsFilter(job_name=schedules.JOB_NAME))
        return {r.dagster_run.run_id for r in records}

    def first_event(self, run_id: str, kind: dg.DagsterEventType) -> float | None:
        events = self.instance.all_logs(run_id, of_type=kind)
        return events[0].timestamp if events else None

    def logs(self, run_id: str) -> list[str]:
        return [e.message for e in self.instance.all_logs(run_id)]

    def start_two(self, mode: str) -> tuple[Launched, str, Launched, str]:
        """The first run, reading (held at the gate), then the second, once the first reads."""
        self.proxy.gate.clear()
        self.proxy.arrived.clear()
        before = self.known_runs()
        first = self.launch(f"first-{mode}", mode)
        wait_for("the first run's first API request", lambda: self.proxy.arrived.wait(0.5))
        first_id = wait_for("the first run's record", lambda: self.new_run(before))
        second = self.launch(f"second-{mode}", mode)
        second_id = wait_for("the second run's record", lambda: self.new_run(before | {first_id}))
        return first, first_id, second, second_id


def expected_counts(account: EmulatorServer) -> dict[str, int]:
    truth = account.truth()
    counts = {name: truth[name] for name in SELECTED}
    records = account.records(INVOICES.name)
    for child in INVOICES.children:
        counts[child.name] = sum(len(r.get(child.source_field) or ()) for r in records)
    return counts


def table_counts(database: Path) -> dict[str, int]:
    with duckdb.connect(str(database), read_only=True) as connection:
        tables = connection.execute(
            "select table_name from information_schema.tables where table_schema = 'invoiced'"
        ).fetchall()
        return {
            name: connection.execute(f"select count(*) from invoiced.{name}").fetchall()[0][0]
            for (name,) in tables
        }


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Setup]:
    """An emulator behind a gate, a DuckDB file and a DAGSTER_HOME (dagster.yaml written by the
    test), shared by two `dagster job execute` processes."""
    home = tmp_path / "home"
    home.mkdir()
    with (
        EmulatorServer(scale=0.1, seed=5, api_key=API_KEY) as account,
        GatedProxy(account.url) as proxy,
    ):
        database = tmp_path / "warehouse.duckdb"
        use_emulator(monkeypatch, account, database, INVOICED_DISABLED_OBJECTS=ONLY_SELECTED)
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        (home / "dagster.yaml").write_text("")
        with dg.DagsterInstance.get() as instance:
            setup = Setup(home, database, proxy, account, instance)
            try:
                yield setup
            finally:
                setup.stop_what_is_left()


def waits_for_the_first(setup: Setup, mode: str) -> None:
    first, first_id, second, second_id = setup.start_two(mode)
    blocked = f"Step blocked by limit for pool {POOL}"
    wait_for("the second step to wait for the pool", lambda: blocked in setup.logs(second_id))
    setup.proxy.gate.set()
    for launched in (first, second):
        code, output = launched.finish()
        assert code == 0, output[-3000:]
    first_done = setup.first_event(first_id, dg.DagsterEventType.STEP_SUCCESS)
    second_started = setup.first_event(second_id, dg.DagsterEventType.STEP_START)
    assert first_done is not None and second_started is not None
    assert second_started >= first_done
    assert table_counts(setup.database) == expected_counts(setup.account)


def test_with_the_pool_the_second_run_waits_for_the_first(setup: Setup) -> None:
    (setup.home / "dagster.yaml").write_text(POOL_YAML)
    waits_for_the_first(setup, "full")
    setup.account.mutate("customers", insert=3, update=2, delete=1)
    setup.account.mutate("invoices", insert=4, update=3, delete=2)
    waits_for_the_first(setup, "incremental")


def test_without_the_pool_the_second_run_fails_at_once(setup: Setup) -> None:
    first, first_id, second, second_id = setup.start_two("full")
    code, output = second.finish()  # while the first is still held at the gate
    assert code != 0
    assert f"run {first_id} (STARTED," in output and "has no limit" in output
    assert setup.first_event(second_id, dg.DagsterEventType.STEP_UP_FOR_RETRY) is None
    setup.proxy.gate.set()
    code, output = first.finish()
    assert code == 0, output[-3000:]
    assert table_counts(setup.database) == expected_counts(setup.account)
