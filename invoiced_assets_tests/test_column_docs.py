"""Every column documented: in the UI's column schema, and as table and column comments in DuckDB
and in Snowflake (fakesnow).

Proves: every column a table can have (the catalogue's fields, a child table's parent key and
`position`, a plain list's `value`, the `customer` the reader adds to payment sources, events'
flattened `data_object` and `data_previous`) has a one-line description, and a catalogue field
written without one does not even load; `documented_schema` gives the UI those descriptions before
any materialization, named and typed as each destination stores the columns; a full load of the
emulator's account, into DuckDB and into Snowflake, leaves every table's and column's comment
equal to the catalogue's text (apostrophes included), as `duckdb_columns()`, `duckdb_tables()` and
`information_schema` show them, and every materialization's column schema carries the same
descriptions; a column schema drift adds is commented `added by schema drift on <day>` (UTC) and
keeps that day through later full loads, a merge, a widening (which rebuilds the table on
Snowflake) and another drift column; a comment written by hand on such a column (an apostrophe, a
backslash) is kept exactly; a failed publish changes no comment, and the next one restores the
catalogue's text where it was changed.

Not covered, fakesnow 0.12 cannot: that Snowflake's COMMENT statements commit on their own (they
are run outside the rows' transaction for that reason, which fakesnow cannot tell apart);
fakesnow stores a table comment holding an apostrophe only once its own escaping bug is patched
(`destination_helpers.escape_fakesnow_table_comments`; Snowflake takes the statement as it is).
"""

from collections.abc import Iterator
from datetime import date
from typing import Any

import dagster as dg
import pytest

from invoiced_assets.assets import table_assets
from invoiced_assets.catalogue import (
    CATALOGUE,
    EVENTS,
    INVOICES,
    PAYMENT_SOURCES,
    ChildTable,
    FieldType,
    InvoicedObject,
    fields,
)
from invoiced_assets.destinations import column_spelling
from invoiced_assets.destinations.protocol import Merge, RowDeletion
from invoiced_assets.emulator import EmulatorServer
from invoiced_assets.tables import docs
from invoiced_assets.tables.docs import (
    column_descriptions,
    documented_fields,
    documented_schema,
    table_comment,
)
from invoiced_assets.tables.shaping import ShapedTable, shape_records

from .conftest import use_emulator
from .destination_helpers import escape_fakesnow_table_comments, publish
from .test_publish import Warehouse
from .test_publish import warehouse as warehouse  # the DuckDB / Snowflake fixture
from .test_sync_job import run_sync
from .test_tables import INVOICE

pytestmark = pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning")

TABLES: list[tuple[InvoicedObject, ChildTable | None]] = [
    (obj, child) for obj in CATALOGUE for child in (None, *obj.children)
]
SAMPLE_VALUES: dict[FieldType, Any] = {
    FieldType.INTEGER: 1,
    FieldType.STRING: "text",
    FieldType.BOOLEAN: True,
    FieldType.TIMESTAMP: 1_700_000_000,
    FieldType.DECIMAL: 1.5,
    FieldType.JSON: {"key": "value"},
}


def table_name(obj: InvoicedObject, child: ChildTable | None) -> str:
    return child.name if child else obj.name


# -- descriptions in the catalogue ----------------------------------------------------------------


def record_with_every_field(obj: InvoicedObject) -> dict[str, Any]:
    """A record as the reader hands it to shaping, every catalogue field and child list set."""
    flattened = {f"{name}_{key}" for name, keys in obj.flatten.items() for key in keys}
    added_by_reader = {obj.customer_column} if obj.per_customer else set()
    record: dict[str, Any] = {
        f.name: SAMPLE_VALUES[f.type]
        for f in obj.fields
        if f.name not in flattened | added_by_reader
    }
    for name, keys in obj.flatten.items():
        record[name] = {key: {"id": 1} for key in keys}  # e.g. events' `data`
    for child in obj.children:
        element = {f.name: SAMPLE_VALUES[f.type] for f in child.fields}
        record[child.source_field] = [element, "a plain value"]  # the second becomes `value`
    if obj.per_customer:
        record = {obj.customer_column: 1, **record}  # as `extract.listings` adds it
    return record


