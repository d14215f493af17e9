"""Publish shaped tables through a destination's real IO manager, as the sync step does, with no
API in the way: stage them, then yield one `TableRelease` output per table."""

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from invoiced_assets.destinations.protocol import Merge, StagedObject
from invoiced_assets.destinations.publication import ObjectRelease, TableRelease
from invoiced_assets.sync.staging import staged_table
from invoiced_assets.tables.shaping import ShapedTable


def publish(
    manager: Any,
    tables: Mapping[str, ShapedTable],
    merges: Mapping[str, Merge | None] | None = None,
    key_sets: Mapping[str, Sequence[Any]] | None = None,
    *,
    observe: Any = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """Stage `tables` and publish them together (merged by `merges`, when given)."""
    specs = [dg.AssetSpec(["invoiced", name]).with_io_manager_key("io_manager") for name in tables]

    @dg.multi_asset(specs=specs, required_resource_keys={"io_manager"})
    def load(context: dg.AssetExecutionContext) -> Any:
        destination = context.resources.io_manager
        with destination.held_session():
            destination.clear_staging()
            destination.stage(list(tables.items()), key_sets or {})
            staged = {
                name: staged_table(shaped, (merges or {}).get(name))
                for name, shaped in tables.items()
            }
            release = ObjectRelease(StagedObject("test", staged), observe)
            for name in tables:
                yield dg.Output(TableRelease(release, name), output_name=f"invoiced__{name}")

    return dg.materialize([load], resources={"io_manager": manager}, raise_on_error=raise_on_error)


def escape_fakesnow_table_comments(monkeypatch: Any) -> None:
    """Let fakesnow 0.12 store a table comment holding an apostrophe, as Snowflake does.

    fakesnow records `COMMENT ON TABLE … IS '…'` by formatting the comment, unescaped, into SQL
    of its own (`fakesnow.info_schema.insert_table_comment_sql`), which then fails on the first
    apostrophe. Column comments are stored correctly and need nothing.
    """
    from fakesnow import info_schema

    record = info_schema.insert_table_comment_sql

    def escaped(catalog: str, schema: str, table: str, comment: str | None) -> str:
        # None: a CREATE … AS SELECT, which fakesnow records as the comment 'None'.
        text = comment.replace("'", "''") if isinstance(comment, str) else comment
        return record(catalog, schema, table, text)  # type: ignore[arg-type]

    monkeypatch.setattr(info_schema, "insert_table_comment_sql", escaped)
