"""The history checks' one query (`history.checks_query`) finds each kind of damage by its own
check, in full and within an incremental merge's records, and passes an intact history.

A small table and its history in an in-memory DuckDB: a second current version of a record, two
versions whose windows overlap, a current version whose hash is not its row's, a published row
with no current version and a current version of a row gone from the table.
"""

import duckdb
import pytest

from invoiced_assets.catalogue import FieldType
from invoiced_assets.destinations import history
from invoiced_assets.destinations.duckdb_destination import DuckDBDialect

DIALECT = DuckDBDialect("invoiced")
COLUMNS = {"id": FieldType.INTEGER, "status": FieldType.STRING}
SPEC = history.HistorySpec("invoices", ("id",), changed_at=None)
META = ", ".join(history.META_COLUMNS)


def account() -> duckdb.DuckDBPyConnection:
    """Invoices 1-3 published; 1 has an earlier version, 2 and 3 one version each."""
    connection = duckdb.connect()
    connection.execute("create schema invoiced; create schema invoiced_staging")
    connection.execute("create table invoiced.invoices (id bigint, status varchar)")
    connection.execute(
        "insert into invoiced.invoices values (1, 'paid'), (2, 'draft'), (3, 'sent')"
    )
    (statement,) = history.table_statements(DIALECT, SPEC, COLUMNS, {})
    connection.execute(statement)
    opened, closed = history.maintenance_statements(DIALECT, SPEC, COLUMNS, (), 1_700_000_000)
    connection.execute(
        "insert into invoiced.invoices_history (id, status, " + META + ") values"
        " (1, 'draft', '2023-01-01', '2023-06-01', false, false, 'old')"
    )
    connection.execute(opened)
    connection.execute(closed)
    connection.execute(
        "update invoiced.invoices_history set valid_from = '2023-06-01' where id = 1 and is_current"
    )
    # The records an incremental merge staged: invoice 1 only.
    connection.execute("create table invoiced_staging.invoices as select 1 as id")
    return connection


def figures(connection: duckdb.DuckDBPyConnection, scoped: bool = False) -> dict[str, int]:
    scope = (
        (lambda alias: f"{alias}.id IN (SELECT id FROM invoiced_staging.invoices)")
        if scoped
        else None
    )
    query = history.checks_query(DIALECT, SPEC, COLUMNS, scope)
    offending, rows = history.check_figures(connection.execute(query).fetchone())
    assert (
        rows == connection.execute("select count(*) from invoiced.invoices_history").fetchone()[0]
    )
    return offending


def test_an_intact_history_passes_every_check() -> None:
    connection = account()
    assert figures(connection) == dict.fromkeys(history.HISTORY_INVARIANTS, 0)
    assert figures(connection, scoped=True) == dict.fromkeys(history.HISTORY_INVARIANTS, 0)


@pytest.mark.parametrize(
    ("damage", "found"),
    [
        (
            "insert into invoiced.invoices_history select * from invoiced.invoices_history"
            " where id = 1 and is_current",
            # A second current version: also a window open while the next begins, and one version
            # more than the table's rows.
            {history.ONE_CURRENT: 1, history.NO_OVERLAP: 1, history.CURRENT_MATCHES: 1},
        ),
        (
            "update invoiced.invoices_history set valid_to = '2023-07-01' where id = 1 and not"
            " is_current",
            {history.NO_OVERLAP: 1},
        ),
        (
            "update invoiced.invoices_history set record_hash = 'wrong' where id = 1 and is_current",
            {history.CURRENT_MATCHES: 2},
        ),
        (
            "delete from invoiced.invoices_history where id = 1 and is_current",
            # Found in scope, and by the count of current versions against the table's rows.
            {history.CURRENT_MATCHES: 2},
        ),
        (
            "delete from invoiced.invoices where id = 1",
            {history.CURRENT_MATCHES: 2},
        ),
    ],
)
def test_each_damage_is_found_by_its_check(damage: str, found: dict[str, int]) -> None:
    connection = account()
    connection.execute(damage)
    expected = dict.fromkeys(history.HISTORY_INVARIANTS, 0) | found
    assert figures(connection) == expected
    assert figures(connection, scoped=True) == expected


def test_damage_outside_the_merge_is_left_to_the_count() -> None:
    connection = account()
    connection.execute("update invoiced.invoices_history set record_hash = 'x' where id = 3")
    assert figures(connection)[history.CURRENT_MATCHES] == 2  # its row, and its version
    assert figures(connection, scoped=True)[history.CURRENT_MATCHES] == 0  # checked when merged
    connection.execute("delete from invoiced.invoices_history where id = 3")
    assert figures(connection, scoped=True)[history.CURRENT_MATCHES] == 1  # the count
