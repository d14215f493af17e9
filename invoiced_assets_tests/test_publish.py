"""Stage, audit, then publish: what a failure, a kill and a reader can see, on DuckDB and on
Snowflake (fakesnow).

Proves, on both destinations: a blocking check that fails (a collapsed listing, duplicate keys)
publishes none of the object's tables, which stay row for row as they were, while another object
of the same run is published and the run fails naming the check, the table, the figure and how to
accept a real drop; a process killed before any statement of a publish (full or merge) leaves the
object's tables all old or all new; a second connection reading at every statement of a publish,
and in a loop beside it, never sees a line item without its invoice or an invoice without its
line items; after rounds of inserts, updates and deletes with schema drift, the incremental
tables equal a fresh full load both ways (`EXCEPT ALL`); a check executed on its own records a
result and writes no table.
"""

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import fakesnow
import pytest
import snowflake.connector
from dagster_snowflake import SnowflakeResource

from invoiced_assets import checks
from invoiced_assets.catalogue import INVOICES
from invoiced_assets.component import build_definitions
from invoiced_assets.destinations.duckdb_destination import (
    InvoicedDuckDBIOManager,
    duckdb_connection_config,
)
from invoiced_assets.destinations.protocol import Merge, RowDeletion, StagedObject
from invoiced_assets.destinations.publication import publish_object
from invoiced_assets.destinations.snowflake_destination import InvoicedSnowflakeIOManager
from invoiced_assets.emulator import EmulatorServer
from invoiced_assets.settings import load_settings
from invoiced_assets.sync.staging import staged_table
from invoiced_assets.tables import shaping
from invoiced_assets.tables.shaping import shape_records

from .conftest import API_KEY, execute_checks_alone, use_emulator

pytestmark = pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning")

SNOWFLAKE = {
    "SNOWFLAKE_ACCOUNT": "fake-account",
    "SNOWFLAKE_USER": "fake_user",
    "SNOWFLAKE_PASSWORD": "not-a-real-password-77",
    "SNOWFLAKE_DATABASE": "analytics",
}
# The objects these tests need: a document with child tables, and the customers it points at.
DISABLED = (
    "contacts,payment_sources,events,notes,tasks,plans,items,coupons,tax_rates,estimates,"
    "credit_notes,subscriptions,credit_balance_adjustments"
)


class Warehouse:
    """One destination under test: its IO manager and plain SQL against it."""

    def __init__(self, kind: str, root: Path) -> None:
        self.kind, self.root = kind, root

    def manager(self, schema: str = "invoiced") -> Any:
        if self.kind == "duckdb":
            return InvoicedDuckDBIOManager(database=str(self.root / "w.duckdb"), schema_name=schema)
        # Built with values, not `EnvVar`s: used outside a run, nothing would resolve them.
        resource = SnowflakeResource(database="analytics", **_snowflake_credentials())
        return InvoicedSnowflakeIOManager(snowflake=resource, schema_name=schema.upper())

    def table(self, name: str, schema: str = "invoiced") -> str:
        return f"{schema}.{name}" if self.kind == "duckdb" else f"analytics.{schema}.{name}"

    def connect(self) -> Any:
        if self.kind == "duckdb":
            # A second connection in this process must have the IO manager's configuration,
            # user agent included (dagster-duckdb's resource adds it).
            config = {"custom_user_agent": "dagster", **duckdb_connection_config()}
            return duckdb.connect(str(self.root / "w.duckdb"), config=config)
        return snowflake.connector.connect(database="analytics", **_snowflake_credentials())

    def query(self, sql: str, connection: Any = None) -> list[tuple]:
        own = connection is None
        connection = connection or self.connect()
        try:
            cursor = connection if self.kind == "duckdb" else connection.cursor()
            return [tuple(row) for row in cursor.execute(sql).fetchall()]
        finally:
            if own:
                connection.close()

    def rows(self, name: str, schema: str = "invoiced") -> list[tuple]:
        return sorted(self.query(f"select * from {self.table(name, schema)}"), key=repr)


def _snowflake_credentials() -> dict[str, str]:
    return {
        "account": SNOWFLAKE["SNOWFLAKE_ACCOUNT"],
        "user": SNOWFLAKE["SNOWFLAKE_USER"],
        "password": SNOWFLAKE["SNOWFLAKE_PASSWORD"],
    }


