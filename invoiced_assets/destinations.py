"""Chooses where the tables go: decided in one place, from the settings.

Locally: DuckDB (or Snowflake when INVOICED_DESTINATION=snowflake). In a Dagster+ deployment:
Snowflake, in SNOWFLAKE_SCHEMA; in a branch deployment, in a schema of the branch's own.
"""

from typing import Any

from invoiced_assets.duckdb_destination import duckdb_connection_config, duckdb_io_manager
from invoiced_assets.settings import SCHEMA, Settings
from invoiced_assets.warehouse import DuckDBWarehouse


def build_io_manager(settings: Settings) -> Any:
    if settings.destination == "snowflake":
        # Imported here: the Snowflake connector takes a second to import, DuckDB users skip it.
        from invoiced_assets.snowflake_destination import snowflake_io_manager

        return snowflake_io_manager(schema=settings.snowflake_schema)
    return duckdb_io_manager(settings.duckdb_path, SCHEMA, settings.duckdb_memory_limit)


def build_warehouse(settings: Settings) -> Any:
    """Reads tables back for incremental syncs, from the same destination."""
    if settings.destination == "snowflake":
        from invoiced_assets.snowflake_destination import snowflake_warehouse

        return snowflake_warehouse(schema=settings.snowflake_schema)
    return DuckDBWarehouse(
        database=str(settings.duckdb_path),
        schema_name=SCHEMA,
        connection_config=duckdb_connection_config(settings.duckdb_memory_limit),
    )
