"""Reading tables back from the destination, for incremental syncs.

An incremental sync merges the changed records into the table as it is, then writes the merged
table through the same atomic, drift-tolerant IO manager path as a full load. This reads a table
back in the *wire* form of `shaping` (UNIX seconds, exact decimal text, JSON text), with its
columns' logical types, so the merge never converts a value through a lossy type.
"""

from collections.abc import Sequence
from typing import Any, Protocol

import dagster as dg
import duckdb
import pandas as pd
from pydantic import Field

from invoiced_assets.catalogue import FieldType
from invoiced_assets.duckdb_destination import existing_columns, quote
from invoiced_assets.shaping import Column, ShapedTable


class Warehouse(Protocol):
    """What incremental syncs need of a destination."""

    def read_table(
        self, table: str, key: tuple[str, ...], columns: Sequence[str] | None = None
    ) -> ShapedTable | None:
        """The table's rows in wire form, or None when it does not exist."""
        ...


def _wire_expression(name: str, field_type: FieldType) -> str:
    column = quote(name)
    if field_type is FieldType.TIMESTAMP:
        return f"CAST(epoch({column}) AS BIGINT) AS {column}"
    if field_type in (FieldType.DECIMAL, FieldType.JSON):
        return f"CAST({column} AS VARCHAR) AS {column}"
    return column


class DuckDBWarehouse(dg.ConfigurableResource):
    """Reads tables of the DuckDB destination back (one short-lived connection per read)."""

    database: str
    schema_name: str
    # The IO manager's (see `duckdb_destination.duckdb_connection_config`).
    connection_config: dict[str, Any] = Field(default_factory=dict)

    def read_table(
        self, table: str, key: tuple[str, ...], columns: Sequence[str] | None = None
    ) -> ShapedTable | None:
        try:
            connection = duckdb.connect(
                self.database, config={"custom_user_agent": "dagster", **self.connection_config}
            )
        except duckdb.IOException:
            return None  # no warehouse file yet
        with connection:
            types = existing_columns(connection, self.schema_name, table)
            if not types:
                return None
            names = [n for n in types if columns is None or n in columns]
            select = ", ".join(_wire_expression(name, types[name]) for name in names)
            arrow = connection.sql(
                f"SELECT {select} FROM {quote(self.schema_name)}.{quote(table)}"
            ).to_arrow_table()
        frame = arrow.to_pandas(types_mapper=pd.ArrowDtype)
        return ShapedTable.of_frame(table, key, [Column(n, types[n]) for n in names], frame)


def table_exists(warehouse: Warehouse, table: str, key: tuple[str, ...]) -> bool:
    return warehouse.read_table(table, key, columns=list(key)) is not None


def read_ids(warehouse: Warehouse, table: str, key: str) -> set[Any] | None:
    """The table's keys, or None when the table does not exist."""
    previous = warehouse.read_table(table, (key,), columns=[key])
    return None if previous is None else set(previous.frame[key].dropna().tolist())
