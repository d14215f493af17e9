"""The invoiced_sync job replicates the emulator's account into DuckDB, exactly, run after run.

Proves, end to end through the real definitions: every table's row count equals the ground
truth (canceled and finished subscriptions and payments' applications included); child rows point
at their parents; after inserts, updates and deletes a second run has every change; a run with a
rejected key fails with one clear error and leaves the previous tables untouched; a subset of
assets reads only the listings it needs; `dagster job execute` works as the README says.
"""

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from invoiced_assets.catalogue import CATALOGUE
from invoiced_assets.component import build_definitions
from invoiced_assets.emulator import EmulatorServer
from invoiced_assets.extract import pace, windows
from invoiced_assets.settings import load_settings

from .conftest import API_KEY, use_emulator
from .warehouse_compare import assert_matches_truth

EXPECTED_METADATA = {
    "dagster/row_count", "dagster/column_schema", "dagster/table_name", "primary_key",
    "api_pages", "api_requests", "api_retries", "api_429s", "api_bytes_received", "api_seconds",
    "api_records_per_second", "api_total_count", "preview", "schema_changed",
}  # fmt: skip


@pytest.fixture
def account() -> Iterator[EmulatorServer]:
    with EmulatorServer(scale=0.2, seed=21, api_key=API_KEY) as server:
        yield server


