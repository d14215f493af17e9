"""A sync step reads the published tables' columns from `information_schema` by the schema, not
by the table, on DuckDB and on Snowflake (fakesnow).

Proves, on both destinations: within a held session, the first look at any table reads every
table of the schema in one query (columns in order, types and comments as a read of that table
alone gives them), a table that does not exist reads as empty, and staged tables are not among
them; a table forgotten after a publish is read again (its new column seen) in one query with
every other table forgotten since, and the others are not read again; outside a held session
every look reads afresh. On Snowflake, a table another tool created as a quoted lower-case
name beside ours is not read as ours. End to end, a full load and an incremental run of
customers, invoices and payments (three objects, seven tables) read `information_schema.columns`
twice each (once at the start, once after the publishes), where a query per table made eight,
and every check passes.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import pytest
from dagster_snowflake import SnowflakeResource

from invoiced_assets.catalogue import FieldType
from invoiced_assets.destinations.duckdb_destination import DuckDBSession
from invoiced_assets.destinations.snowflake_destination import (
    STAGING_PREFIX,
    InvoicedSnowflakeIOManager,
    SnowflakeSession,
)
from invoiced_assets.emulator import EmulatorServer

from .test_publish import Warehouse, check_results, invoices, publish_invoices, sync
from .test_publish import account as account  # the emulator fixture, customers and invoices
from .test_publish import warehouse as warehouse  # the DuckDB / Snowflake fixture

pytestmark = pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning")


@pytest.fixture
def column_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every query of `information_schema.columns` either destination's session runs."""
    seen: list[str] = []
    for session_class in (DuckDBSession, SnowflakeSession):
        rows = session_class.rows

        def counted(self: Any, sql: str, params: Any = (), _rows: Any = rows) -> list[tuple]:
            if "information_schema.columns" in sql.lower():
                seen.append(sql)
            return _rows(self, sql, params)

        monkeypatch.setattr(session_class, "rows", counted)
    yield seen


def test_a_held_session_reads_the_schema_once_and_forgotten_tables_together(
    warehouse: Warehouse, column_reads: list[str]
) -> None:
    manager = warehouse.manager()
    publish_invoices(manager, invoices(range(1, 4), items_each=2))
    one_by_one = {}
    with manager.open_session() as session:
        for table in ("invoices", "invoice_line_items"):
            one_by_one[table] = manager.read_schemas(session, [table])[table]
    assert set(one_by_one["invoice_line_items"].columns) >= {"id", "invoice_id", "position"}
    assert one_by_one["invoices"].comments.table  # the catalogue's text, read back

    column_reads.clear()
    with manager.held_session() as session:
        manager.clear_staging()
        manager.stage([("invoices", invoices(range(1, 3), items_each=1)["invoices"])], {})
        for table in ("invoices", "invoice_line_items"):
            held = manager.published_columns(session, table)
            assert list(held.items()) == list(one_by_one[table].columns.items())
            assert manager.published_comments(session, table) == one_by_one[table].comments
        assert manager.published_columns(session, "no_such_table") == {}
        staged = STAGING_PREFIX.lower() + "staged_invoices"  # beside them on Snowflake
        assert manager.published_columns(session, staged) == {}
        assert len(column_reads) == 1

        items = warehouse.table("invoice_line_items")
        warehouse.query(f"alter table {items} add column added_later bigint")
        assert "added_later" not in manager.published_columns(session, "invoice_line_items")
        manager.forget_columns(["invoice_line_items", "no_such_table"])
        columns = manager.published_columns(session, "invoice_line_items")
        assert columns["added_later"] == FieldType.INTEGER
        assert manager.published_columns(session, "no_such_table") == {}
        assert manager.published_columns(session, "invoices") == one_by_one["invoices"].columns
        assert len(column_reads) == 2  # the two forgotten tables in one query, invoices not again

    column_reads.clear()
    with manager.open_session() as session:  # not held: each look reads afresh
        manager.published_columns(session, "invoices")
        manager.published_columns(session, "invoices")
    assert len(column_reads) == 2


def test_snowflake_reads_only_its_own_spelling_of_a_table() -> None:
    class Answers:
        def rows(self, sql: str, params: Any = ()) -> list[tuple]:
            return [
                ("INVOICES", "ID", "NUMBER", 0, None, "ours"),
                ("invoices", "other_col", "TEXT", None, None, "theirs"),  # created quoted
                ("__INVOICED_STAGED_INVOICES", "ID", "NUMBER", 0, None, None),
            ]

    manager = InvoicedSnowflakeIOManager(
        snowflake=SnowflakeResource(account="a", user="u", password="p", database="analytics"),
        schema_name="INVOICED",
    )
    schemas = manager.read_schemas(Answers(), None)
    assert list(schemas) == ["invoices"]
    assert schemas["invoices"].columns == {"id": FieldType.INTEGER}
    assert schemas["invoices"].comments.table == "ours"


def test_a_sync_reads_columns_twice_not_per_table(
    warehouse: Warehouse,
    account: EmulatorServer,
    instance: dg.DagsterInstance,
    column_reads: list[str],
) -> None:
    full = sync(instance)
    assert full.success
    tables = {m.asset_key.path[-1] for m in full.asset_materializations_for_node("invoiced_tables")}
    assert len(tables) == 7  # customers; invoices and 3 child tables; payments, applications
    assert all(result.passed for result in check_results(full).values())
    assert len(column_reads) == 2, column_reads  # at the start, and after the publishes

    column_reads.clear()
    account.mutate("invoices", insert=3, update=3, delete=2)
    incremental = sync(instance)
    assert incremental.success
    assert all(result.passed for result in check_results(incremental).values())
    assert len(column_reads) == 2, column_reads
