"""The Snowflake destination: dagster-snowflake-pandas, extended so that a load can never lose data.

The stock `SnowflakePandasIOManager` runs `DELETE FROM <table>` and then appends the DataFrame
with `write_pandas`, as separate statements: a failed append leaves an empty table behind, a new
API field fails the append into the existing columns, and column types are inferred from each
load's DataFrame (money as FLOAT, an all-null column typed by accident).

This extends it in the same two small places as the DuckDB destination, rather than forking it:
- `ReplacingSnowflakeDbClient` skips the stock pre-write delete and creates the schema when it
  is missing (a branch deployment's schema is new);
- `SnowflakeShapedTableTypeHandler` writes a `ShapedTable` with an explicit cast per column,
  planned by `schema_evolution` against the table as it is, using only statements real Snowflake
  supports (and fakesnow too, so the tests run them):

  1. `CREATE TRANSIENT TABLE <db>.<schema>."__INVOICED_INCOMING_<TABLE>_<utc stamp>_<random>"
     ("C0" <wire type>, ...)`, then `write_pandas` into it (PUT of Parquet + `COPY INTO`): the
     frame's wire values, by position, in a table of the target's own schema;
  2. `CREATE OR REPLACE TABLE <db>.<schema>."<TABLE>" COPY GRANTS AS SELECT <cast> AS
     "<COLUMN>", ... FROM <staging>`: one DDL statement, atomic on Snowflake: readers see the
     old table or the new one, never an empty or partial one, and any failure before or during
     it (a bad value, a lost connection, a killed process) leaves the previous table as it was.
     COPY GRANTS keeps the privileges granted on the old table;
  3. `DROP TABLE IF EXISTS <staging>`, also after a failure (best effort). Staging tables left
     by a killed process are dropped by a later write once they are a day old.

`ALTER TABLE … SWAP WITH` would be the other atomic swap, but fakesnow cannot parse it, and a
single `CREATE OR REPLACE … AS SELECT` needs no second table to name.

Tables and columns are created in upper case, the names Snowflake gives unquoted identifiers, so
`select total from invoiced.invoices` works; a name that is not a plain identifier (with a dash,
say) is created quoted, exactly as the API sent it.

Reading a table back as a pandas DataFrame (for assets downstream of ours) is the stock handler's.
"""

import os
import re
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import dagster as dg
import pandas as pd
from dagster_snowflake import SnowflakeResource
from dagster_snowflake.snowflake_io_manager import SnowflakeDbClient
from dagster_snowflake_pandas import SnowflakePandasIOManager, SnowflakePandasTypeHandler

from invoiced_assets.catalogue import FieldType
from invoiced_assets.schema_evolution import ColumnPlan, PlannedColumn, plan_columns
from invoiced_assets.shaping import Column, ShapedTable, rewire
from invoiced_assets.written_table import table_metadata

SNOWFLAKE_TYPES: Mapping[FieldType, str] = {
    FieldType.INTEGER: "NUMBER(38,0)",
    FieldType.BOOLEAN: "BOOLEAN",
    FieldType.TIMESTAMP: "TIMESTAMP_NTZ",  # holding UTC
    FieldType.DECIMAL: "NUMBER(38,10)",
    FieldType.STRING: "VARCHAR",
    FieldType.JSON: "VARIANT",
}

# How the staging table holds each type's wire values (see `shaping`): the frame's integers as
# integers, everything else as the text it already is. Declared here rather than inferred by
# `write_pandas`, so an all-null or empty load stages with the same types as any other.
_WIRE_TYPES: Mapping[FieldType, str] = {
    FieldType.INTEGER: "NUMBER(38,0)",
    FieldType.BOOLEAN: "BOOLEAN",
    FieldType.TIMESTAMP: "NUMBER(38,0)",  # UNIX seconds
    FieldType.DECIMAL: "VARCHAR",  # exact decimal text: never a float on the way
    FieldType.STRING: "VARCHAR",
    FieldType.JSON: "VARCHAR",  # JSON text, parsed into a VARIANT by the replacing statement
}

# The format DuckDB gives a timestamp cast to text; Snowflake's default depends on the session.
_TIMESTAMP_TEXT = "'YYYY-MM-DD HH24:MI:SS'"