@pytest.mark.parametrize(("obj", "child"), TABLES, ids=[table_name(*t) for t in TABLES])
def test_every_column_a_table_can_have_is_described(
    obj: InvoicedObject, child: ChildTable | None
) -> None:
    described = column_descriptions(obj, child)
    for name, description in described.items():
        assert description and "\n" not in description, name
        assert not description.startswith(docs.DRIFT_PREFIX), name
    names = [f.name for f in documented_fields(obj, child)]
    assert len(names) == len(set(names))
    shaped = shape_records(obj, [record_with_every_field(obj)])[table_name(obj, child)]
    assert shaped.row_count >= 1
    undescribed = [c.name for c in shaped.columns if c.name not in described]
    assert not undescribed, f"{table_name(obj, child)}: no description for {undescribed}"


def test_the_columns_shaping_adds_are_described() -> None:
    line_items = INVOICES.children[0]
    described = column_descriptions(INVOICES, line_items)
    assert described["invoice_id"] == "ID of the invoice this row belongs to (`invoices.id`)."
    assert described["position"] == (
        "Place of this row in the invoice's `items` list, counting from 0."
    )
    assert "value" in described  # a list of plain values, should the API send one
    assert column_descriptions(PAYMENT_SOURCES)["customer"].startswith("ID of the customer")
    assert {"data_object", "data_previous"} <= set(column_descriptions(EVENTS))
    # Shared texts are written once and worded for every table alike.
    assert column_descriptions(INVOICES)["created_at"] == "When the record was created (UTC)."
    assert column_descriptions(INVOICES)["balance"].startswith("Amount still owed")


def test_a_field_without_a_description_does_not_load() -> None:
    assert fields("id:integer\nnotes  Internal notes.")[1].description == "Internal notes."
    assert (
        fields("updated_at:timestamp")[0].description == "When the record was last changed (UTC)."
    )
    with pytest.raises(ValueError, match="no description"):
        fields("id:integer\nlegacy_code:integer")
    with pytest.raises(ValueError, match="no description"):
        fields("id:integer object name")  # the old one-line form would lose every description


def test_the_ui_shows_descriptions_before_any_materialization() -> None:
    line_items = INVOICES.children[0]
    logical = documented_schema(INVOICES, line_items)
    assert [(c.name, c.type) for c in logical.columns[:3]] == [
        ("invoice_id", "integer"),
        ("position", "integer"),
        ("id", "integer"),
    ]
    assert all(c.description for c in logical.columns)
    duck = {c.name: c for c in documented_schema(INVOICES, None, column_spelling("duckdb")).columns}
    assert duck["balance"].type == "DECIMAL(38,10)"
    assert duck["balance"].description == column_descriptions(INVOICES)["balance"]
    snow = {
        c.name: c for c in documented_schema(INVOICES, None, column_spelling("snowflake")).columns
    }
    assert snow["BALANCE"].type == "NUMBER(38,10)" and snow["SHIP_TO"].type == "VARIANT"

    # As an asset definition carries it: the UI's Columns table reads this metadata.
    spec = dg.AssetSpec(["invoiced", "invoices"], metadata={"dagster/column_schema": logical})
    (definition,) = dg.Definitions(assets=[spec]).resolve_all_asset_specs()
    shown = definition.metadata["dagster/column_schema"]
    assert isinstance(shown, dg.TableSchema) and shown.columns == logical.columns

    # The table comment is the asset's description, for every table.
    for asset in table_assets(CATALOGUE):
        assert table_comment(asset.obj, asset.child) == asset.description


# -- a full load: the warehouse's comments and the materializations' column schema ---------------


