"""Compare a DuckDB warehouse with the emulator's ground truth, every field of every row."""

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb

from invoiced_assets.catalogue import CATALOGUE, InvoicedObject
from invoiced_assets.emulator import EmulatorServer
from invoiced_assets.tables.shaping import flatten


def expected_rows(
    server: EmulatorServer, objects: Sequence[InvoicedObject] = CATALOGUE
) -> dict[str, dict[tuple, dict[str, Any]]]:
    """Every table's rows as the API sends them, keyed by the table's key."""
    tables: dict[str, dict[tuple, dict[str, Any]]] = {}
    for obj in objects:
        records = [flatten(r, obj.flatten) for r in server.records(obj.name)]
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
    """Whether a stored value is exactly what the API sent."""
    if sent is None or stored is None:
        return sent is None and stored is None
    if sql_type == "JSON":
        return json.loads(stored) == sent
    if sql_type.startswith("DECIMAL"):
        return stored == Decimal(repr(sent) if isinstance(sent, float) else str(sent))
    if sql_type == "TIMESTAMP":
        return stored.replace(tzinfo=UTC) == datetime.fromtimestamp(sent, UTC)
    return type(stored) is type(sent) and stored == sent


def assert_matches_truth(server: EmulatorServer, path: Path) -> int:
    """Assert every table equals the ground truth field by field; return the fields compared."""
    checked = 0
    with duckdb.connect(str(path), read_only=True) as connection:
        for table, rows in expected_rows(server).items():
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
            assert stored_rows.keys() == rows.keys(), (
                table, set(stored_rows) - set(rows), set(rows) - set(stored_rows)
            )  # fmt: skip
            for row_key, sent in rows.items():
                assert set(sent) <= set(types), (table, set(sent) - set(types))
                stored = stored_rows[row_key]
                for name, sql_type in types.items():
                    assert same(sql_type, stored[name], sent.get(name)), (
                        table, row_key, name, stored[name], sent.get(name)
                    )  # fmt: skip
                    checked += 1
    return checked
