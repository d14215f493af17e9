"""Chooses where the tables go: decided in one place, from the settings."""

from typing import Any

from invoiced_assets.duckdb_destination import duckdb_io_manager
from invoiced_assets.settings import SCHEMA, Settings, SettingsError


def build_io_manager(settings: Settings) -> Any:
    if settings.destination == "duckdb":
        return duckdb_io_manager(settings.duckdb_path, SCHEMA)
    raise SettingsError(
        "INVOICED_DESTINATION=snowflake: the Snowflake destination is not part of this release"
        " yet; unset INVOICED_DESTINATION to load into DuckDB."
    )
