"""The Snowflake destination: transient staging tables, in-warehouse audits, an IO manager that
publishes with statements real Snowflake supports (and fakesnow too, so the tests run them).

Staging a table: `CREATE TRANSIENT TABLE "__INVOICED_WIRE_<TABLE>"` with the wire types of
`tables.conversions`, `write_pandas` into it (PUT of Parquet + `COPY INTO`, 20,000 rows at a time), then
`CREATE OR REPLACE TRANSIENT TABLE "__INVOICED_STAGED_<TABLE>" AS SELECT <typed casts>` and the
wire table dropped. Transient: no Fail-safe copy is kept of a table that lives for one run.

Publishing an object (`publication`): Snowflake commits each DDL statement on its own, so the
drift statements go first (a new column; a widened type by `CREATE OR REPLACE TABLE … COPY GRANTS
AS SELECT` of the table itself, which changes no value), then one explicit transaction holds
every row change of the object's tables: `DELETE` + `INSERT … SELECT` from staging (every row for
a full load, the replaced ones for an incremental run). Readers see all of the object's tables
old or all new (their rows: a new column can be seen, null, just before). A load no longer
recreates the table (only a widened type does, keeping its grants), so its Time Travel history
and comments stay, and an incremental run changes only the rows it must.

Comments (`tables.docs`: `COMMENT ON TABLE` / `COMMENT ON COLUMN`, shown by
`information_schema.tables.comment` and `.columns.comment`) are DDL too, which would commit the
open transaction: only those the table does not hold yet are written, after the rows' COMMIT (a
failed publish changes none); a column added by drift gets its comment just after it is added,
and a table a widening rebuilt gets its comments back at once, so no drift date is ever lost. A
comment that cannot be written is logged as a warning: the rows are published, the next run
writes it again.

Tables and columns are created in upper case, the names Snowflake gives unquoted identifiers, so
`select total from invoiced.invoices` works; a name that is not a plain identifier (with a dash,
say) is created quoted, exactly as the API sent it.
"""

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import dagster as dg
import pandas as pd
from dagster_snowflake import SnowflakeResource

from invoiced_assets.catalogue import FieldType
from invoiced_assets.destinations.protocol import PublishedSchema, schemas_by_table
from invoiced_assets.destinations.publication import PublishingIOManager
from invoiced_assets.destinations.sql import KEY_SET_COLUMN
from invoiced_assets.tables.docs import TableComments
from invoiced_assets.tables.shaping import ShapedTable

SNOWFLAKE_TYPES: Mapping[FieldType, str] = {
    FieldType.INTEGER: "NUMBER(38,0)",
    FieldType.BOOLEAN: "BOOLEAN",
    FieldType.TIMESTAMP: "TIMESTAMP_NTZ",  # holding UTC
    FieldType.DECIMAL: "NUMBER(38,10)",
    FieldType.STRING: "VARCHAR",
    FieldType.JSON: "VARIANT",
}
# How the wire table holds each type's wire values (see `tables.conversions`): integers as integers,
# everything else as the text it already is. Declared rather than inferred by `write_pandas`,
# so an all-null or empty load stages with the same types as any other.
_WIRE_TYPES: Mapping[FieldType, str] = {
    FieldType.INTEGER: "NUMBER(38,0)",
    FieldType.BOOLEAN: "BOOLEAN",
    FieldType.TIMESTAMP: "NUMBER(38,0)",  # UNIX seconds
    FieldType.DECIMAL: "VARCHAR",  # exact decimal text: never a float on the way
    FieldType.STRING: "VARCHAR",
    FieldType.JSON: "VARCHAR",  # JSON text, parsed into a VARIANT when typed
}
# The format DuckDB gives a timestamp cast to text; Snowflake's default depends on the session.
_TIMESTAMP_TEXT = "'YYYY-MM-DD HH24:MI:SS'"
STAGING_PREFIX = "__INVOICED_"
UPLOAD_ROWS = 20_000

_PLAIN_API_NAME = re.compile(r"[a-z_][a-z0-9_$]*")
_PLAIN_STORED_NAME = re.compile(r"[A-Z_][A-Z0-9_$]*")
_PLAIN_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def string_literal(text: str) -> str:
    """Text as a Snowflake string literal, where a backslash starts an escape sequence."""
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def warehouse_name(api_name: str) -> str:
    """A table or column name as created: upper case when users can write it unquoted."""
    return api_name.upper() if _PLAIN_API_NAME.fullmatch(api_name) else api_name


def api_name(stored_name: str) -> str:
    """The inverse of `warehouse_name`, so drift planning compares the API's own names."""
    return stored_name.lower() if _PLAIN_STORED_NAME.fullmatch(stored_name) else stored_name


