"""Fidelity: every field of every record at scale 1 reaches the warehouse exactly as sent.

Runs the real job against the emulator at scale 1 and compares every table, row by row and
field by field, with the emulator's own JSON: unicode, nulls, nested JSON, integers, booleans,
UTC timestamps and money to the last digit. Also checks that sums of money match the API's.
"""

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from invoiced_assets.emulator import EmulatorServer

from .conftest import API_KEY, use_emulator
from .test_sync_job import run_sync
from .warehouse_compare import assert_matches_truth


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmulatorServer, Path]]:
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        EmulatorServer(scale=1, seed=1, api_key=API_KEY) as server,
    ):
        path = tmp_path_factory.mktemp("fidelity") / "warehouse.duckdb"
        use_emulator(monkeypatch, server, path)
        assert run_sync().success
        yield server, path


def test_every_field_of_every_record(loaded: tuple[EmulatorServer, Path]) -> None:
    server, path = loaded
    assert assert_matches_truth(server, path) > 500_000


def test_unicode_nulls_and_money_sums(loaded: tuple[EmulatorServer, Path]) -> None:
    server, path = loaded
    customers = server.records("customers")
    with duckdb.connect(str(path), read_only=True) as connection:
        names = {n for (n,) in connection.execute("select name from invoiced.customers").fetchall()}
        assert {c["name"] for c in customers} == names
        assert any(not n.isascii() for n in names)
        for table, field in (
            ("invoices", "total"),
            ("payments", "amount"),
            ("credit_notes", "total"),
        ):
            stored = connection.execute(f"select sum({field}) from invoiced.{table}").fetchall()
            sent = sum(
                Decimal(repr(r[field])) for r in server.records(table) if r[field] is not None
            )
            assert stored == [(sent,)], table
        types = dict(
            connection.execute(
                "select column_name, data_type from information_schema.columns"
                " where table_schema = 'invoiced' and table_name = 'invoices'"
            ).fetchall()
        )
    assert types["total"] == "DECIMAL(38,10)" and types["date"] == "TIMESTAMP"
    assert types["metadata"] == "JSON" and types["customer"] == "BIGINT"