STAGING_PREFIX = "__INVOICED_INCOMING_"
STALE_STAGING_AGE = timedelta(days=1)
_STAGING_STAMP = "%Y%m%d%H%M%S"
_STAGING_NAME = re.compile(re.escape(STAGING_PREFIX) + r".*_([0-9]{14})_[0-9A-F]{8}")

_PLAIN_API_NAME = re.compile(r"[a-z_][a-z0-9_$]*")
_PLAIN_STORED_NAME = re.compile(r"[A-Z_][A-Z0-9_$]*")
_PLAIN_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def warehouse_name(api_name: str) -> str:
    """A table or column name as created: upper case when users can write it unquoted."""
    return api_name.upper() if _PLAIN_API_NAME.fullmatch(api_name) else api_name


def api_name(stored_name: str) -> str:
    """The inverse of `warehouse_name`, so drift planning compares the API's own names."""
    return stored_name.lower() if _PLAIN_STORED_NAME.fullmatch(stored_name) else stored_name


def object_name(identifier: str) -> str:
    """A configured database or schema name in SQL, meant as written (unquoted, like the stock
    IO manager) unless it could only be a quoted name."""
    return identifier if _PLAIN_IDENTIFIER.fullmatch(identifier) else quote(identifier)


def stored_object_name(identifier: str) -> str:
    """A configured database or schema name as Snowflake stores it (unquoted names fold up)."""
    return identifier.upper() if _PLAIN_IDENTIFIER.fullmatch(identifier) else identifier


def qualified_name(database: str, schema: str, stored_table: str) -> str:
    return f"{object_name(database)}.{object_name(schema)}.{quote(stored_table)}"


def display_name(database: str, schema: str, table: str) -> str:
    """DATABASE.SCHEMA.TABLE as Snowflake shows it (the `dagster/table_name` metadata)."""
    return f"{stored_object_name(database)}.{stored_object_name(schema)}.{warehouse_name(table)}"


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


def existing_columns(cursor: Any, database: str, schema: str, table: str) -> dict[str, FieldType]:
    """The table's columns in order, by API name, as logical types (empty if it does not exist)."""
    rows = cursor.execute(
        f"select column_name, data_type, numeric_scale from {object_name(database)}"
        ".information_schema.columns where table_schema = %s and table_name = %s"
        " order by ordinal_position",
        (stored_object_name(schema), warehouse_name(table)),
    ).fetchall()
    return {api_name(name): _field_type(data_type, scale) for name, data_type, scale in rows}


def _typed_value(wire: str, field_type: FieldType) -> str:
    """A staged wire value as its logical type's Snowflake value."""
    if field_type is FieldType.TIMESTAMP:
        # From a number with scale 0: seconds (text holding digits would have its unit guessed
        # from its magnitude). An epoch becomes its UTC wall clock, whatever the session's
        # TIMEZONE, in a TIMESTAMP_NTZ.
        return f"TO_TIMESTAMP_NTZ({wire}, 0)"
    if field_type is FieldType.JSON:
        return f"PARSE_JSON({wire})"
    # Decimals: from their exact text straight to NUMBER(38,10), never through a float.
    return f"CAST({wire} AS {SNOWFLAKE_TYPES[field_type]})"


def _widened_value(wire: str, value: str, incoming: FieldType, target: FieldType) -> str:
    """A typed value in a wider column (the widening rules are `schema_evolution.widest`)."""
    if target is FieldType.STRING:
        if incoming is FieldType.JSON:
            return wire  # the JSON text as sent (VARIANT to VARCHAR unquotes a JSON string)
        if incoming is FieldType.TIMESTAMP:
            return f"TO_VARCHAR({value}, {_TIMESTAMP_TEXT})"
        return f"CAST({value} AS VARCHAR)"
    if target is FieldType.JSON:
        if incoming is FieldType.DECIMAL:
            return f"PARSE_JSON({wire})"  # the number exactly as sent
        if incoming is FieldType.TIMESTAMP:
            return f"TO_VARIANT(TO_VARCHAR({value}, {_TIMESTAMP_TEXT}))"
        return f"TO_VARIANT({value})"
    return f"CAST({value} AS {SNOWFLAKE_TYPES[target]})"  # integer → decimal