def object_name(identifier: str) -> str:
    """A configured database or schema name in SQL, meant as written (unquoted) unless it could
    only be a quoted name."""
    return identifier if _PLAIN_IDENTIFIER.fullmatch(identifier) else quote(identifier)


def stored_object_name(identifier: str) -> str:
    """A configured database or schema name as Snowflake stores it (unquoted names fold up)."""
    return identifier.upper() if _PLAIN_IDENTIFIER.fullmatch(identifier) else identifier


def qualified_name(database: str, schema: str, stored_table: str) -> str:
    return f"{object_name(database)}.{object_name(schema)}.{quote(stored_table)}"


def _field_type(data_type: str, scale: int | None) -> FieldType:
    """The logical type of an existing column, from information_schema."""
    data_type = data_type.upper()
    if data_type in ("NUMBER", "DECIMAL", "NUMERIC"):
        return FieldType.INTEGER if not scale else FieldType.DECIMAL
    if data_type in ("VARIANT", "OBJECT", "ARRAY"):
        return FieldType.JSON
    if data_type == "TIMESTAMP_NTZ":
        return FieldType.TIMESTAMP
    if data_type == "BOOLEAN":
        return FieldType.BOOLEAN
    return FieldType.STRING  # TEXT, and any type this project never creates: the widest


class SnowflakeDialect:
    """Snowflake's spelling of the destination SQL (`sql.Dialect`)."""

    transactional_ddl = False
    widening_keeps_comments = False  # `widen_columns` rebuilds the table, without them

    def __init__(self, database: str, schema: str) -> None:
        self.database, self.schema = database, schema

    def _qualified(self, stored: str) -> str:
        return qualified_name(self.database, self.schema, stored)

    def column(self, name: str) -> str:
        return quote(warehouse_name(name))

    def stored_column(self, name: str) -> str:
        return warehouse_name(name)

    def published(self, table: str) -> str:
        return self._qualified(warehouse_name(table))

    def staged(self, table: str) -> str:
        return self._qualified(f"{STAGING_PREFIX}STAGED_{table.upper()}")

    def wire(self, table: str) -> str:
        return self._qualified(f"{STAGING_PREFIX}WIRE_{table.upper()}")

    def key_set(self, name: str) -> str:
        return self._qualified(f"{STAGING_PREFIX}KEYS_{name.upper()}")

    def sql_type(self, field_type: FieldType) -> str:
        return SNOWFLAKE_TYPES[field_type]

    def typed(self, wire: str, field_type: FieldType) -> str:
        """A wire value as its logical type's Snowflake value."""
        if field_type is FieldType.TIMESTAMP:
            # From a number with scale 0: seconds (text holding digits would have its unit
            # guessed from its magnitude), as its UTC wall clock whatever the session's TIMEZONE.
            return f"TO_TIMESTAMP_NTZ({wire}, 0)"
        if field_type is FieldType.JSON:
            return f"PARSE_JSON({wire})"
        # Decimals: from their exact text straight to NUMBER(38,10), never through a float.
        return f"CAST({wire} AS {SNOWFLAKE_TYPES[field_type]})"

    def convert(self, value: str, source: FieldType, target: FieldType) -> str:
        if source is target:
            return value
        if target is FieldType.STRING:
            if source is FieldType.JSON:
                return f"TO_JSON({value})"  # the JSON text (VARIANT to VARCHAR unquotes strings)
            if source is FieldType.TIMESTAMP:
                return f"TO_VARCHAR({value}, {_TIMESTAMP_TEXT})"
            return f"CAST({value} AS VARCHAR)"
        if target is FieldType.JSON:
            if source is FieldType.DECIMAL:
                return f"PARSE_JSON(TO_VARCHAR({value}))"
            return f"TO_VARIANT({value})"  # integers and booleans (a timestamp widens to text)
        return f"CAST({value} AS {SNOWFLAKE_TYPES[target]})"  # integer → decimal

    def widen_columns(
        self, table: str, columns: Mapping[str, FieldType], widened: Mapping[str, FieldType]
    ) -> list[str]:
        select = ", ".join(
            f"{self.convert(self.column(n), t, widened[n])} AS {self.column(n)}"
            if n in widened else self.column(n)
            for n, t in columns.items()
        )  # fmt: skip
        target = self.published(table)
        # COPY GRANTS: roles granted SELECT on the table keep it.
        return [f"CREATE OR REPLACE TABLE {target} COPY GRANTS AS SELECT {select} FROM {target}"]

    def comment_statements(self, table: str, comments: TableComments) -> list[str]:
        # One statement per comment: the forms that set many at once (`ALTER TABLE … ALTER
        # COLUMN a COMMENT …, COLUMN b COMMENT …`, column COMMENTs in CREATE TABLE) are not run
        # by fakesnow, so the tests could not check them.
        target = self.published(table)
        statements: list[str] = []
        if comments.table is not None:
            statements.append(f"COMMENT ON TABLE {target} IS {string_literal(comments.table)}")
        return statements + [
            f"COMMENT ON COLUMN {target}.{self.column(name)} IS {string_literal(text)}"
            for name, text in comments.columns.items()
        ]


