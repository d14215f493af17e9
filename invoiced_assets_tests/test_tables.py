"""Records become typed, drift-tolerant tables, replaced atomically in DuckDB.

Proves: catalogue types reach the warehouse exactly (UTC timestamps, exact decimals, nullable
integers, booleans, JSON as sent, all-null known fields still typed); child tables carry parent id
and position; new, vanished, retyped and reordered fields never fail a load nor lose a value; a
failure in the middle of a write (a bad value) leaves the previous table intact (killed
publishes: `test_publish.py`). One widening rule types columns within a load and across loads:
it is a lattice (commutative, associative, the least type holding both), so a column typed from
two loads at once has the type its published column gets from one load and then the other, in
either order, for every declared type and every mix of values.
"""

import itertools
import json
import random
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from invoiced_assets.catalogue import INVOICES, PAYMENTS, FieldType
from invoiced_assets.destinations.duckdb_destination import InvoicedDuckDBIOManager
from invoiced_assets.tables.conversions import JsonText, column_type, widest
from invoiced_assets.tables.drift import plan_columns
from invoiced_assets.tables.shaping import Column, ShapedTable, shape_records

from .destination_helpers import publish

INVOICE = {
    "id": 46225,
    "object": "invoice",
    "customer": 15444,
    "name": "Zoë's café 🚀",
    "currency": "usd",
    "draft": False,
    "next_payment_attempt": None,
    "subscription": None,
    "date": 1416290400,
    "items": [
        {"id": 7, "name": "Paper", "quantity": 1, "unit_cost": 45, "amount": 45, "discounts": []},
        {
            "id": 8,
            "name": "Delivery",
            "quantity": 2.5,
            "unit_cost": 0.1235,
            "amount": 0.31,
            "taxes": [{"id": 1, "amount": 0.02}],
        },
    ],
    "taxes": [{"id": 20554, "object": "tax", "amount": 3.85, "tax_rate": None}],
    "discounts": [],
    "subtotal": 55,
    "total": 51.15,
    "balance": 0.1,
    "ship_to": {"name": "Dunder Mifflin", "address1": "1725 Slough Ave"},
    "metadata": {"account-rep": "Jan"},
    "updated_at": 1415229884,
    "created_at": 1415229884,
}


def write(path: Path, tables: dict[str, ShapedTable]) -> dg.ExecuteInProcessResult:
    """Stage `tables` and publish them through the real IO manager into `path`."""
    return publish(InvoicedDuckDBIOManager(database=str(path)), tables)


def rows(path: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(path), read_only=True) as connection:
        return connection.execute(sql).fetchall()


def column_types(path: Path, table: str) -> dict[str, str]:
    return dict(
        rows(
            path,
            "select column_name, data_type from information_schema.columns where"
            f" table_schema='invoiced' and table_name='{table}' order by ordinal_position",
        )
    )