def _select_expression(column: PlannedColumn, wire_column: str | None) -> str:
    """The cast of one staged wire column (see `shaping`) to its warehouse column."""
    target = SNOWFLAKE_TYPES[column.type]
    name = quote(warehouse_name(column.name))
    if column.incoming_type is None or wire_column is None:
        return f"CAST(NULL AS {target}) AS {name}"
    wire = quote(wire_column)
    value = _typed_value(wire, column.incoming_type)
    if column.type is not column.incoming_type:
        value = _widened_value(wire, value, column.incoming_type, column.type)
    return f"{value} AS {name}"


def staging_table_name(table: str, now: datetime) -> str:
    """A name no other write uses, carrying its creation time for `drop_stale_staging_tables`."""
    stamp = now.astimezone(UTC).strftime(_STAGING_STAMP)
    return f"{STAGING_PREFIX}{table.upper()}_{stamp}_{secrets.token_hex(4).upper()}"


def drop_stale_staging_tables(cursor: Any, database: str, schema: str, now: datetime) -> None:
    """Drop staging tables a killed process left behind (a day old: no write takes that long,
    so a concurrent write's staging table is never touched)."""
    rows = cursor.execute(
        f"select table_name from {object_name(database)}.information_schema.tables"
        " where table_schema = %s",
        (stored_object_name(schema),),
    ).fetchall()
    for (name,) in rows:
        match = _STAGING_NAME.fullmatch(name)
        if match is None:
            continue
        created = datetime.strptime(match.group(1), _STAGING_STAMP).replace(tzinfo=UTC)
        if now - created > STALE_STAGING_AGE:
            _drop_quietly(cursor, qualified_name(database, schema, name))


UPLOAD_ROWS = 20_000


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


def replace_table(
    connection: Any, database: str, schema: str, table: str, shaped: ShapedTable
) -> tuple[ColumnPlan, list[tuple[str, str]]]:
    """Replace `database.schema.table` with `shaped` atomically (see the module docstring)."""
    now = datetime.now(UTC)
    with connection.cursor() as cursor:
        drop_stale_staging_tables(cursor, database, schema, now)
        plan = plan_columns(existing_columns(cursor, database, schema, table), shaped.columns)
        # Staged by position ("C0", "C1", …): any API name, however spelled, stages the same way.
        wire_columns = {column.name: f"C{i}" for i, column in enumerate(shaped.columns)}
        staging_name = staging_table_name(table, now)
        staging = qualified_name(database, schema, staging_name)
        staging_columns = ", ".join(
            f"{quote(wire_columns[c.name])} {_WIRE_TYPES[c.type]}" for c in shaped.columns
        )
        select = ", ".join(_select_expression(c, wire_columns.get(c.name)) for c in plan.columns)
        try:
            # Transient: no Fail-safe copy is kept of a table that lives for one write.
            cursor.execute(f"CREATE TRANSIENT TABLE {staging} ({staging_columns})")
            # A few batches at a time (see `table_data`): each upload is a stage, a PUT and a
            # COPY, seconds apiece on Snowflake, so batches are grouped into larger uploads.
            for frame in shaped.data.frames(UPLOAD_ROWS):
                if len(frame):
                    frame = frame.set_axis(list(wire_columns.values()), axis="columns")
                    _upload(connection, frame, database, schema, staging_name)
            cursor.execute(
                f"CREATE OR REPLACE TABLE {qualified_name(database, schema, warehouse_name(table))}"
                # COPY GRANTS: roles granted SELECT on the table keep it on the new one.
                " COPY GRANTS"
                f" AS SELECT {select} FROM {staging}"
            )
        finally:
            _drop_quietly(cursor, staging)
    return plan, [(warehouse_name(c.name), SNOWFLAKE_TYPES[c.type]) for c in plan.columns]


def _drop_quietly(cursor: Any, staging: str) -> None:
    try:
        cursor.execute(f"DROP TABLE IF EXISTS {staging}")
    except Exception:
        # Never hide the write's own error under a cleanup error; a later write drops it.
        dg.get_dagster_logger().warning(f"Could not drop the staging table {staging}.")


class SnowflakeShapedTableTypeHandler(SnowflakePandasTypeHandler):
    """Writes `ShapedTable` outputs atomically, by column name, with the catalogue's types."""

    def handle_output(
        self, context: dg.OutputContext, table_slice: Any, obj: ShapedTable, connection: Any
    ) -> Mapping[str, Any]:
        database, schema, table = table_slice.database, table_slice.schema, table_slice.table
        plan, sql_columns = replace_table(connection, database, schema, table, obj)
        # The stock IO manager names the table as configured (`analytics.INVOICED.invoices`),
        # but only when the handler has not: this is the name Snowflake shows.
        return {
            **table_metadata(obj, plan, sql_columns),
            "dagster/table_name": display_name(database, schema, table),
        }

    @property
    def supported_types(self) -> Sequence[type]:
        return [ShapedTable]


