"""The DuckDB destination: staging schema, in-warehouse audits, and an IO manager that publishes.

A run stages each table in the schema `<schema>_staging` of the same file, typed from the wire
values (`tables.conversions`) by one `CREATE TABLE … AS SELECT` with an explicit cast per column; long
tables stream in from their batch files within INVOICED_DUCKDB_MEMORY_LIMIT. The audit queries
run there (`sql.relation`). Publishing an object is one DuckDB transaction (`publication`):
a full load replaces each of its tables with `CREATE OR REPLACE TABLE … AS SELECT`; an
incremental run adds or widens columns, deletes the replaced rows and inserts the staged ones.
The same transaction writes the tables' and columns' comments (`COMMENT ON`, see `tables.docs`),
which `duckdb_columns()`, `duckdb_tables()` and `information_schema` show. DuckDB's DDL is
transactional, so readers see every table of the object old or every one new, comments included,
and a failure anywhere (a bad value, a full disk, a killed process) leaves them all as they were.

Connections come from dagster-duckdb's public `DuckDBResource`, which also waits out a file held
by another process.
"""

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
from dagster_duckdb import DuckDBResource
from pydantic import PrivateAttr

from invoiced_assets.catalogue import FieldType
from invoiced_assets.destinations.protocol import PublishedSchema, schemas_by_table
from invoiced_assets.destinations.publication import PublishingIOManager
from invoiced_assets.destinations.sql import KEY_SET_COLUMN
from invoiced_assets.settings import DEFAULT_DUCKDB_MEMORY_LIMIT
from invoiced_assets.tables.docs import TableComments
from invoiced_assets.tables.shaping import ShapedTable

DUCKDB_TYPES: Mapping[FieldType, str] = {
    FieldType.INTEGER: "BIGINT",
    FieldType.BOOLEAN: "BOOLEAN",
    FieldType.TIMESTAMP: "TIMESTAMP",
    FieldType.DECIMAL: "DECIMAL(38,10)",
    FieldType.STRING: "VARCHAR",
    FieldType.JSON: "JSON",
}
KEY_SET_PREFIX = "__keys_"
_FIELD_TYPES = {sql: field_type for field_type, sql in DUCKDB_TYPES.items()}


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def string_literal(text: str) -> str:
    """Text as a SQL string literal (`COMMENT ON` takes no parameters)."""
    return "'" + text.replace("'", "''") + "'"


def staging_schema(schema: str) -> str:
    return f"{schema}_staging"


class DuckDBDialect:
    """DuckDB's spelling of the destination SQL (`sql.Dialect`)."""

    transactional_ddl = True
    widening_keeps_comments = True  # ALTER COLUMN … SET DATA TYPE keeps them (measured)

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.staging = staging_schema(schema)

    def column(self, name: str) -> str:
        return quote(name)

    def stored_column(self, name: str) -> str:
        return name

    def published(self, table: str) -> str:
        return f"{quote(self.schema)}.{quote(table)}"

    def staged(self, table: str) -> str:
        return f"{quote(self.staging)}.{quote(table)}"

    def key_set(self, name: str) -> str:
        return f"{quote(self.staging)}.{quote(KEY_SET_PREFIX + name)}"

    def sql_type(self, field_type: FieldType) -> str:
        return DUCKDB_TYPES[field_type]

    def convert(self, value: str, source: FieldType, target: FieldType) -> str:
        # DuckDB's casts spell every widening as a full load of the wider type would
        # (a timestamp as 'YYYY-MM-DD HH:MM:SS', JSON as its text, a decimal with its scale).
        return value if source is target else f"CAST({value} AS {DUCKDB_TYPES[target]})"

    def widen_columns(
        self, table: str, columns: Mapping[str, FieldType], widened: Mapping[str, FieldType]
    ) -> list[str]:
        return [
            f"ALTER TABLE {self.published(table)} ALTER COLUMN {quote(name)} SET DATA TYPE"
            f" {DUCKDB_TYPES[new]} USING {self.convert(quote(name), columns[name], new)}"
            for name, new in widened.items()
        ]

    def comment_statements(self, table: str, comments: TableComments) -> list[str]:
        # One call for the table's comments, statements separated by `;`: a full load writes
        # them all again (CREATE OR REPLACE drops them), inside the publishing transaction.
        target = self.published(table)
        statements: list[str] = []
        if comments.table is not None:
            statements.append(f"COMMENT ON TABLE {target} IS {string_literal(comments.table)}")
        statements += [
            f"COMMENT ON COLUMN {target}.{quote(name)} IS {string_literal(text)}"
            for name, text in comments.columns.items()
        ]
        return [";\n".join(statements)] if statements else []

    def wire_cast(self, name: str, field_type: FieldType) -> str:
        """A staged wire value (see `tables.conversions`) as its typed value."""
        if field_type is FieldType.TIMESTAMP:
            # Wire timestamps are UNIX seconds; make_timestamp takes microseconds, no time zone.
            return f"make_timestamp(CAST({quote(name)} AS BIGINT) * 1000000)"
        return f"CAST({quote(name)} AS {DUCKDB_TYPES[field_type]})"