@pytest.fixture(params=["duckdb", "snowflake"])
def warehouse(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Warehouse]:
    kind = request.param
    monkeypatch.setenv("INVOICED_DUCKDB_PATH", str(tmp_path / "w.duckdb"))
    if kind == "duckdb":
        yield Warehouse(kind, tmp_path)
        return
    for name, value in SNOWFLAKE.items():
        monkeypatch.setenv(name, value)
    for name in ("SNOWFLAKE_SCHEMA", "SNOWFLAKE_PRIVATE_KEY", "SNOWFLAKE_PRIVATE_KEY_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INVOICED_DESTINATION", "snowflake")
    (tmp_path / "fakesnow").mkdir()
    with fakesnow.patch(create_schema_on_connect=False, db_path=tmp_path / "fakesnow"):
        yield Warehouse(kind, tmp_path)


# -- publishing invoices with their line items, without the API ----------------------------------


def invoices(ids: range, items_each: int) -> dict[str, Any]:
    """Invoices with line items (and no discounts or taxes): the object's two tables that matter."""
    records = [
        {"id": i, "total": i * 1.5, "updated_at": 100, "items": [{"id": 10 * i + n} for n in range(items_each)]}
        for i in ids
    ]  # fmt: skip
    tables = shape_records(INVOICES, records)
    return {name: tables[name] for name in ("invoices", "invoice_line_items")}


MERGE = {
    "invoices": Merge((RowDeletion("id", "replaced"),)),
    "invoice_line_items": Merge((RowDeletion("invoice_id", "replaced"),)),
}


def publish_invoices(
    manager: Any,
    tables: dict[str, Any],
    merge: bool = False,
    observe: Callable[[str], None] | None = None,
) -> None:
    """Stage `tables` and publish them as one object (a merge replaces invoices 1-5)."""
    with manager.held_session():
        manager.clear_staging()
        manager.stage(list(tables.items()), {"replaced": list(range(1, 6))} if merge else {})
        staged = {n: staged_table(t, MERGE[n] if merge else None) for n, t in tables.items()}
        publish_object(manager, StagedObject("invoices", staged), observe)


def object_state(warehouse: Warehouse, connection: Any = None) -> tuple[list, list]:
    """(invoice ids, (invoice id, line item id) pairs) as one connection sees them now."""
    ids = warehouse.query(f"select id from {warehouse.table('invoices')} order by id", connection)
    items = warehouse.query(
        f"select invoice_id, id from {warehouse.table('invoice_line_items')} order by id",
        connection,
    )
    return [i for (i,) in ids], sorted(items)


def consistent(warehouse: Warehouse, connection: Any) -> bool:
    """No line item without its invoice, no invoice without its line items, in one snapshot."""
    invoices_table, items_table = warehouse.table("invoices"), warehouse.table("invoice_line_items")
    (orphans, bare), = warehouse.query(
        f"select (select count(*) from {items_table} li where not exists"
        f" (select 1 from {invoices_table} i where i.id = li.invoice_id)),"
        f" (select count(*) from {invoices_table} i where not exists"
        f" (select 1 from {items_table} li where li.invoice_id = i.id))",
        connection,
    )  # fmt: skip
    return orphans == 0 and bare == 0


@pytest.mark.parametrize("merge", [False, True], ids=["full", "merge"])
def test_a_killed_publish_leaves_the_object_all_old_or_all_new(
    warehouse: Warehouse, merge: bool
) -> None:
    manager = warehouse.manager()
    publish_invoices(manager, invoices(range(1, 11), 2))
    old = object_state(warehouse)
    # A full load replaces invoices 1-10 by 11-20; a merge replaces 1-5 by 21-25.
    new_tables = invoices(range(21, 26), 3) if merge else invoices(range(11, 21), 3)
    statements: list[str] = []
    publish_invoices(warehouse.manager(), new_tables, merge, statements.append)
    new = object_state(warehouse)
    assert new != old
    for kill_before in range(len(statements)):
        publish_invoices(warehouse.manager(), invoices(range(1, 11), 2))  # back to old
        pid = os.fork()
        if pid == 0:  # the publishing process, killed before statement number `kill_before`
            seen = iter(range(len(statements) + 1))

            def die_at(statement: str, number: Iterator[int] = seen, at: int = kill_before) -> None:
                if next(number) == at:
                    os._exit(9)

            try:
                publish_invoices(warehouse.manager(), new_tables, merge, die_at)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 9, statements[kill_before]
        state = object_state(warehouse)
        assert state in (old, new), (kill_before, statements[kill_before])