@pytest.fixture
def documented_warehouse(
    warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Warehouse]:
    """A DuckDB or Snowflake warehouse, fakesnow made to store table comments with apostrophes."""
    if warehouse.kind == "snowflake":
        escape_fakesnow_table_comments(monkeypatch)
    yield warehouse


def held_comments(warehouse: Warehouse, table: str) -> tuple[str | None, dict[str, str | None]]:
    """(table comment, column -> comment) as the warehouse's catalogue shows them, by API name."""
    if warehouse.kind == "duckdb":
        columns = warehouse.query(
            "select column_name, comment from duckdb_columns() where schema_name = 'invoiced'"
            f" and table_name = '{table}' order by column_index"
        )
        (table_row,) = warehouse.query(
            "select comment from duckdb_tables() where schema_name = 'invoiced'"
            f" and table_name = '{table}'"
        )
        return table_row[0], dict(columns)
    stored = table.upper()
    columns = warehouse.query(
        "select column_name, comment from analytics.information_schema.columns"
        f" where table_schema = 'INVOICED' and table_name = '{stored}' order by ordinal_position"
    )
    (table_row,) = warehouse.query(
        "select comment from analytics.information_schema.tables"
        f" where table_schema = 'INVOICED' and table_name = '{stored}'"
    )
    return table_row[0], {name.lower(): comment for name, comment in columns}


def column_schema(result: dg.ExecuteInProcessResult, node: str, table: str) -> dict[str, Any]:
    """A materialization's column schema: stored column name -> (type, description)."""
    (materialization,) = [
        m for m in result.asset_materializations_for_node(node) if m.asset_key.path[-1] == table
    ]
    columns = materialization.metadata["dagster/column_schema"].schema.columns
    return {c.name: (c.type, c.description) for c in columns}