@pytest.fixture
def warehouse(tmp_path: Path, account: EmulatorServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "warehouse.duckdb"
    use_emulator(monkeypatch, account, path)
    return path


def run_sync(
    selection: list[str] | None = None,
    instance: dg.DagsterInstance | None = None,
    accept_row_drop: list[str] | None = None,
) -> dg.ExecuteInProcessResult:
    """Run invoiced_sync in process with the definitions the environment variables make."""
    defs = build_definitions(load_settings())
    job = defs.resolve_job_def("invoiced_sync")
    asset_selection = (
        None if selection is None else [dg.AssetKey(["invoiced", name]) for name in selection]
    )
    config = {"accept_row_drop": accept_row_drop or []}
    return job.execute_in_process(
        asset_selection=asset_selection,
        raise_on_error=False,
        instance=instance,
        run_config={"ops": {"invoiced_tables": {"config": config}}},
    )


def query(path: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute(sql).fetchall()


def expected_counts(account: EmulatorServer) -> dict[str, int]:
    counts: dict[str, int] = {}
    for obj in CATALOGUE:
        records = account.records(obj.name)
        counts[obj.name] = len(records)
        for child in obj.children:
            counts[child.name] = sum(len(r.get(child.source_field) or ()) for r in records)
    return counts


def full_load_requests(account: EmulatorServer) -> int:
    """The requests a full load makes: each listing's pages, then its X-Total-Count again, one
    date-range probe per date-filterable listing (too short here to be split into windows),
    one page per customer for per-customer listings, and the newest event (where the next
    incremental sync's deletions start)."""
    total = 1
    customers = len(account.records("customers"))
    for obj in CATALOGUE:
        if obj.per_customer:
            total += customers * len(obj.list_variants)
            continue
        records = account.records(obj.name)
        listings = [records]
        if len(obj.list_variants) > 1:  # unarchived, then archived
            listings = [[r for r in records if not r.get("archived")],
                        [r for r in records if r.get("archived")]]  # fmt: skip
        total += sum(max(1, -(-len(rows) // 100)) + 1 for rows in listings)
        total += obj.date_filterable
    return total


def table_counts(path: Path) -> dict[str, int]:
    tables = query(
        path, "select table_name from information_schema.tables where table_schema='invoiced'"
    )
    return {name: query(path, f"select count(*) from invoiced.{name}")[0][0] for (name,) in tables}


def test_full_load_matches_ground_truth(account: EmulatorServer, warehouse: Path) -> None:
    account.reset_stats()
    result = run_sync()
    assert result.success
    # One walk per listing (child tables come from their parent's read, not a second pass).
    assert account.stats()["requests"] == full_load_requests(account)
    expected = expected_counts(account)
    assert table_counts(warehouse) == expected
    assert expected["payment_applications"] > 0 and expected["subscription_addons"] > 0
    statuses = {
        s for (s,) in query(warehouse, "select distinct status from invoiced.subscriptions")
    }
    assert {"canceled", "finished"} <= statuses
    for obj in CATALOGUE:
        for child in obj.children:
            orphans = query(
                warehouse,
                f"select count(*) from invoiced.{child.name} c left join invoiced.{obj.name} p"
                f" on c.{child.parent_key_column} = p.id where p.id is null",
            )
            assert orphans == [(0,)], child.name
            duplicates = query(
                warehouse,
                f"select count(*) - count(distinct ({child.parent_key_column}, position))"
                f" from invoiced.{child.name}",
            )
            assert duplicates == [(0,)], child.name
    materialized = {
        m.asset_key.path[-1]: m for m in result.asset_materializations_for_node("invoiced_tables")
    }
    assert set(materialized) == set(expected)
    invoices = materialized["invoices"].metadata
    assert invoices["dagster/row_count"].value == expected["invoices"]
    assert invoices["api_total_count"].value == expected["invoices"]
    assert invoices["api_pages"].value >= 1


def test_second_run_follows_inserts_updates_and_deletes(
    account: EmulatorServer, warehouse: Path
) -> None:
    assert run_sync().success
    changes = {
        name: account.mutate(name, insert=3, update=4, delete=2)
        for name in ("customers", "invoices", "payments", "subscriptions", "credit_notes")
    }
    assert run_sync().success
    assert table_counts(warehouse) == expected_counts(account)
    for name, change in changes.items():
        ids = {i for (i,) in query(warehouse, f"select id from invoiced.{name}")}
        assert set(change["inserted"]) <= ids, name
        assert not set(change["deleted"]) & ids, name
        truth = {r["id"]: r for r in account.records(name)}
        for record_id in change["updated"]:
            (updated_at,) = query(
                warehouse,
                f"select epoch(updated_at)::BIGINT from invoiced.{name} where id = {record_id}",
            )[0]
            assert updated_at == truth[record_id]["updated_at"], (name, record_id)
    # Line items of deleted invoices are gone too; those of the rest match the source exactly.
    items = query(warehouse, "select invoice_id, id from invoiced.invoice_line_items")
    truth_items = {(r["id"], i["id"]) for r in account.records("invoices") for i in r["items"]}
    assert set(items) == truth_items


def test_rejected_key_fails_clearly_and_keeps_tables(
    account: EmulatorServer, warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_sync().success
    before = table_counts(warehouse)
    account.mutate("invoices", delete=5)
    monkeypatch.setenv("INVOICED_API_KEY", "revoked-key-000")
    result = run_sync()
    assert not result.success
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert len(failures) == 1
    message = failures[0].step_failure_data.error.message
    assert "rejected the API key" in message and message.count("HTTP 401") == 1
    assert "revoked-key-000" not in message
    assert table_counts(warehouse) == before


def test_a_subset_reads_only_what_it_needs(account: EmulatorServer, warehouse: Path) -> None:
    account.reset_stats()
    result = run_sync(["invoice_line_items"])
    assert result.success
    assert set(table_counts(warehouse)) == {"invoice_line_items"}
    pages = -(-account.truth()["invoices"] // 100)
    # The newest event, the date-range probe, the walk, then its X-Total-Count again.
    assert account.stats()["requests"] == 1 + 1 + pages + 1


def test_dagster_job_execute_cli(account: EmulatorServer, warehouse: Path, tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    done = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "job", "execute", "-m", "invoiced_assets",
         "-j", "invoiced_sync"],
        env=env, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert table_counts(warehouse) == expected_counts(account)
    assert API_KEY not in done.stdout + done.stderr


def test_date_windows_read_the_same_rows(
    account: EmulatorServer, warehouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Long listings split into date windows (forced here) still give every row exactly once."""
    monkeypatch.setattr(windows, "PAGES_PER_WINDOW", 2)
    monkeypatch.setattr(pace, "FAST_ROUND_TRIP_SECONDS", 0.0)
    account.reset_stats()
    result = run_sync()
    assert result.success
    assert table_counts(warehouse) == expected_counts(account)
    # Split listings cost a second probe (the latest date) and read more, shorter walks.
    assert account.stats()["requests"] > full_load_requests(account)
    assert_matches_truth(account, warehouse)