def test_a_reader_never_sees_an_object_half_published(warehouse: Warehouse) -> None:
    manager = warehouse.manager()
    publish_invoices(manager, invoices(range(1, 201), 2))
    reader = warehouse.connect()
    # At every statement of a publish, a second connection reads the object.
    snapshots: list[tuple[list, list]] = []

    def read_now(statement: str) -> None:
        assert consistent(warehouse, reader), statement
        snapshots.append(object_state(warehouse, reader))

    publish_invoices(manager, invoices(range(201, 401), 3), observe=read_now)
    publish_invoices(manager, invoices(range(401, 406), 1), merge=True, observe=read_now)
    assert consistent(warehouse, reader)
    assert len({repr(s) for s in snapshots}) >= 2  # it saw the first and the second version

    # And a reader looping beside a run of publishes, in a thread of its own.
    stop, reads, mixed = threading.Event(), [0], []

    def loop() -> None:
        connection = warehouse.connect()
        while not stop.is_set():
            if not consistent(warehouse, connection):
                mixed.append(object_state(warehouse, connection))
            reads[0] += 1
        connection.close()

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        for round_number in range(3):
            start = 1000 * (round_number + 1)
            publish_invoices(manager, invoices(range(start, start + 200), 1 + round_number % 3))
    finally:
        stop.set()
        thread.join()
    reader.close()
    assert reads[0] > 0 and not mixed


# -- the job: blocking checks, checks on their own, incremental equals full --------------------


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    with EmulatorServer(scale=0.2, seed=41, api_key=API_KEY) as server:
        use_emulator(monkeypatch, server, INVOICED_DISABLED_OBJECTS=DISABLED)
        yield server


def sync(
    instance: dg.DagsterInstance,
    run_config: dict[str, Any] | None = None,
    checks_alone: list[dg.AssetCheckKey] | None = None,
) -> dg.ExecuteInProcessResult:
    defs = build_definitions(load_settings())
    if checks_alone is not None:
        return execute_checks_alone(defs, instance, checks_alone)
    job = defs.resolve_job_def("invoiced_sync")
    return job.execute_in_process(
        instance=instance, raise_on_error=False, run_config=run_config or {}
    )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return failure.step_failure_data.error.message


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {m.asset_key.path[-1] for m in result.asset_materializations_for_node("invoiced_tables")}


def check_results(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], Any]:
    return {
        (e.event_specific_data.asset_key.path[-1], e.event_specific_data.check_name): e.event_specific_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }  # fmt: skip


