"""The extraction runs in a forked child process, and is exactly as good as in the step's threads.

Proves:
- A job whose API reads run in a child process writes every field exactly: in batches of 97
  rows, handed over as files and all removed afterwards, with progress lines sent from other
  threads meanwhile. So do incremental runs after changes and deletions. The step says so in
  its logs.
- Dagster's own waiting threads do not prevent forking; any other thread does. The step reads
  in its own threads when it has other threads, when it is told to, or when the fork fails.
- Errors from the child keep their type and message. A child that crashes or dies fails the
  step with a clear error. A step that stops early stops the child and its requests.
- A fast API is read one object at a time, customers first, and a slow one side by side.
  Objects start while the consumer is busy. A rejected key starts no other object.

The emulator runs in a process of its own here (`EmulatorProcess`): a step forks only while it
has no other thread, and the in-process emulator serves from a thread.
"""

import multiprocessing
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dagster as dg
import pytest

from invoiced_assets import extraction, invoiced_api, shaping, table_data
from invoiced_assets.api_errors import InvoicedAuthenticationError
from invoiced_assets.catalogue import get_object
from invoiced_assets.emulator import EmulatorServer, FaultConfig
from invoiced_assets.extraction import ReadPlan, extract_concurrently
from invoiced_assets.extraction_process import (
    can_fork_for_extraction,
    extract_in_child_process,
)
from invoiced_assets.invoiced_api import ClientSettings, InvoicedClient, RetryPolicy
from invoiced_assets.table_data import BatchDirectory

from .conftest import API_KEY, hold_answers, use_emulator
from .emulator_process import EmulatorProcess
from .test_incremental import change_everything, sync_kinds
from .test_sync_job import run_sync
from .warehouse_compare import assert_matches_truth

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the step forks only on Linux"
)
CHILD_LINE = re.compile(r"Reading the API in child process (\d+)")


def wait_until_single_threaded(timeout: float = 10.0) -> None:
    """Wait for threads of earlier tests to end (an emulator's request handlers, once it is
    stopped, end within moments)."""
    deadline = time.monotonic() + timeout
    while can_fork_for_extraction() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert can_fork_for_extraction() is None, (
        f"a step here may not fork: {can_fork_for_extraction()}"
    )


@pytest.fixture
def account() -> Iterator[EmulatorProcess]:
    wait_until_single_threaded()
    with EmulatorProcess(scale=0.3, seed=4, api_key=API_KEY) as server:
        yield server


def run_logged() -> tuple[dg.ExecuteInProcessResult, list[str]]:
    with dg.instance_for_test() as instance:
        result = run_sync(instance=instance)
        return result, [r.user_message or "" for r in instance.all_logs(result.run_id)]


def step_failure(result: dg.ExecuteInProcessResult) -> str:
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    return failure.step_failure_data.error.message


def child_pids(messages: list[str]) -> list[int]:
    return [int(m.group(1)) for m in map(CHILD_LINE.search, messages) if m]


def test_a_job_read_in_a_child_process_writes_every_field_exactly(
    account: EmulatorProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    batch_root = tmp_path / "tmp"
    batch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(batch_root))
    monkeypatch.setattr(table_data, "BATCH_ROWS", 97)  # inherited by the forked child
    # A progress line from the listing threads for every page, while extractions are sent from
    # another thread: messages of both must not interleave in the pipe.
    monkeypatch.setattr(extraction, "PROGRESS_LOG_INTERVAL_SECONDS", 0.0)
    path = tmp_path / "warehouse.duckdb"
    use_emulator(monkeypatch, account, path)
    result, messages = run_logged()
    assert result.success
    pids = child_pids(messages)
    assert len(pids) == 1 and pids[0] != os.getpid()
    assert sum(" records/s)" in m for m in messages) > 50, "progress lines came through"
    assert assert_matches_truth(account, path) > 50_000
    assert not any(batch_root.iterdir()), "every batch file is removed after the run"