class SnowflakeSession:
    """A Snowflake cursor as a `protocol.SqlSession`."""

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.cursor = connection.cursor()

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return self.cursor.execute(sql, tuple(params)).fetchall()

    def change(self, sql: str, params: Sequence[Any] = ()) -> int:
        self.cursor.execute(sql, tuple(params))
        count = self.cursor.rowcount
        return int(count) if isinstance(count, int) and count > 0 else 0


def _upload(connection: Any, frame: pd.DataFrame, database: str, schema: str, table: str) -> None:
    # Imported here, at call time: fakesnow patches the module's attribute, so a name bound at
    # import would keep calling the real function in tests.
    from snowflake.connector.pandas_tools import write_pandas

    success, _, rows, _ = write_pandas(
        conn=connection,
        df=frame,
        table_name=table,
        database=stored_object_name(database),
        schema=stored_object_name(schema),
        quote_identifiers=True,  # the staging names are exact; never let Snowflake fold them
        auto_create_table=False,  # created with declared wire types, see `_WIRE_TYPES`
        use_logical_type=True,
    )
    if not success or rows != len(frame):
        raise RuntimeError(f"Staging {table}: {rows} of {len(frame)} rows were loaded.")


class InvoicedSnowflakeIOManager(PublishingIOManager):
    """Stages, audits and publishes the Invoiced tables in Snowflake (see the module docstring);
    loads them back as pandas DataFrames for downstream assets."""

    snowflake: SnowflakeResource
    schema_name: str

    @property
    def database(self) -> str:
        return self.snowflake.database or ""

    @property
    def dialect(self) -> SnowflakeDialect:
        return SnowflakeDialect(self.database, self.schema_name)

    @contextmanager
    def open_session(self) -> Iterator[SnowflakeSession]:
        with self.snowflake.get_connection() as connection:
            yield SnowflakeSession(connection)

    def table_location(self, table: str) -> str:
        """DATABASE.SCHEMA.TABLE as Snowflake shows it."""
        names = (stored_object_name(self.database), stored_object_name(self.schema_name))
        return ".".join([*names, warehouse_name(table)])

    @property
    def staging_location(self) -> str:
        where = f"{stored_object_name(self.database)}.{stored_object_name(self.schema_name)}"
        return f"the transient tables {STAGING_PREFIX}STAGED_<TABLE> of {where}"

    def read_schemas(
        self, session: Any, tables: Sequence[str] | None
    ) -> dict[str, PublishedSchema]:
        schema = f"{object_name(self.database)}.information_schema"
        stored = [warehouse_name(table) for table in tables or []]
        only = "" if tables is None else f" and c.table_name in ({', '.join('%s' for _ in stored)})"
        rows = session.rows(
            "select c.table_name, c.column_name, c.data_type, c.numeric_scale,"
            " c.comment as column_comment, t.comment as table_comment"
            f" from {schema}.columns c join {schema}.tables t"
            " on t.table_schema = c.table_schema and t.table_name = c.table_name"
            f" where c.table_schema = %s{only} order by c.table_name, c.ordinal_position",
            (stored_object_name(self.schema_name), *stored),
        )
        return schemas_by_table(
            (api_name(table), api_name(name), _field_type(data_type, scale), comment, table_comment)
            for table, name, data_type, scale, comment, table_comment in rows
            # Not this run's staged tables, beside them, nor a table another tool named so that
            # it would read as one of ours (a quoted "invoices" beside INVOICES).
            if not table.startswith(STAGING_PREFIX) and warehouse_name(api_name(table)) == table
        )

    def clear_staging(self) -> None:
        database, schema = object_name(self.database), stored_object_name(self.schema_name)
        with self.session() as session:
            # Looked up first, so a role without CREATE SCHEMA can write into a schema made for
            # it; `if not exists` covers another run creating it at the same moment.
            found = session.rows(
                f"select schema_name from {database}.information_schema.schemata"
                " where schema_name = %s",
                (schema,),
            )
            if not found:
                session.change(
                    f"create schema if not exists {database}.{object_name(self.schema_name)}"
                )
            for (name,) in session.rows(
                f"select table_name from {database}.information_schema.tables"
                " where table_schema = %s",
                (schema,),
            ):
                if name.startswith(STAGING_PREFIX):
                    session.change(
                        f"DROP TABLE IF EXISTS {qualified_name(self.database, self.schema_name, name)}"
                    )

    def stage(
        self, tables: Sequence[tuple[str, ShapedTable]], key_sets: Mapping[str, Sequence[Any]]
    ) -> None:
        d = self.dialect
        with self.session() as session:
            for name, shaped in tables:
                wire = {c.name: f"C{i}" for i, c in enumerate(shaped.columns)}
                columns = ", ".join(
                    f"{quote(wire[c.name])} {_WIRE_TYPES[c.type]}" for c in shaped.columns
                )
                session.change(f"CREATE OR REPLACE TRANSIENT TABLE {d.wire(name)} ({columns})")
                stored = f"{STAGING_PREFIX}WIRE_{name.upper()}"
                for frame in shaped.data.frames(UPLOAD_ROWS):
                    if len(frame):
                        frame = frame.set_axis(list(wire.values()), axis="columns")
                        _upload(session.connection, frame, self.database, self.schema_name, stored)
                select = ", ".join(
                    f"{d.typed(quote(wire[c.name]), c.type)} AS {d.column(c.name)}"
                    for c in shaped.columns
                )
                session.change(
                    f"CREATE OR REPLACE TRANSIENT TABLE {d.staged(name)} AS SELECT {select} FROM {d.wire(name)}"
                )
                session.change(f"DROP TABLE IF EXISTS {d.wire(name)}")
            for name, keys in key_sets.items():
                values = list(keys)
                kind = "NUMBER(38,0)" if all(isinstance(k, int) for k in values) else "VARCHAR"
                key = d.column(KEY_SET_COLUMN)
                session.change(
                    f"CREATE OR REPLACE TRANSIENT TABLE {d.key_set(name)} ({key} {kind})"
                )
                if values:
                    stored = f"{STAGING_PREFIX}KEYS_{name.upper()}"
                    frame = pd.DataFrame({warehouse_name(KEY_SET_COLUMN): values})
                    _upload(session.connection, frame, self.database, self.schema_name, stored)

    def read_frame(self, table: str) -> pd.DataFrame:
        with self.session() as session:
            session.cursor.execute(f"SELECT * FROM {self.dialect.published(table)}")
            frame = session.cursor.fetch_pandas_all()
        return frame.rename(columns=api_name)