class DuckDBSession:
    """A DuckDB connection as a `protocol.SqlSession`."""

    def __init__(self, connection: duckdb.DuckDBPyConnection) -> None:
        self.connection = connection

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.connection.execute(sql, list(params)).fetchall()

    def change(self, sql: str, params: Sequence[Any] = ()) -> int:
        result = self.connection.execute(sql, list(params)).fetchall()
        first = result[0][0] if result and result[0] else 0
        return int(first) if isinstance(first, int) else 0


def existing_schemas(
    session: Any, schema: str, tables: Sequence[str] | None
) -> dict[str, PublishedSchema]:
    """The columns in order, as logical types, and the comments of `tables` (not empty) of
    `schema` (every table: None) in the warehouse file, by table; a table left out does not
    exist."""
    only = "" if tables is None else f" and c.table_name in ({', '.join('?' for _ in tables)})"
    rows = session.rows(
        "select c.table_name, c.column_name, c.data_type, c.column_comment, t.table_comment"
        " from information_schema.columns c join information_schema.tables t"
        " on t.table_catalog = c.table_catalog and t.table_schema = c.table_schema"
        " and t.table_name = c.table_name"
        # The file's own catalog: an attached database can have a schema of the same name.
        " where c.table_catalog = current_database()"
        f" and c.table_schema = ?{only} order by c.table_name, c.ordinal_position",
        [schema, *(tables or [])],
    )
    return schemas_by_table(
        (table, name, _FIELD_TYPES.get(sql, FieldType.STRING), column_comment, table_comment)
        for table, name, sql, column_comment, table_comment in rows
    )


def key_set_arrow(keys: Sequence[Any]) -> pa.Table:
    """A key set as a one-column table: integer ids, or text ids (plans, items)."""
    values = list(keys)
    kind = pa.int64() if all(isinstance(k, int) for k in values) else pa.string()
    return pa.table({KEY_SET_COLUMN: pa.array(values, kind)})


class InvoicedDuckDBIOManager(PublishingIOManager):
    """Stages, audits and publishes the Invoiced tables in a DuckDB file (see the module
    docstring); loads them back as pandas DataFrames for downstream assets."""

    database: str
    schema_name: str = "invoiced"
    memory_limit: str = DEFAULT_DUCKDB_MEMORY_LIMIT
    _dialect: DuckDBDialect | None = PrivateAttr(default=None)

    @property
    def dialect(self) -> DuckDBDialect:
        if self._dialect is None:
            self._dialect = DuckDBDialect(self.schema_name)
        return self._dialect

    @contextmanager
    def open_session(self) -> Iterator[DuckDBSession]:
        resource = DuckDBResource(
            database=self.database, connection_config=duckdb_connection_config(self.memory_limit)
        )
        with resource.get_connection() as connection:
            try:
                yield DuckDBSession(connection)
            finally:
                connection.close()

    def table_location(self, table: str) -> str:
        return f"{self.database}:{self.schema_name}.{table}"

    @property
    def staging_location(self) -> str:
        return f"the schema {self.dialect.staging} of {self.database}"

    def read_schemas(
        self, session: Any, tables: Sequence[str] | None
    ) -> dict[str, PublishedSchema]:
        return existing_schemas(session, self.schema_name, tables)

    def clear_staging(self) -> None:
        staging = quote(self.dialect.staging)
        with self.session() as session:
            session.change(f"DROP SCHEMA IF EXISTS {staging} CASCADE")
            session.change(f"CREATE SCHEMA {staging}")
            session.change(f"CREATE SCHEMA IF NOT EXISTS {quote(self.schema_name)}")

    def stage(
        self, tables: Sequence[tuple[str, ShapedTable]], key_sets: Mapping[str, Sequence[Any]]
    ) -> None:
        dialect = self.dialect
        with self.session() as session:
            connection = session.connection
            for name, shaped in tables:
                view = f"__invoiced_incoming_{name}"
                # In memory, or batch files scanned one batch at a time (see `tables.batches`).
                connection.register(view, shaped.data.arrow_source())
                select = ", ".join(
                    f"{dialect.wire_cast(c.name, c.type)} AS {quote(c.name)}"
                    for c in shaped.columns
                )
                session.change(
                    f"CREATE OR REPLACE TABLE {dialect.staged(name)} AS SELECT {select} FROM {quote(view)}"
                )
                connection.unregister(view)
            for name, keys in key_sets.items():
                connection.register("__invoiced_keys", key_set_arrow(keys))
                session.change(
                    f"CREATE OR REPLACE TABLE {dialect.key_set(name)} AS SELECT * FROM __invoiced_keys"
                )
                connection.unregister("__invoiced_keys")

    def read_frame(self, table: str) -> pd.DataFrame:
        with self.session() as session:
            return session.connection.execute(f"SELECT * FROM {self.dialect.published(table)}").df()


def duckdb_connection_config(memory_limit: str = DEFAULT_DUCKDB_MEMORY_LIMIT) -> dict[str, Any]:
    """The configuration of every connection to the warehouse file (DuckDB refuses a second
    connection to an open file with another configuration, so readers use the same one)."""
    return {"memory_limit": memory_limit}


def duckdb_io_manager(
    database: Path, schema: str, memory_limit: str = DEFAULT_DUCKDB_MEMORY_LIMIT
) -> InvoicedDuckDBIOManager:
    database.parent.mkdir(parents=True, exist_ok=True)
    return InvoicedDuckDBIOManager(
        database=str(database), schema_name=schema, memory_limit=memory_limit
    )
