"""What the UI shows for a table a destination has written: the same for every destination."""

from collections.abc import Sequence
from typing import Any

import dagster as dg

from invoiced_assets.schema_evolution import ColumnPlan
from invoiced_assets.shaping import ShapedTable


def table_metadata(
    shaped: ShapedTable, plan: ColumnPlan, sql_columns: Sequence[tuple[str, str]]
) -> dict[str, Any]:
    """What the UI shows for a written table."""
    metadata: dict[str, Any] = {
        "dagster/row_count": shaped.row_count,
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name, sql_type) for name, sql_type in sql_columns]
        ),
        "primary_key": ", ".join(shaped.key),
        "schema_changed": plan.changed,
    }
    if plan.changed:
        metadata["schema_changes"] = dg.MetadataValue.md(
            "\n".join(f"- {line}" for line in plan.describe())
        )
    if shaped.widened:
        metadata["columns_widened_from_catalogue"] = ", ".join(
            f"{name} ({old} → {new})" for name, (old, new) in shaped.widened.items()
        )
    return metadata