def test_a_full_load_documents_every_table_and_column(
    documented_warehouse: Warehouse, emulator: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = documented_warehouse
    use_emulator(monkeypatch, emulator)
    result = run_sync()
    assert result.success
    spelling = column_spelling(warehouse.kind)
    for obj, child in TABLES:
        name = table_name(obj, child)
        held_table, held = held_comments(warehouse, name)
        assert held_table == table_comment(obj, child), name
        described = column_descriptions(obj, child)
        assert held == {column: described[column] for column in held}, name
        # The materialization shows exactly what the definition showed, and the warehouse holds.
        expected = {
            c.name: (c.type, c.description) for c in documented_schema(obj, child, spelling).columns
        }
        assert column_schema(result, "invoiced_tables", name) == expected, name
    if warehouse.kind == "duckdb":  # the same comments through information_schema
        (row,) = warehouse.query(
            "select c.column_comment, t.table_comment from information_schema.columns c"
            " join information_schema.tables t using (table_catalog, table_schema, table_name)"
            " where c.table_schema = 'invoiced' and c.table_name = 'invoices'"
            " and c.column_name = 'purchase_order'"
        )
        assert row == ("The customer's purchase order number.", INVOICES.description)
        assert warehouse.query(
            "select count(*) from information_schema.columns where table_schema = 'invoiced'"
            " and column_comment is null"
        ) == [(0,)]
    else:
        assert warehouse.query(
            "select count(*) from analytics.information_schema.columns"
            " where table_schema = 'INVOICED' and comment is null"
        ) == [(0,)]


# -- schema drift: the day a column came, kept -------------------------------------------------------


def on_day(monkeypatch: pytest.MonkeyPatch, day: date) -> None:
    """Publishes from now on happen on `day` (UTC)."""
    monkeypatch.setattr(docs, "utc_today", lambda: day)


def invoices(records: list[dict[str, Any]]) -> dict[str, ShapedTable]:
    return {"invoices": shape_records(INVOICES, records)["invoices"]}


def set_comment(warehouse: Warehouse, column: str, literal: str) -> None:
    """Write a comment on an invoices column by hand, `literal` spelled in the warehouse's SQL."""
    warehouse.query(f"COMMENT ON COLUMN {warehouse.table('invoices')}.{column} IS {literal}")


DRIFT_DAY, LATER = date(2024, 3, 1), date(2024, 3, 2)
HAND_WRITTEN = "Zoë's code, as written by hand \\ kept"
HAND_WRITTEN_LITERAL = {
    "duckdb": "'Zoë''s code, as written by hand \\ kept'",
    "snowflake": "'Zoë''s code, as written by hand \\\\ kept'",  # a backslash escapes
}


def test_a_drift_column_keeps_the_day_it_came(
    documented_warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = documented_warehouse
    manager = warehouse.manager()
    on_day(monkeypatch, DRIFT_DAY)
    first = publish(manager, invoices([{**INVOICE, "legacy_code": "A-1", "region": "EU"}]))
    drifted = f"added by schema drift on {DRIFT_DAY.isoformat()}"
    _, held = held_comments(warehouse, "invoices")
    assert held["legacy_code"] == held["region"] == drifted
    stored = column_spelling(warehouse.kind).stored_column
    assert column_schema(first, "load", "invoices")[stored("legacy_code")][1] == drifted
    set_comment(warehouse, stored("region"), HAND_WRITTEN_LITERAL[warehouse.kind])

    # A day later, a full load again (DuckDB replaces the table, and every comment with it).
    on_day(monkeypatch, LATER)
    again = publish(manager, invoices([{**INVOICE, "legacy_code": "A-2", "region": "US"}]))
    _, held = held_comments(warehouse, "invoices")
    assert held["legacy_code"] == drifted and held["region"] == HAND_WRITTEN
    assert column_schema(again, "load", "invoices")[stored("legacy_code")][1] == drifted

    # A merge that widens `customer` (Snowflake rebuilds the table) and brings another field.
    merged = publish(
        manager,
        invoices([{**INVOICE, "customer": 15444.5, "late_fee": True}]),
        {"invoices": Merge((RowDeletion("id", "replaced"),))},
        {"replaced": [INVOICE["id"]]},
    )
    held_table, held = held_comments(warehouse, "invoices")
    assert held["legacy_code"] == drifted and held["region"] == HAND_WRITTEN
    assert held["late_fee"] == f"added by schema drift on {LATER.isoformat()}"
    assert held["customer"] == column_descriptions(INVOICES)["customer"]
    assert held_table == INVOICES.description
    schema = column_schema(merged, "load", "invoices")
    assert {name: description for name, (_, description) in schema.items()} == {
        stored(name): comment for name, comment in held.items()
    }


def test_a_failed_publish_changes_no_comment(
    documented_warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    warehouse = documented_warehouse
    manager = warehouse.manager()
    on_day(monkeypatch, DRIFT_DAY)
    publish(manager, invoices([INVOICE]))
    stored = column_spelling(warehouse.kind).stored_column
    set_comment(warehouse, stored("total"), "'changed by hand'")

    on_day(monkeypatch, LATER)

    def fail_at_commit(statement: str) -> None:
        if statement == "COMMIT":  # every statement of the publish has run but this one
            raise ConnectionError("connection lost before COMMIT")

    changed = invoices([{**INVOICE, "id": 3, "legacy_code": "A-1"}])
    assert not publish(manager, changed, observe=fail_at_commit, raise_on_error=False).success
    assert warehouse.query(f"select id from {warehouse.table('invoices')}") == [(INVOICE["id"],)]
    _, held = held_comments(warehouse, "invoices")
    assert held["total"] == "changed by hand"
    if warehouse.kind == "duckdb":
        assert "legacy_code" not in held  # the column's addition was rolled back with the rows
    else:
        # Snowflake's DDL commits on its own: the column stays (null), with the day it came.
        assert held["legacy_code"] == f"added by schema drift on {LATER.isoformat()}"

    publish(manager, invoices([INVOICE]))
    _, held = held_comments(warehouse, "invoices")
    assert held["total"] == column_descriptions(INVOICES)["total"]