def _connection_settings() -> dict[str, Any]:
    """Connection settings from SNOWFLAKE_* variables, each kept a `dg.EnvVar`.

    Every value stays a `dg.EnvVar`, resolved only inside runs, so no secret sits in the
    definitions or shows in the UI. Only the optional variables that are set are passed. One
    credential is used: a key pair (SNOWFLAKE_PRIVATE_KEY, raw or base64, or
    SNOWFLAKE_PRIVATE_KEY_PATH, with SNOWFLAKE_PRIVATE_KEY_PASSPHRASE if the key is encrypted)
    when given, else SNOWFLAKE_PASSWORD: Snowflake refuses a connection configured with both.
    The required variables are checked by `settings` before this is called.
    """
    optional: dict[str, str] = {"role": "SNOWFLAKE_ROLE", "warehouse": "SNOWFLAKE_WAREHOUSE"}
    if os.environ.get("SNOWFLAKE_PRIVATE_KEY"):
        optional["private_key"] = "SNOWFLAKE_PRIVATE_KEY"
    elif os.environ.get("SNOWFLAKE_PRIVATE_KEY_PATH"):
        optional["private_key_path"] = "SNOWFLAKE_PRIVATE_KEY_PATH"
    else:
        optional["password"] = "SNOWFLAKE_PASSWORD"
    if "password" not in optional:
        optional["private_key_password"] = "SNOWFLAKE_PRIVATE_KEY_PASSPHRASE"
    settings = {
        field: dg.EnvVar(variable)
        for field, variable in optional.items()
        if os.environ.get(variable)
    }
    return {
        "account": dg.EnvVar("SNOWFLAKE_ACCOUNT"),
        "user": dg.EnvVar("SNOWFLAKE_USER"),
        "database": dg.EnvVar("SNOWFLAKE_DATABASE"),
        **settings,
    }


def snowflake_io_manager(*, schema: str) -> InvoicedSnowflakeIOManager:
    """The IO manager, configured from SNOWFLAKE_* environment variables."""
    return InvoicedSnowflakeIOManager(
        snowflake=SnowflakeResource(**_connection_settings()), schema_name=schema
    )
