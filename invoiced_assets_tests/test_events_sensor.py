"""`invoiced_events_sensor` turns new Invoiced events into one incremental sync of exactly the
tables they touch, and costs one request a poll while nothing changes.

Against the emulator: the first tick only records where the log stands; a quiet account means
no run and one request; after mutations, one run request (keyed by the newest event id) for the
changed objects' tables and those the service deletes with them; running that request brings
the change into the warehouse; a sync in progress holds the sensor back without losing events;
the cursor is Dagster's, so definitions built afresh (a restart) carry on from it.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pytest

from invoiced_assets.api.client import InvoicedClient
from invoiced_assets.catalogue import OBJECTS_BY_NAME
from invoiced_assets.component import build_definitions
from invoiced_assets.emulator import EmulatorServer
from invoiced_assets.extract.incremental import objects_changed_by, read_changes
from invoiced_assets.sensors import SENSOR_NAME
from invoiced_assets.settings import load_settings

from .conftest import API_KEY, fast_client, use_emulator

INVOICE_TABLES = {"invoices", "invoice_line_items", "invoice_discounts", "invoice_taxes"}
# Deleting a customer deletes these with it, with no event of their own.
CUSTOMER_TABLES = {"customers", "contacts", "payment_sources", "notes", "tasks"}


@pytest.fixture
def account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    with EmulatorServer(scale=0.2, seed=61, api_key=API_KEY) as server:
        use_emulator(monkeypatch, server, tmp_path / "warehouse.duckdb")
        yield server


def tick(instance: dg.DagsterInstance, cursor: str | None, **env: str) -> Any:
    """One evaluation of the sensor, from definitions built afresh (as after a restart)."""
    defs = build_definitions(load_settings({**_environ(), **env}))
    sensor = defs.resolve_sensor_def(SENSOR_NAME)
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources=defs.resources, definitions=defs
    )
    return sensor.evaluate_tick(context)


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


def requests_during(account: EmulatorServer, evaluate: Any) -> tuple[Any, int]:
    account.reset_stats()
    result = evaluate()
    return result, account.stats()["requests"]


def tables(request: dg.RunRequest) -> set[str]:
    return {key.path[-1] for key in request.asset_selection or ()}


def test_quiet_polls_cost_one_request_and_start_nothing(
    account: EmulatorServer, instance: dg.DagsterInstance
) -> None:
    first, used = requests_during(account, lambda: tick(instance, None))
    assert used == 1 and not first.run_requests
    newest = int(first.cursor)
    assert newest == max(int(e["id"]) for e in account.records("events"))
    assert "Watching /events from event" in (first.skip_message or "")

    quiet, used = requests_during(account, lambda: tick(instance, first.cursor))
    assert used == 1 and not quiet.run_requests
    assert quiet.cursor in (None, first.cursor)
    assert f"No event after {newest}" in (quiet.skip_message or "")


def test_changes_request_one_incremental_run_of_exactly_the_tables_touched(
    account: EmulatorServer, instance: dg.DagsterInstance
) -> None:
    cursor = tick(instance, None).cursor
    account.mutate("invoices", update=3)
    account.mutate("customers", delete=1)
    newest = max(int(e["id"]) for e in account.records("events"))

    result, used = requests_during(account, lambda: tick(instance, cursor))
    assert used == 1  # the few new events are on the first page
    (request,) = result.run_requests
    assert tables(request) == INVOICE_TABLES | CUSTOMER_TABLES | {"events"}
    assert request.run_key == f"invoiced-events-{newest}"
    assert request.run_config["ops"]["invoiced_tables"]["config"] == {"sync_mode": "incremental"}
    assert result.cursor == str(newest)
    # The next poll, from the new cursor, finds nothing more.
    assert not tick(instance, result.cursor).run_requests


def test_the_requested_run_brings_the_change_into_the_warehouse(
    account: EmulatorServer, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    env = {"INVOICED_SYNC_MODE": "incremental"}
    defs = build_definitions(load_settings({**_environ(), **env}))
    job = defs.resolve_job_def("invoiced_sync")
    assert job.execute_in_process(instance=instance).success  # the first load
    cursor = tick(instance, None, **env).cursor
    changed = account.mutate("invoices", update=2)["updated"]

    (request,) = tick(instance, cursor, **env).run_requests
    done = job.execute_in_process(
        instance=instance, asset_selection=request.asset_selection, run_config=request.run_config
    )
    assert done.success
    materialized = {m.asset_key.path[-1] for m in done.get_asset_materialization_events()}
    assert materialized == INVOICE_TABLES | {"events"}
    truth = {r["id"]: r["updated_at"] for r in account.records("invoices") if r["id"] in changed}
    with duckdb.connect(str(tmp_path / "warehouse.duckdb"), read_only=True) as connection:
        ids = ", ".join(map(str, changed))
        rows = connection.execute(
            f"select id, epoch(updated_at)::bigint from invoiced.invoices where id in ({ids})"
        ).fetchall()
    assert dict(rows) == truth


def test_a_sync_in_progress_holds_the_sensor_back_and_no_event_is_lost(
    account: EmulatorServer, instance: dg.DagsterInstance
) -> None:
    cursor = tick(instance, None).cursor
    account.mutate("payments", update=1)
    running = dg.DagsterRun(job_name="invoiced_sync", status=dg.DagsterRunStatus.STARTED)
    instance.add_run(running)

    held = tick(instance, cursor)
    assert not held.run_requests and held.cursor in (None, cursor)
    assert running.run_id in (held.skip_message or "")

    instance.report_run_canceled(running)
    (request,) = tick(instance, cursor).run_requests
    assert tables(request) == {"payments", "payment_applications", "events"}


def test_disabled_objects_are_not_requested(
    account: EmulatorServer, instance: dg.DagsterInstance
) -> None:
    env = {"INVOICED_DISABLED_OBJECTS": "events,customers,contacts"}
    cursor = tick(instance, None, **env).cursor
    account.mutate("customers", update=2)
    result = tick(instance, cursor, **env)
    assert not result.run_requests and int(result.cursor) > int(cursor)
    assert "touch no replicated table" in (result.skip_message or "")


def test_more_new_events_than_a_poll_reads_sync_every_table(account: EmulatorServer) -> None:
    client: InvoicedClient = fast_client(account.url)
    changes = read_changes(client, 0, max_pages=2)
    assert changes.objects is None and changes.requests == 2


@pytest.mark.parametrize(
    "event_type, objects",
    [
        ("invoice.updated", {"invoices", "events"}),
        ("invoice.deleted", {"invoices", "notes", "events"}),
        ("transaction.created", {"credit_balance_adjustments", "events"}),
        ("payment_source.deleted", {"payment_sources", "events"}),
        ("customer.deleted", CUSTOMER_TABLES | {"events"}),
        ("something_new.created", {"events"}),
    ],
)
def test_which_objects_an_event_changes(event_type: str, objects: set[str]) -> None:
    assert objects_changed_by(event_type) == objects
    assert objects <= set(OBJECTS_BY_NAME)


def test_the_sensor_is_off_unless_switched_on() -> None:
    off = build_definitions(load_settings({})).resolve_sensor_def(SENSOR_NAME)
    assert off.default_status == dg.DefaultSensorStatus.STOPPED
    assert off.minimum_interval_seconds == 60
    on = build_definitions(
        load_settings({"INVOICED_EVENTS_SENSOR": "on", "INVOICED_EVENTS_POLL_SECONDS": "45"})
    ).resolve_sensor_def(SENSOR_NAME)
    assert on.default_status == dg.DefaultSensorStatus.RUNNING
    assert on.minimum_interval_seconds == 45
    with pytest.raises(Exception, match="INVOICED_EVENTS_POLL_SECONDS must be a whole number"):
        load_settings({"INVOICED_EVENTS_POLL_SECONDS": "10"})
    with pytest.raises(Exception, match="INVOICED_EVENTS_SENSOR must be on or off"):
        load_settings({"INVOICED_EVENTS_SENSOR": "maybe"})