def test_types_reach_the_warehouse_exactly(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    tables = shape_records(INVOICES, [INVOICE, {"id": 2, "total": 10, "date": None}])
    write(db, tables)
    types = column_types(db, "invoices")
    assert types["date"] == "TIMESTAMP" and types["total"] == "DECIMAL(38,10)"
    assert types["customer"] == "BIGINT" and types["draft"] == "BOOLEAN"
    assert types["ship_to"] == "JSON" and types["metadata"] == "JSON"
    # Known to the catalogue, null in every record: still a typed column.
    assert types["next_payment_attempt"] == "TIMESTAMP" and types["payment_plan"] == "BIGINT"
    assert "items" not in types and "taxes" not in types  # they are child tables
    (row,) = rows(
        db,
        "select name, date, total, balance, customer, ship_to, metadata from invoiced.invoices"
        " where id = 46225",
    )
    assert row[0] == "Zoë's café 🚀"
    assert row[1] == datetime(2014, 11, 18, 6, 0)
    assert row[2] == Decimal("51.15") and row[3] == Decimal("0.1")
    assert row[4] == 15444 and isinstance(row[4], int)
    assert json.loads(row[5]) == INVOICE["ship_to"] and json.loads(row[6]) == INVOICE["metadata"]
    assert rows(db, "select customer, date from invoiced.invoices where id = 2") == [(None, None)]
    assert rows(db, "select sum(total) from invoiced.invoices") == [(Decimal("61.15"),)]


def test_child_tables_carry_parent_and_position(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    write(db, shape_records(INVOICES, [INVOICE]))
    items = rows(
        db,
        "select invoice_id, position, id, quantity, unit_cost, amount, taxes"
        " from invoiced.invoice_line_items order by position",
    )
    assert [(r[0], r[1], r[2]) for r in items] == [(46225, 0, 7), (46225, 1, 8)]
    assert items[1][3:6] == (Decimal("2.5"), Decimal("0.1235"), Decimal("0.31"))
    assert json.loads(items[1][6]) == [{"id": 1, "amount": 0.02}]
    assert rows(db, "select invoice_id, position, amount from invoiced.invoice_taxes") == [
        (46225, 0, Decimal("3.85"))
    ]
    assert rows(db, "select count(*) from invoiced.invoice_discounts") == [(0,)]
    assert column_types(db, "invoice_discounts")["amount"] == "DECIMAL(38,10)"


def test_payment_applications_without_ids(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    payment = {
        "id": 61,
        "amount": 39,
        "applied_to": [
            {"type": "invoice", "invoice": 46225, "amount": 39},
            {"type": "credit", "amount": 1.5},
        ],
    }
    write(db, shape_records(PAYMENTS, [payment, {"id": 62, "amount": 1, "applied_to": None}]))
    assert rows(
        db,
        "select payment_id, position, type, invoice, amount from"
        " invoiced.payment_applications order by position",
    ) == [(61, 0, "invoice", 46225, Decimal("39")), (61, 1, "credit", None, Decimal("1.5"))]


def test_schema_drift_between_loads_loses_nothing(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    first = {**INVOICE, "legacy_field": "old"}
    write(db, shape_records(INVOICES, [first]))
    assert column_types(db, "invoices")["legacy_field"] == "VARCHAR"

    # Second load: a new field, a vanished one, integer → decimal and number → string changes,
    # and every field in the reverse order.
    second = {**INVOICE, "new_field": 3, "customer": 15444.5, "subtotal": "55.00 USD"}
    second = dict(reversed(list(second.items())))
    result = write(db, shape_records(INVOICES, [second]))
    types = column_types(db, "invoices")
    assert types["new_field"] == "BIGINT" and types["legacy_field"] == "VARCHAR"
    assert types["customer"] == "DECIMAL(38,10)" and types["subtotal"] == "VARCHAR"
    assert list(types)[:3] == ["id", "object", "customer"]  # existing order kept
    (row,) = rows(
        db, "select customer, subtotal, new_field, legacy_field, total from invoiced.invoices"
    )
    assert row == (Decimal("15444.5"), "55.00 USD", 3, None, Decimal("51.15"))
    changes = result.asset_materializations_for_node("load")
    invoices = next(m for m in changes if m.asset_key.path[-1] == "invoices")
    assert invoices.metadata["schema_changed"].value is True
    text = invoices.metadata["schema_changes"].value
    assert "added column new_field" in text and "legacy_field not sent any more" in text
    assert "customer widened from integer to decimal" in text

    # Third load back to integers: a widened column is never narrowed again.
    write(db, shape_records(INVOICES, [INVOICE]))
    assert column_types(db, "invoices")["customer"] == "DECIMAL(38,10)"
    assert rows(db, "select customer from invoiced.invoices") == [(Decimal("15444"),)]


def test_widening_rules() -> None:
    assert widest(FieldType.INTEGER, FieldType.DECIMAL) is FieldType.DECIMAL
    assert widest(FieldType.DECIMAL, FieldType.STRING) is FieldType.STRING
    assert widest(FieldType.JSON, FieldType.INTEGER) is FieldType.JSON
    assert widest(FieldType.BOOLEAN, FieldType.INTEGER) is FieldType.JSON
    assert widest(FieldType.JSON, FieldType.STRING) is FieldType.STRING
    assert widest(FieldType.TIMESTAMP, FieldType.INTEGER) is FieldType.STRING
    assert widest(FieldType.TIMESTAMP, FieldType.JSON) is FieldType.STRING
    assert column_type(FieldType.TIMESTAMP, {int}) is FieldType.TIMESTAMP  # UNIX seconds
    assert column_type(FieldType.TIMESTAMP, {int, float}) is FieldType.STRING
    assert column_type(FieldType.STRING, {JsonText}) is FieldType.STRING
    assert column_type(None, set()) is FieldType.STRING
    plan = plan_columns({"a": FieldType.INTEGER}, [Column("b", FieldType.STRING)])
    assert [c.name for c in plan.columns] == ["a", "b"] and plan.kept_missing == ["a"]


def test_one_widening_rule_within_and_across_loads() -> None:
    types = list(FieldType)
    for a, b, c in itertools.product(types, repeat=3):
        assert widest(a, b) is widest(b, a)
        assert widest(widest(a, b), c) is widest(a, widest(b, c))
        assert widest(a, widest(a, b)) is widest(a, b)  # it holds both, and a wider one adds none
    value_kinds = [bool, int, float, str, JsonText, type(None)]
    rng = random.Random(7)
    for declared in [None, *types]:
        for _ in range(200):
            first = set(rng.sample(value_kinds, rng.randint(0, 3)))
            second = set(rng.sample(value_kinds, rng.randint(0, 3)))
            if declared is None and not (first - {type(None)} and second - {type(None)}):
                continue  # an unknown field seen only as null is text, never narrowed after
            together = column_type(declared, first | second)
            published = column_type(declared, first)
            incoming = column_type(declared, second)
            plan = plan_columns({"x": published}, [Column("x", incoming)])
            assert plan.columns[0].type is together, (declared, first, second)
            reverse = plan_columns({"x": incoming}, [Column("x", published)])
            assert reverse.columns[0].type is together, (declared, first, second)


def _broken_table() -> ShapedTable:
    """A table whose `ship_to` holds text that is not JSON: the cast fails mid-write."""
    tables = shape_records(INVOICES, [INVOICE, {**INVOICE, "id": 3}])
    broken = tables["invoices"]
    broken.frame.loc[1, "ship_to"] = "{not json"
    return broken


def test_failed_write_leaves_previous_table_intact(tmp_path: Path) -> None:
    db = tmp_path / "w.duckdb"
    write(db, shape_records(INVOICES, [INVOICE, {"id": 1}, {"id": 2}]))
    with pytest.raises(Exception, match=r"(?i)json"):
        write(db, {"invoices": _broken_table()})
    assert rows(db, "select id from invoiced.invoices order by id") == [(1,), (2,), (46225,)]
    assert column_types(db, "invoices")["ship_to"] == "JSON"