def duplicate_one_invoice(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault upstream of the audit: the first page of invoices has one invoice twice."""
    add_page = shaping.ObjectShaper.add_page
    done = threading.Event()

    def add_page_twice(self: shaping.ObjectShaper, records: Any) -> None:
        add_page(self, records)
        if self.obj is INVOICES and records and not done.is_set() and self._parent is not None:
            done.set()
            self._parent.add_rows([records[0]])

    monkeypatch.setattr(shaping.ObjectShaper, "add_page", add_page_twice)


def test_a_blocking_failure_publishes_none_of_the_object(
    warehouse: Warehouse,
    account: EmulatorServer,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert sync(instance).success
    before = {name: warehouse.rows(name) for name in ("invoices", "invoice_line_items")}

    # 60 % of the invoices deleted in Invoiced, one customer changed, in the same run.
    account.mutate("invoices", delete=int(account.truth()["invoices"] * 0.6))
    (changed,) = account.mutate("customers", update=1)["updated"]
    collapsed = sync(instance)
    assert not collapsed.success
    message = failure_message(collapsed)
    assert "invoices (not published): invoices: no_row_count_collapse failed" in message
    assert "previous_rows 1000" in message and "accept_row_drop" in message
    assert "INVOICED_MIN_ROW_RATIO" in message
    for name, rows in before.items():
        assert warehouse.rows(name) == rows  # row for row as they were
    assert not materialized(collapsed) & {"invoices", "invoice_line_items"}
    assert "customers" in materialized(collapsed)
    updated_at = account.records("customers")
    (stamp,) = [r["updated_at"] for r in updated_at if r["id"] == changed]
    assert warehouse.query(
        f"select count(*) from {warehouse.table('customers')} where id = {changed}"
        f" and {'epoch' if warehouse.kind == 'duckdb' else 'date_part(epoch_second, '}"
        f"{'(' if warehouse.kind == 'duckdb' else ''}updated_at) = {stamp}"
    ) == [(1,)]
    results = check_results(collapsed)
    assert not results[("invoices", checks.COLLAPSE)].passed
    assert results[("invoices", checks.PRIMARY_KEY)].passed

    # Accepting the drop lets the collapse pass, but a duplicated key still blocks.
    accept = {"ops": {"invoiced_tables": {"config": {"accept_row_drop": ["invoices"]}}}}
    duplicate_one_invoice(monkeypatch)
    duplicated = sync(instance, accept)
    monkeypatch.undo()
    assert not duplicated.success
    message = failure_message(duplicated)
    assert "invoices: primary_key_unique_not_null failed" in message
    assert "duplicated_rows 2" in message
    for name, rows in before.items():
        assert warehouse.rows(name) == rows
    assert check_results(duplicated)[("invoices", checks.COLLAPSE)].passed

    # The same drop, accepted, with a good read: published.
    use_emulator(monkeypatch, account, INVOICED_DISABLED_OBJECTS=DISABLED)
    _restore(monkeypatch, warehouse)
    accepted = sync(instance, accept)
    assert accepted.success
    assert len(warehouse.rows("invoices")) == account.truth()["invoices"] < 500


def _restore(monkeypatch: pytest.MonkeyPatch, warehouse: Warehouse) -> None:
    """The environment of the `warehouse` fixture again, after `monkeypatch.undo()`."""
    monkeypatch.setenv("INVOICED_DUCKDB_PATH", str(warehouse.root / "w.duckdb"))
    if warehouse.kind == "snowflake":
        for name, value in SNOWFLAKE.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("INVOICED_DESTINATION", "snowflake")


def test_a_check_on_its_own_records_a_result_and_writes_nothing(
    warehouse: Warehouse, account: EmulatorServer, instance: dg.DagsterInstance
) -> None:
    assert sync(instance).success
    before = warehouse.rows("invoices")
    key = dg.AssetKey(["invoiced", "invoices"])
    wanted = [dg.AssetCheckKey(key, name) for name in (checks.PRIMARY_KEY, checks.ROW_COUNT)]
    child = dg.AssetCheckKey(
        dg.AssetKey(["invoiced", "invoice_line_items"]), checks.PARENT_REFERENCES
    )
    account.reset_stats()
    result = sync(instance, checks_alone=[*wanted, child])
    assert result.success
    results = check_results(result)
    assert set(results) == {
        ("invoices", checks.PRIMARY_KEY),
        ("invoices", checks.ROW_COUNT),
        ("invoice_line_items", checks.PARENT_REFERENCES),
    }
    assert all(r.passed for r in results.values())
    assert results[("invoices", checks.ROW_COUNT)].metadata["rows"].value == len(before)
    assert not materialized(result)
    assert account.stats()["requests"] == 1  # the count: one one-record request
    assert warehouse.rows("invoices") == before

    # A table emptied behind the pipeline's back: the check on its own says so.
    warehouse.query(f"delete from {warehouse.table('invoices')} where id > 0")
    failed = sync(instance, checks_alone=wanted[1:])
    (row_count,) = check_results(failed).values()
    assert not row_count.passed and row_count.metadata["rows"].value == 0


def add_drift(monkeypatch: pytest.MonkeyPatch, since: int) -> None:
    """Invoices updated after `since` gain a field and send `attempt_count` as a fraction: the
    API's schema drifting, record by record, as records change."""
    add_page = shaping.ObjectShaper.add_page

    def drifted(self: shaping.ObjectShaper, records: Any) -> None:
        if self.obj is INVOICES:
            records = [
                {**r, "loyalty_tier": f"tier {r['id'] % 3}", "attempt_count": (r.get("attempt_count") or 0) + 0.5}
                if (r.get("updated_at") or 0) > since else r
                for r in records
            ]  # fmt: skip
        add_page(self, records)

    monkeypatch.setattr(shaping.ObjectShaper, "add_page", drifted)


def test_incremental_equals_a_fresh_full_load(
    warehouse: Warehouse,
    account: EmulatorServer,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("INVOICED_SYNC_MODE", "incremental")
    assert sync(instance).success
    drift_from = max(r["updated_at"] for r in account.records("invoices"))
    add_drift(monkeypatch, drift_from)
    # Two rounds: the first brings the drift into the tables, the second merges drifted records
    # into drifted tables; each inserts, updates and deletes.
    for round_number in range(2):
        account.mutate("customers", insert=3, update=4, delete=2)
        account.mutate("invoices", insert=6, update=9, delete=4)  # updates add/remove items
        result = sync(instance)
        assert result.success, failure_message(result)
        kinds = {
            m.metadata["invoiced/sync_kind"].value
            for m in result.asset_materializations_for_node("invoiced_tables")
        }
        assert kinds == {"incremental"}, round_number
        written = {
            m.asset_key.path[-1]: m.metadata["invoiced/rows_inserted"].value
            for m in result.asset_materializations_for_node("invoiced_tables")
        }
        # Only what changed is written (here, with what deleting customers changed): a tenth.
        assert written["invoices"] < account.truth()["invoices"] / 10

    # A fresh full load of the same account, elsewhere.
    if warehouse.kind == "duckdb":
        monkeypatch.setenv("INVOICED_DUCKDB_PATH", str(tmp_path / "full.duckdb"))
    else:
        monkeypatch.setenv("SNOWFLAKE_SCHEMA", "FULL_LOAD")
    monkeypatch.setenv("INVOICED_SYNC_MODE", "full")
    (tmp_path / "home2").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home2")) as other:
        assert sync(other).success

    if warehouse.kind == "duckdb":
        connection = warehouse.connect()
        connection.execute(f"attach '{tmp_path / 'full.duckdb'}' as full_load (read_only)")
        incremental, full = "invoiced.{}", "full_load.invoiced.{}"
        schema_of = "invoiced"
    else:
        connection = warehouse.connect()
        incremental, full = "analytics.invoiced.{}", "analytics.full_load.{}"
        schema_of = "INVOICED"
    tables = ["customers", "invoices", "invoice_line_items", "invoice_discounts", "invoice_taxes"]
    for name in tables:
        stored = name if warehouse.kind == "duckdb" else name.upper()
        columns = [
            c for (c,) in warehouse.query(
                "select column_name from information_schema.columns where table_schema ="
                f" '{schema_of}' and table_name = '{stored}' order by column_name",
                connection,
            )
        ]  # fmt: skip
        assert columns, name
        listed = ", ".join(f'"{c}"' for c in columns)
        a, b = incremental.format(name), full.format(name)
        for left, right in ((a, b), (b, a)):
            difference = warehouse.query(
                f"select {listed} from {left} except all select {listed} from {right}", connection
            )
            assert difference == [], (name, left, difference[:3])
        assert warehouse.query(f"select count(*) from {a}", connection) == warehouse.query(
            f"select count(*) from {b}", connection
        )
    drifted_columns = warehouse.query(
        "select column_name from information_schema.columns where table_schema ="
        f" '{schema_of}' and lower(table_name) = 'invoices' and lower(column_name) = 'loyalty_tier'",
        connection,
    )
    assert drifted_columns  # the drift reached the incremental tables
    connection.close()


def test_a_child_table_alone_with_its_parents_checks(
    warehouse: Warehouse,
    account: EmulatorServer,
    instance: dg.DagsterInstance,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The parent is staged for the child's audit, never published: the parent's checks,
    selected beside the child, audit the published parent, each once."""
    monkeypatch.setenv("INVOICED_SYNC_MODE", "incremental")
    assert sync(instance).success
    account.mutate("invoices", insert=3, update=3, delete=2)
    invoices = dg.AssetKey(["invoiced", "invoices"])
    items = dg.AssetKey(["invoiced", "invoice_line_items"])
    defs = build_definitions(load_settings())
    result = dg.materialize(
        list(defs.assets or []),
        resources=defs.resources,
        selection=dg.AssetSelection.assets(items)
        | dg.AssetSelection.checks(
            dg.AssetCheckKey(invoices, checks.PRIMARY_KEY),
            dg.AssetCheckKey(invoices, checks.CUSTOMER_REFERENCES),
        ),
        instance=instance,
        raise_on_error=False,
    )
    assert result.success
    assert materialized(result) == {"invoice_line_items"}
    found = [
        (e.event_specific_data.asset_key.path[-1], e.event_specific_data.check_name)
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert sorted(found) == sorted(set(found))  # each check once
    assert ("invoices", checks.PRIMARY_KEY) in found
    assert ("invoices", checks.CUSTOMER_REFERENCES) in found
