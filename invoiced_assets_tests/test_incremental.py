"""Incremental sync is as exact as a full load, with far fewer requests.

After rounds of emulator inserts, updates and deletes (line items removed by editing invoices,
subscriptions canceled, customers deleted), an incremental destination equals the emulator's
ground truth and a fresh full load, table by table and value by value. The first incremental run
on an empty destination is a full load; cursors survive in materialization metadata; a full
reconciliation runs when due; a failed run leaves the cursors as they were.
"""

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from invoiced_assets.assets import table_assets
from invoiced_assets.catalogue import CATALOGUE
from invoiced_assets.emulator import EmulatorServer
from invoiced_assets.extract.incremental import CURSOR_EVENT_ID, CURSOR_UPDATED_AT, SYNC_KIND

from .conftest import API_KEY, use_emulator
from .test_sync_job import run_sync
from .warehouse_compare import assert_matches_truth


@pytest.fixture
def account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    with EmulatorServer(scale=0.2, seed=51, api_key=API_KEY) as server:
        use_emulator(
            monkeypatch, server, tmp_path / "incremental.duckdb", INVOICED_SYNC_MODE="incremental"
        )
        yield server


def sync_kinds(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    return {
        m.asset_key.path[-1]: m.metadata[SYNC_KIND].value
        for m in result.asset_materializations_for_node("invoiced_tables")
    }


def change_everything(account: EmulatorServer, round_number: int) -> dict[str, list[int]]:
    """Mutate every listing; returns the customers and invoices deleted (the service deletes
    their contacts, notes, tasks and payment sources with them, emitting no event for those)."""
    customers = account.mutate("customers", insert=4, update=5, delete=3)
    invoices = account.mutate("invoices", insert=6, update=8, delete=4)  # edits line items
    account.mutate("payments", insert=3, update=3, delete=2)
    account.mutate("subscriptions", insert=2, update=6, delete=1)  # updates cancel some
    account.mutate("credit_notes", insert=2, update=2, delete=1)
    account.mutate("estimates", insert=2, update=2, delete=1 + round_number % 2)
    account.mutate("credit_balance_adjustments", insert=3, update=1, delete=2)
    account.mutate("notes", insert=3, update=3, delete=2)
    account.mutate("tasks", insert=3, update=3, delete=2)
    account.mutate("contacts", insert=3, update=3, delete=2)  # deleted without their customer
    account.mutate("payment_sources", insert=3, update=4, delete=2)  # updates may hide some
    account.mutate("plans", insert=1, update=2, delete=1)  # always read in full
    return {"customers": customers["deleted"], "invoices": invoices["deleted"]}


def rows_of_deleted(path: Path, deleted: dict[str, set[int]]) -> dict[str, int]:
    """Rows still naming a deleted customer or invoice, per table that the service empties of
    them (an invoice's `customer` may name a deleted customer: the service keeps invoices)."""
    customers = ", ".join(map(str, deleted["customers"])) or "null"
    invoices = ", ".join(map(str, deleted["invoices"])) or "null"
    where = {
        "contacts": f"customer_id in ({customers})",
        "tasks": f"customer_id in ({customers})",
        "payment_sources": f"customer in ({customers})",
        "notes": f"customer in ({customers}) or invoice in ({invoices})",
    }
    with duckdb.connect(str(path), read_only=True) as connection:
        return {
            table: connection.execute(
                f"select count(*) from invoiced.{table} where {condition}"
            ).fetchall()[0][0]
            for table, condition in where.items()
        }


def test_incremental_rounds_equal_truth_and_a_full_load(
    account: EmulatorServer,
    instance: dg.DagsterInstance,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    account.reset_stats()
    first = run_sync(instance=instance)
    assert first.success
    assert set(sync_kinds(first).values()) == {"full"}  # nothing to continue from
    full_requests = account.stats()["requests"]
    assert_matches_truth(account, tmp_path / "incremental.duckdb")

    deleted: dict[str, set[int]] = {"customers": set(), "invoices": set()}
    # Two rounds: the second continues from the cursors the first left, and each inserts,
    # updates and deletes in every listing.
    for round_number in range(2):
        for name, ids in change_everything(account, round_number).items():
            deleted[name] |= set(ids)
        # Each round deletes customers and invoices that had such rows.
        assert sum(rows_of_deleted(tmp_path / "incremental.duckdb", deleted).values()) > 0
        account.reset_stats()
        result = run_sync(instance=instance)
        assert result.success
        kinds = sync_kinds(result)
        catalog = {"plans", "plan_tiers", "items", "coupons", "tax_rates"}  # no updated_after
        assert {k for k, v in kinds.items() if v == "full"} == catalog
        assert account.stats()["requests"] < full_requests
        assert_matches_truth(account, tmp_path / "incremental.duckdb")
        left = rows_of_deleted(tmp_path / "incremental.duckdb", deleted)
        assert left == dict.fromkeys(left, 0), left
        # Every error check passes on the merged tables. (Customers deleted in Invoiced leave
        # their invoices pointing at nothing: the warning check rightly says so.)
        failed = [
            e.event_specific_data.check_name
            for e in result.all_events
            if e.event_type_value == "ASSET_CHECK_EVALUATION"
            and not e.event_specific_data.passed
            and e.event_specific_data.severity == dg.AssetCheckSeverity.ERROR
        ]
        assert not failed, failed

    # A fresh full load of the same account gives the same tables, row for row.
    monkeypatch.setenv("INVOICED_DUCKDB_PATH", str(tmp_path / "full.duckdb"))
    monkeypatch.setenv("INVOICED_SYNC_MODE", "full")
    assert run_sync().success
    with duckdb.connect() as connection:
        connection.execute(f"attach '{tmp_path / 'full.duckdb'}' as fresh (read_only)")
        connection.execute(f"attach '{tmp_path / 'incremental.duckdb'}' as inc (read_only)")
        tables = connection.execute(
            "select table_name from information_schema.tables where table_catalog = 'fresh'"
            " and table_schema = 'invoiced'"
        ).fetchall()
        assert len(tables) == len(table_assets(CATALOGUE))
        for (table,) in tables:
            difference = connection.execute(
                f"select count(*) from ((select * from fresh.invoiced.{table} except all"
                f" select * from inc.invoiced.{table}) union all (select * from"
                f" inc.invoiced.{table} except all select * from fresh.invoiced.{table}))"
            ).fetchall()
            assert difference == [(0,)], table


# Cursors, reconciliation and reloads are per table: two objects show them (every object is synced in
# the rounds above).
SOME = ["invoices", "invoice_line_items", "payments"]


def test_cursors_live_in_metadata_and_failures_keep_them(
    account: EmulatorServer, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_sync(SOME, instance=instance).success
    key = dg.AssetKey(["invoiced", "invoices"])
    before = instance.get_latest_materialization_event(key).asset_materialization.metadata
    assert before[CURSOR_UPDATED_AT].value == max(
        r["updated_at"] for r in account.records("invoices")
    )
    assert before[CURSOR_EVENT_ID].value > 0
    account.mutate("invoices", update=3)
    monkeypatch.setenv("INVOICED_API_KEY", "revoked-key")
    assert not run_sync(SOME, instance=instance).success
    after = instance.get_latest_materialization_event(key).asset_materialization.metadata
    assert after[CURSOR_UPDATED_AT].value == before[CURSOR_UPDATED_AT].value
    monkeypatch.setenv("INVOICED_API_KEY", API_KEY)
    result = run_sync(SOME, instance=instance)
    assert result.success and sync_kinds(result)["invoices"] == "incremental"
    latest = instance.get_latest_materialization_event(key).asset_materialization.metadata
    assert latest[CURSOR_UPDATED_AT].value > before[CURSOR_UPDATED_AT].value


def test_full_reconciliation_when_due(
    account: EmulatorServer, instance: dg.DagsterInstance, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_sync(SOME, instance=instance).success
    monkeypatch.setattr("invoiced_assets.sync.step.now", lambda: 1e10)  # long after the full load
    result = run_sync(SOME, instance=instance)
    assert result.success and set(sync_kinds(result).values()) == {"full"}


def test_a_dropped_table_is_reloaded_in_full(
    account: EmulatorServer, instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    assert run_sync(SOME, instance=instance).success
    with duckdb.connect(str(tmp_path / "incremental.duckdb")) as connection:
        connection.execute("drop table invoiced.payments")
    result = run_sync(SOME, instance=instance)
    kinds = sync_kinds(result)
    assert result.success and kinds["payments"] == "full" and kinds["invoices"] == "incremental"
    with duckdb.connect(str(tmp_path / "incremental.duckdb"), read_only=True) as connection:
        (count,) = connection.execute("select count(*) from invoiced.payments").fetchone()
    assert count == account.truth()["payments"]


def test_a_merge_in_the_warehouse_widens_columns_and_replaces_by_key(tmp_path: Path) -> None:
    from decimal import Decimal

    from invoiced_assets.catalogue import INVOICES
    from invoiced_assets.destinations.duckdb_destination import InvoicedDuckDBIOManager
    from invoiced_assets.destinations.protocol import Merge, RowDeletion
    from invoiced_assets.tables.shaping import shape_records

    from .destination_helpers import publish

    manager = InvoicedDuckDBIOManager(database=str(tmp_path / "merge.duckdb"))
    previous = [
        {
            "id": 1,
            "attempt_count": 2,
            "notes": "plain text",
            "updated_at": 10,
            "items": [{"id": 5}],
        },
        {"id": 2, "attempt_count": 3, "notes": None, "updated_at": 10, "items": [{"id": 6}]},
    ]
    publish(manager, shape_records(INVOICES, previous))
    incoming = [
        {"id": 2, "attempt_count": 0.5, "notes": {"a": 1}, "updated_at": 20, "new": True},
        {"id": 3, "attempt_count": 1, "notes": "x", "updated_at": 20, "items": [{"id": 7}]},
    ]
    tables = shape_records(INVOICES, incoming)
    merges = {
        "invoices": Merge((RowDeletion("id", "replaced"),)),
        "invoice_line_items": Merge((RowDeletion("invoice_id", "replaced"),)),
    }
    tables = {name: tables[name] for name in merges}
    result = publish(manager, tables, merges, {"replaced": [2, 3]})
    with duckdb.connect(str(tmp_path / "merge.duckdb"), read_only=True) as connection:
        rows = connection.execute(
            "select id, attempt_count, notes, new, epoch(updated_at)"
            " from invoiced.invoices order by id"
        ).fetchall()
        items = connection.execute(
            "select invoice_id, id from invoiced.invoice_line_items order by id"
        ).fetchall()
        types = dict(
            connection.execute(
                "select column_name, data_type from information_schema.columns"
                " where table_schema = 'invoiced' and table_name = 'invoices'"
            ).fetchall()
        )
    # Text is wider than JSON (`tables.conversions.widest`): the column stays text, and the
    # incoming load is typed by the same rule, so its text is text and its object JSON text.
    assert types["attempt_count"] == "DECIMAL(38,10)" and types["notes"] == "VARCHAR"
    assert types["new"] == "BOOLEAN"
    assert rows == [
        (1, Decimal("2"), "plain text", None, 10),
        (2, Decimal("0.5"), '{"a":1}', True, 20),
        (3, Decimal("1"), "x", None, 20),
    ]
    assert items == [(1, 5), (3, 7)]  # invoice 2 lost its line item, invoice 3 brought one
    written = {
        m.asset_key.path[-1]: (
            m.metadata["invoiced/rows_deleted"].value,
            m.metadata["invoiced/rows_inserted"].value,
        )
        for m in result.asset_materializations_for_node("load")
    }
    assert written == {"invoices": (1, 2), "invoice_line_items": (1, 1)}
