"""The sync step's warehouse work runs one object ahead of Dagster's handling of its events.

Proves (`sync.ahead.run_ahead`, with events, never timing):
- The items come in order, and the batches are made in a thread other than the caller's.
- Batch n+1 is made while the caller is still handling batch n, and never batch n+2: one ahead.
- An error making a batch is raised in the caller, after the items before it.
- A caller that stops early (an error, or the generator closed) leaves no thread: the batch
  under way is told to stop and finished, no other is made, and the batches' own clean-up runs
  in their thread.
- In a sync step, every object is staged, audited and published in that thread, and a publish
  that fails stops the step before any of its object's outputs and before any later object.
"""

import threading
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from invoiced_assets.catalogue import CATALOGUE
from invoiced_assets.component import build_definitions
from invoiced_assets.destinations import publication
from invoiced_assets.emulator import EmulatorServer
from invoiced_assets.settings import load_settings
from invoiced_assets.sync.ahead import run_ahead

from .conftest import API_KEY, use_emulator

WAIT = 30  # seconds: only a broken pipeline waits this long (then the test fails, not hangs)


@pytest.fixture
def account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    """A small account of three objects, loaded into the test's own DuckDB file."""
    with EmulatorServer(scale=0.05, seed=5, api_key=API_KEY) as server:
        read = ("customers", "invoices", "payments")
        use_emulator(
            monkeypatch,
            server,
            tmp_path / "warehouse.duckdb",
            INVOICED_DISABLED_OBJECTS=",".join(o.name for o in CATALOGUE if o.name not in read),
        )
        yield server


def batches(
    log: list[str], count: int, made: list[threading.Event] | None = None
) -> Iterator[list[str]]:
    """`count` batches of two items, saying in `log` when each is made and where they close."""
    try:
        for n in range(count):
            log.append(f"make {n}")
            if made is not None:
                made[n].set()
            yield [f"{n}a", f"{n}b"]
    finally:
        log.append(f"closed in {threading.current_thread().name}")


def test_items_come_in_order_from_another_thread() -> None:
    log: list[str] = []
    assert list(run_ahead(lambda stop: batches(log, 3))) == ["0a", "0b", "1a", "1b", "2a", "2b"]
    assert log[-1] == "closed in invoiced-warehouse"
    assert "invoiced-warehouse" not in {t.name for t in threading.enumerate()}


def test_the_next_batch_is_made_while_the_caller_handles_this_one_and_no_further() -> None:
    log: list[str] = []
    made = [threading.Event() for _ in range(4)]
    items = run_ahead(lambda stop: batches(log, 4, made))
    assert next(items) == "0a"
    # Still handling batch 0: batch 1 is made meanwhile, batch 2 is not.
    assert made[1].wait(WAIT)
    log.append("handled 0")
    assert next(items) == "0b"
    assert next(items) == "1a"  # batch 0 handled: batch 2 may now be made
    assert made[2].wait(WAIT)
    assert list(items) == ["1b", "2a", "2b", "3a", "3b"]
    assert log.index("make 2") > log.index("handled 0")
    assert log.index("make 1") < log.index("handled 0")


def test_an_error_is_raised_in_the_caller_after_the_items_before_it() -> None:
    def failing() -> Iterator[list[str]]:
        yield ["first"]
        raise RuntimeError("the warehouse said no")

    items = run_ahead(lambda stop: failing())
    assert next(items) == "first"
    with pytest.raises(RuntimeError, match="the warehouse said no"):
        next(items)


def test_a_caller_that_stops_early_leaves_no_thread_and_no_further_batch() -> None:
    log: list[str] = []
    made = [threading.Event() for _ in range(5)]
    items = run_ahead(lambda stop: batches(log, 5, made))
    assert next(items) == "0a"
    assert made[1].wait(WAIT)  # one ahead, then waiting for the caller
    items.close()
    assert "invoiced-warehouse" not in {t.name for t in threading.enumerate()}
    assert log == ["make 0", "make 1", "closed in invoiced-warehouse"]


def test_a_caller_that_stops_early_tells_the_batch_under_way_to_end() -> None:
    log: list[str] = []
    waiting = threading.Event()

    def slow(stop: threading.Event) -> Iterator[list[str]]:
        yield ["0a"]
        waiting.set()
        log.append("stopped" if stop.wait(WAIT) else "not stopped")  # a listing under way
        yield ["1a"]

    items = run_ahead(slow)
    assert next(items) == "0a"
    assert waiting.wait(WAIT)
    items.close()  # returns once the batch under way has ended
    assert log == ["stopped"]
    assert "invoiced-warehouse" not in {t.name for t in threading.enumerate()}


def test_a_step_publishes_in_the_warehouse_thread(
    account: EmulatorServer, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    threads: set[str] = set()
    publish = publication.publish_object

    def recorded(*args: object, **kwargs: object) -> object:
        threads.add(threading.current_thread().name)
        return publish(*args, **kwargs)

    monkeypatch.setattr(publication, "publish_object", recorded)
    result = (
        build_definitions(load_settings())
        .resolve_job_def("invoiced_sync")
        .execute_in_process(instance=instance)
    )
    assert result.success
    assert threads == {"invoiced-warehouse"}


def test_a_failed_publish_stops_the_step_before_its_outputs_and_later_objects(
    account: EmulatorServer,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    calls: list[str] = []
    publish = publication.publish_object

    def failing_second(destination: object, staged: object, *args: object) -> object:
        calls.append(staged.name)  # type: ignore[attr-defined]
        if len(calls) == 2:  # the later objects would publish: none may be tried
            raise RuntimeError(f"publishing {staged.name} failed")  # type: ignore[attr-defined]
        return publish(destination, staged, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(publication, "publish_object", failing_second)
    monkeypatch.setenv("INVOICED_STEP_RETRIES", "0")  # one attempt: a retry publishes again
    result = (
        build_definitions(load_settings())
        .resolve_job_def("invoiced_sync")
        .execute_in_process(instance=instance, raise_on_error=False)
    )
    assert not result.success
    first, second = calls  # no third publish: the step stopped at the failed one
    (failure,) = [e for e in result.all_events if e.is_step_failure]
    assert f"publishing {second} failed" in str(failure.step_failure_data.error)
    materialized = {
        m.asset_key.path[-1] for m in result.asset_materializations_for_node("invoiced_tables")
    }
    # Only the first object's tables are recorded; nothing after the failed one was published.
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as connection:
        tables = {
            name
            for (name,) in connection.execute(
                "select table_name from information_schema.tables where table_schema = 'invoiced'"
            ).fetchall()
        }
    assert materialized == tables
    assert first in tables and second not in tables
