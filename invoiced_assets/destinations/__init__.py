"""Where the tables go, decided in one place from the settings, and how they get there.

Locally: DuckDB (or Snowflake when INVOICED_DESTINATION=snowflake). In a Dagster+ deployment:
Snowflake, in SNOWFLAKE_SCHEMA; in a branch deployment, in a schema of the branch's own.

The package: `protocol` (what the sync step needs of a destination), `sql` (the audit and
publish statements, written once), `publication` (one transaction per object, through the IO
manager), `audit` (the checks as SQL), and one module per warehouse.
"""

from typing import Any

from invoiced_assets.settings import SCHEMA, Settings
from invoiced_assets.tables.docs import ColumnSpelling


def build_io_manager(settings: Settings) -> Any:
    """The destination: the IO manager that publishes, which the sync step also stages into."""
    if settings.destination == "snowflake":
        # Imported here: the Snowflake connector takes a second to import, DuckDB users skip it.
        from invoiced_assets.destinations.snowflake_destination import snowflake_io_manager

        return snowflake_io_manager(schema=settings.snowflake_schema)
    from invoiced_assets.destinations.duckdb_destination import duckdb_io_manager

    return duckdb_io_manager(settings.duckdb_path, SCHEMA, settings.duckdb_memory_limit)


def column_spelling(destination: str) -> ColumnSpelling:
    """How `destination` ("duckdb" or "snowflake") names and types columns: what its
    materializations' column schema shows (for `tables.docs.documented_schema`)."""
    if destination == "snowflake":
        from invoiced_assets.destinations.snowflake_destination import SnowflakeDialect

        return SnowflakeDialect(database="", schema=SCHEMA)
    from invoiced_assets.destinations.duckdb_destination import DuckDBDialect

    return DuckDBDialect(SCHEMA)