class ReplacingSnowflakeDbClient(SnowflakeDbClient):
    """The stock Snowflake client, without its pre-write delete."""

    @staticmethod
    def ensure_schema_exists(context: dg.OutputContext, table_slice: Any, connection: Any) -> None:
        database, schema = table_slice.database, table_slice.schema
        with connection.cursor() as cursor:
            # Looked up first, so a role without CREATE SCHEMA can write into a schema made for
            # it; `if not exists` covers another step creating it at the same moment.
            found = cursor.execute(
                f"select schema_name from {object_name(database)}.information_schema.schemata"
                " where schema_name = %s",
                (stored_object_name(schema),),
            ).fetchall()
            if not found:
                cursor.execute(
                    f"create schema if not exists {object_name(database)}.{object_name(schema)}"
                )

    @staticmethod
    def delete_table_slice(context: dg.OutputContext, table_slice: Any, connection: Any) -> None:
        """Nothing to delete: the type handler replaces the whole table in one statement."""


class InvoicedSnowflakeIOManager(SnowflakePandasIOManager):
    """Snowflake IO manager for Invoiced tables: atomic, typed, drift-tolerant writes.

    Loads tables back as pandas DataFrames, like the stock `SnowflakePandasIOManager`.
    """

    @staticmethod
    def type_handlers() -> Sequence[Any]:
        return [SnowflakeShapedTableTypeHandler(), SnowflakePandasTypeHandler()]

    def create_io_manager(self, context: Any) -> Any:
        stock = super().create_io_manager(context)
        # The stock DbIOManager, built with our client (its class is not public API, so it is
        # taken from the instance rather than imported from dagster's internals).
        return type(stock)(
            db_client=ReplacingSnowflakeDbClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="InvoicedSnowflakeIOManager",
        )


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
    return InvoicedSnowflakeIOManager(schema=schema, **_connection_settings())


def _wire_expression(name: str, field_type: FieldType) -> str:
    """A stored column read back in `shaping`'s wire form (see `warehouse`)."""
    column = quote(warehouse_name(name))
    if field_type is FieldType.TIMESTAMP:
        return f"DATE_PART(EPOCH_SECOND, {column})"
    if field_type is FieldType.DECIMAL:
        return f"TO_VARCHAR({column})"
    if field_type is FieldType.JSON:
        return f"TO_JSON({column})"
    return column


class SnowflakeWarehouse(SnowflakeResource):
    """Reads Invoiced tables back from Snowflake, for incremental syncs (see `warehouse`)."""

    schema_name: str

    def get_object_to_set_on_execution_context(self) -> Any:
        # SnowflakeResource hands ops a raw connection; the sync needs this reader itself.
        return self

    def read_table(
        self, table: str, key: tuple[str, ...], columns: Sequence[str] | None = None
    ) -> ShapedTable | None:
        database = self.database or ""
        with self.get_connection() as connection:
            cursor = connection.cursor()
            types = existing_columns(cursor, database, self.schema_name, table)
            if not types:
                return None
            names = [n for n in types if columns is None or n in columns]
            select = ", ".join(_wire_expression(name, types[name]) for name in names)
            rows = cursor.execute(
                f"SELECT {select} FROM"
                f" {qualified_name(database, self.schema_name, warehouse_name(table))}"
            ).fetchall()
        values = list(zip(*rows, strict=True)) if rows else [()] * len(names)
        frame = pd.DataFrame(
            {name: rewire([_plain(v) for v in column], types[name])
             for name, column in zip(names, values, strict=True)},
            index=pd.RangeIndex(len(rows)),
        )  # fmt: skip
        return ShapedTable.of_frame(table, key, [Column(n, types[n]) for n in names], frame)


def _plain(value: Any) -> Any:
    """A fetched value as a wire value: Decimals of whole numbers become ints."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    return value


def snowflake_warehouse(*, schema: str) -> SnowflakeWarehouse:
    return SnowflakeWarehouse(schema_name=schema, **_connection_settings())