def test_the_step_reads_in_its_own_threads_when_told_or_when_forking_is_unsafe(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with EmulatorServer(scale=0.1, seed=4, api_key=API_KEY) as server:  # serves from a thread
        use_emulator(monkeypatch, server, tmp_path / "warehouse.duckdb")
        result, messages = run_logged()
        assert result.success and not child_pids(messages)
        assert any(
            "Reading in the step's own threads: the step has other threads (invoiced-emulator-" in m
            for m in messages
        )
    wait_until_single_threaded()
    with EmulatorProcess(scale=0.1, seed=4, api_key=API_KEY) as account:
        use_emulator(
            monkeypatch, account, tmp_path / "warehouse.duckdb", INVOICED_EXTRACTION="threads"
        )
        result, messages = run_logged()
        assert result.success and not child_pids(messages)
        assert not any("own threads" in m for m in messages), "no explanation for a choice"


def test_a_crash_in_the_child_fails_the_step_with_its_traceback(
    account: EmulatorProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_emulator(monkeypatch, account, tmp_path / "warehouse.duckdb", INVOICED_STEP_RETRIES="0")

    def broken(self: shaping.ObjectShaper, records: Any) -> None:
        raise RuntimeError("a bug in shaping")

    monkeypatch.setattr(shaping.ObjectShaper, "add_page", broken)
    result, _ = run_logged()
    assert not result.success
    message = step_failure(result)
    assert (
        "The extraction process failed" in message and "RuntimeError: a bug in shaping" in message
    )


def test_a_child_that_dies_fails_the_step_with_its_exit_code(
    account: EmulatorProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    use_emulator(monkeypatch, account, tmp_path / "warehouse.duckdb", INVOICED_STEP_RETRIES="0")
    monkeypatch.setattr(shaping.ObjectShaper, "add_page", lambda self, records: os._exit(7))
    result, _ = run_logged()
    assert not result.success
    assert "The extraction process exited (code 7) before it finished" in step_failure(result)


def client_for(url: str, key: str = API_KEY) -> InvoicedClient:
    retry = RetryPolicy(max_retries=1, backoff_initial_seconds=0.001, backoff_max_seconds=0.01)
    return InvoicedClient(ClientSettings(api_key=key, base_url=url, retry=retry))


def plans_for(*names: str) -> list[ReadPlan]:
    return [ReadPlan(get_object(name), frozenset({name})) for name in names]


def test_a_step_that_stops_early_stops_the_child_and_its_requests(tmp_path: Path) -> None:
    names = ("plans", "invoices", "events")  # one page or two, then 50 and 160
    with (
        EmulatorProcess(scale=1, seed=4, api_key=API_KEY, latency_ms=50) as slow,
        BatchDirectory(str(tmp_path)) as batches,
    ):
        full_read_pages = sum(-(-slow.truth()[name] // 100) for name in names)
        extractions = extract_in_child_process(
            client_for(slow.url), plans_for(*names), batches=batches, log=lambda line: None
        )
        first = next(extractions)
        assert first.error is None
        extractions.close()  # the step stopped (failed, or the run was terminated)
        assert not multiprocessing.active_children(), "the child has exited"
        requests = slow.stats()["requests"]
        time.sleep(0.3)
        assert slow.stats()["requests"] == requests, "no request after the stop"
    # The listings stopped at their next page rather than reading to the end.
    assert requests < full_read_pages / 4, (requests, full_read_pages)


def test_errors_cross_from_the_child_with_their_type(tmp_path: Path) -> None:
    with (
        EmulatorProcess(scale=0.05, seed=4, api_key=API_KEY) as account,
        BatchDirectory(str(tmp_path)) as batches,
    ):
        client = client_for(account.url, key="wrong-key")
        extractions = list(
            extract_in_child_process(
                client, plans_for("customers"), batches=batches, log=lambda line: None
            )
        )
    error = extractions[0].error
    assert isinstance(error, InvoicedAuthenticationError)
    assert error.status == 401 and error.path == "/customers"


def test_an_unpicklable_error_still_crosses_with_its_message() -> None:
    from invoiced_assets.extraction_process import _picklable

    class HoldsALock(OSError):
        def __init__(self) -> None:
            super().__init__("the socket broke")
            self.lock = threading.Lock()

    class TakesNoArguments(ValueError):
        def __init__(self) -> None:
            super().__init__("a bad value")

    # Pickled, the first holds a lock; the second pickles, but cannot be unpickled.
    crossed = _picklable(extraction_with_error(HoldsALock())).error
    assert type(crossed) is OSError and str(crossed) == "HoldsALock: the socket broke"
    crossed = _picklable(extraction_with_error(TakesNoArguments())).error
    assert type(crossed) is ValueError and str(crossed) == "TakesNoArguments: a bad value"


def extraction_with_error(error: BaseException) -> extraction.Extraction:
    from invoiced_assets.invoiced_api import ListingStats

    return extraction.Extraction(plans_for("customers")[0], ListingStats("/customers"), error=error)


class ObjectsAtOnce:
    """Counts how many objects are read at the same time, and in which order they start."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.running: list[str] = []
        self.started: list[str] = []
        self.most = 0
        self._lock = threading.Lock()
        original = extraction.extract_object

        def counting(client: InvoicedClient, plan: ReadPlan, **kwargs: Any) -> Any:
            with self._lock:
                self.running.append(plan.obj.name)
                self.started.append(plan.obj.name)
                self.most = max(self.most, len(self.running))
            try:
                return original(client, plan, **kwargs)
            finally:
                with self._lock:
                    self.running.remove(plan.obj.name)

        monkeypatch.setattr(extraction, "extract_object", counting)


# Contacts are listed per customer: read before the customers, they would wait forever.
OBJECTS = ("contacts", "invoices", "customers", "payments", "estimates")


def row_counts(extractions: list[extraction.Extraction]) -> dict[str, int]:
    assert all(e.error is None for e in extractions)
    return {name: t.row_count for e in extractions for name, t in (e.tables or {}).items()}


def test_a_fast_api_is_read_one_object_at_a_time_customers_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with EmulatorServer(scale=0.1, seed=4, api_key=API_KEY) as emulator:
        at_once = ObjectsAtOnce(monkeypatch)
        # Fast: no request waits a whole second on the API in the test's own emulator.
        monkeypatch.setattr(extraction, "FAST_ROUND_TRIP_SECONDS", 1.0)
        fast = list(extract_concurrently(client_for(emulator.url), plans_for(*OBJECTS)))
        assert at_once.most == 1 and at_once.started[0] == "customers"
        at_once.most = 0
        # Slow: every request waits longer than that.
        monkeypatch.setattr(extraction, "FAST_ROUND_TRIP_SECONDS", 0.0)
        slow = list(extract_concurrently(client_for(emulator.url), plans_for(*OBJECTS)))
        assert at_once.most > 1
    assert row_counts(fast) == row_counts(slow)


def test_a_slow_api_has_its_objects_read_side_by_side(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with EmulatorServer(scale=0.1, seed=4, api_key=API_KEY, faults=FaultConfig()) as emulator:
        at_once = ObjectsAtOnce(monkeypatch)
        client = client_for(emulator.url)
        extractions = list(extract_concurrently(client, plans_for("customers")))
        emulator.set_faults(FaultConfig(latency_ms=40))  # slower than FAST_ROUND_TRIP_SECONDS
        extractions += extract_concurrently(client, plans_for(*OBJECTS[:2], *OBJECTS[3:]))
        assert at_once.most > 1
    assert row_counts(extractions)


def test_the_client_says_how_long_its_oldest_request_has_waited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a fake clock, with the answer held until the test releases it: no timing."""
    clock = [100.0]
    monkeypatch.setattr(
        invoiced_api, "time", SimpleNamespace(monotonic=lambda: clock[0], sleep=time.sleep)
    )
    with EmulatorServer(scale=0.05, seed=4, api_key=API_KEY, faults=FaultConfig()) as emulator:
        arrived, release = hold_answers(monkeypatch, emulator)
        client = client_for(emulator.url)
        assert client.waiting_seconds() == 0.0
        thread = threading.Thread(target=client.get, args=("/customers", {"per_page": 1}))
        thread.start()
        assert arrived.wait(30)  # the request is in progress, its start read at 100.0
        clock[0] = 107.5
        assert client.waiting_seconds() == 7.5
        release.set()
        thread.join()
        assert client.waiting_seconds() == 0.0


def test_dagster_threads_that_only_wait_do_not_prevent_forking() -> None:
    """A run launched by Dagster (the UI, a schedule) has these two; any other thread does."""
    release = threading.Event()
    threads = [
        threading.Thread(target=release.wait, name=name)
        for name in ("termination-handler", "QueueFeederThread")
    ]
    for thread in threads:
        thread.start()
    try:
        assert can_fork_for_extraction() is None
        other = threading.Thread(target=release.wait, name="someone-else")
        other.start()
        threads.append(other)
        assert "other threads (someone-else)" in (can_fork_for_extraction() or "")
    finally:
        release.set()
        for thread in threads:
            thread.join()


def test_a_rejected_key_starts_no_other_object(monkeypatch: pytest.MonkeyPatch) -> None:
    with EmulatorServer(scale=0.1, seed=4, api_key=API_KEY) as emulator:
        monkeypatch.setattr(extraction, "FAST_ROUND_TRIP_SECONDS", 1.0)  # one at a time
        client = client_for(emulator.url, key="wrong-key")
        extractions = list(extract_concurrently(client, plans_for(*OBJECTS)))
        assert emulator.stats()["requests"] == 1
    errors = {e.obj.name: e.error for e in extractions}
    assert isinstance(errors.pop("customers"), InvoicedAuthenticationError)
    assert len(errors) == len(OBJECTS) - 1
    assert all(isinstance(e, extraction.ExtractionCancelled) for e in errors.values())


def test_objects_start_while_the_consumer_is_busy_with_the_last_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The step writes a table while the next objects are read, in threads as in a child."""
    with EmulatorServer(scale=0.1, seed=4, api_key=API_KEY) as emulator:
        at_once = ObjectsAtOnce(monkeypatch)
        monkeypatch.setattr(extraction, "FAST_ROUND_TRIP_SECONDS", 1.0)  # one at a time
        extractions = extract_concurrently(client_for(emulator.url), plans_for(*OBJECTS))
        first = next(extractions)
        deadline = time.monotonic() + 10
        while len(at_once.started) < len(OBJECTS) and time.monotonic() < deadline:
            time.sleep(0.05)  # the step, writing the first object's tables
        assert at_once.started == ["customers", "invoices", "payments", "estimates", "contacts"]
        assert at_once.most == 1
        rest = list(extractions)
    assert row_counts([first, *rest])


def test_incremental_runs_read_in_a_child_process_equal_the_truth(
    account: EmulatorProcess, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Changes, deletions (per-customer listings included) cross from the child exactly."""
    path = tmp_path / "warehouse.duckdb"
    use_emulator(monkeypatch, account, path, INVOICED_SYNC_MODE="incremental")
    with dg.instance_for_test() as instance:
        for round_number in range(2):  # a full load, then an incremental run
            if round_number:
                change_everything(account, round_number)  # type: ignore[arg-type]
            result = run_sync(instance=instance)
            assert result.success
            messages = [r.user_message or "" for r in instance.all_logs(result.run_id)]
            assert child_pids(messages)
            kinds = set(sync_kinds(result).values())
            assert kinds == ({"full"} if round_number == 0 else {"full", "incremental"})
            assert_matches_truth(account, path)


def test_a_fork_that_fails_falls_back_to_the_steps_threads(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def no_more_processes(self: object) -> None:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(multiprocessing.context.ForkProcess, "start", no_more_processes)
    lines: list[str] = []
    with (
        EmulatorProcess(scale=0.05, seed=4, api_key=API_KEY) as account,
        BatchDirectory(str(tmp_path)) as batches,
    ):
        extractions = list(
            extract_in_child_process(
                client_for(account.url), plans_for("customers", "invoices"),
                batches=batches, log=lines.append,
            )
        )  # fmt: skip
        truth = account.truth()
    assert lines[0].startswith(
        "Reading in the step's own threads: a child process could not be started"
    )
    counts = row_counts(extractions)
    assert counts["customers"] == truth["customers"] and counts["invoices"] == truth["invoices"]
