"""Chooses where the tables go: decided in one place, from the settings.

Locally: DuckDB (or Snowflake when INVOICED_DESTINATION=snowflake). In a Dagster+ deployment:
Snowflake, in SNOWFLAKE_SCHEMA; in a branch deployment, in a schema of the branch's own.
"""

from typing import Any

from invoiced_assets.duckdb_destination import duckdb_io_manager
from invoiced_assets.settings import SCHEMA, Settings


def build_io_manager(settings: Settings) -> Any:
    if settings.destination == "snowflake":
        # Imported here: the Snowflake connector takes a second to import, DuckDB users skip it.
        from invoiced_assets.snowflake_destination import snowflake_io_manager

        return snowflake_io_manager(schema=settings.snowflake_schema)
    return duckdb_io_manager(settings.duckdb_path, SCHEMA)
