"""Fidelity: every field of every record at scale 1 reaches the warehouse exactly as sent.

Runs the real job against the emulator at scale 1 and compares all 18 tables, row by row and
field by field, with the emulator's own JSON: unicode, nulls, nested JSON, integers, booleans,
UTC timestamps and money to the last digit. Also checks that sums of money match the API's.
"""

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pytest

from invoiced_assets.catalogue import CATALOGUE
from invoiced_assets.emulator import EmulatorServer

from .conftest import API_KEY
from .test_sync_job import run_sync


@pytest.fixture(scope="module")
def loaded() -> Iterator[tuple[EmulatorServer, Path]]:
    with (
        pytest.MonkeyPatch.context() as monkeypatch,
        EmulatorServer(scale=1, seed=1, api_key=API_KEY) as server,
    ):
        import tempfile

        path = Path(tempfile.mkdtemp()) / "warehouse.duckdb"
        monkeypatch.setenv("INVOICED_API_KEY", API_KEY)
        monkeypatch.setenv("INVOICED_BASE_URL", server.url)
        monkeypatch.setenv("INVOICED_DUCKDB_PATH", str(path))
        assert run_sync().success
        yield server, path


def expected_rows(server: EmulatorServer) -> dict[str, dict[tuple, dict[str, Any]]]:
    """Every table's rows as the API sent them, keyed by the table's key."""
    tables: dict[str, dict[tuple, dict[str, Any]]] = {}
    for obj in CATALOGUE:
        records = server.records(obj.name)
        excluded = {child.source_field for child in obj.children}
        tables[obj.name] = {
            (r["id"],): {k: v for k, v in r.items() if k not in excluded} for r in records
        }
        for child in obj.children:
            tables[child.name] = {
                (r["id"], position): {
                    child.parent_key_column: r["id"],
                    "position": position,
                    **element,
                }
                for r in records
                for position, element in enumerate(r.get(child.source_field) or ())
            }
    return tables


def same(sql_type: str, stored: Any, sent: Any) -> bool:
    if sent is None or stored is None:
        return sent is None and stored is None
    if sql_type == "JSON":
        return json.loads(stored) == sent
    if sql_type.startswith("DECIMAL"):
        return stored == Decimal(repr(sent) if isinstance(sent, float) else str(sent))
    if sql_type == "TIMESTAMP":
        return stored.replace(tzinfo=UTC) == datetime.fromtimestamp(sent, UTC)
    return type(stored) is type(sent) and stored == sent


def test_every_field_of_every_record(loaded: tuple[EmulatorServer, Path]) -> None:
    server, path = loaded
    expected = expected_rows(server)
    checked = 0
    with duckdb.connect(str(path), read_only=True) as connection:
        for table, rows in expected.items():
            types = dict(
                connection.execute(
                    "select column_name, data_type from information_schema.columns"
                    " where table_schema = 'invoiced' and table_name = ?",
                    [table],
                ).fetchall()
            )
            key = ["id"] if "position" not in types else [next(iter(types)), "position"]
            cursor = connection.execute(f"select * from invoiced.{table}")
            names = [d[0] for d in cursor.description]
            stored_rows = {
                tuple(row[names.index(k)] for k in key): dict(zip(names, row, strict=True))
                for row in cursor.fetchall()
            }
            assert stored_rows.keys() == rows.keys(), table
            for row_key, sent in rows.items():
                assert set(sent) <= set(types), (table, set(sent) - set(types))
                stored = stored_rows[row_key]
                for name, sql_type in types.items():
                    assert same(sql_type, stored[name], sent.get(name)), (
                        table, row_key, name, stored[name], sent.get(name)
                    )  # fmt: skip
                    checked += 1
    assert checked > 500_000


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
