"""The asset factory: one asset per table, all materialized by one multi-asset step.

Every object of the catalogue, and every child table unnested from it, is its own asset
(`invoiced/<table>`): separately visible, selectable and materializable. They share one step so
that listings are read concurrently by threads (see `extraction`), and a child table is produced
by the same read as its parent. Selecting a subset reads only the listings it needs.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import dagster as dg

from invoiced_assets.api_errors import InvoicedAuthenticationError
from invoiced_assets.catalogue import CATALOGUE, ChildTable, InvoicedObject
from invoiced_assets.extraction import Extraction, extract_concurrently
from invoiced_assets.invoiced_api import InvoicedResource

KEY_PREFIX = "invoiced"
GROUP_NAME = "invoiced"
IO_MANAGER_KEY = "invoiced_io_manager"


@dataclass(frozen=True)
class TableAsset:
    """One warehouse table and the object whose listing produces it."""

    table: str
    obj: InvoicedObject
    child: ChildTable | None = None

    @property
    def key(self) -> dg.AssetKey:
        return dg.AssetKey([KEY_PREFIX, self.table])

    @property
    def primary_key(self) -> tuple[str, ...]:
        return self.child.key if self.child else (self.obj.primary_key,)

    @property
    def description(self) -> str:
        if self.child is None:
            return self.obj.description
        return (
            f"{self.child.description} Unnested from `{self.obj.name}.{self.child.source_field}`;"
            f" `{self.child.parent_key_column}` is the parent's id and `position` the item's"
            " place in the list."
        )


def table_assets(catalogue: Sequence[InvoicedObject] = CATALOGUE) -> list[TableAsset]:
    tables: list[TableAsset] = []
    for obj in catalogue:
        tables.append(TableAsset(obj.name, obj))
        tables += [TableAsset(child.name, obj, child) for child in obj.children]
    return tables


def build_invoiced_assets(
    catalogue: Sequence[InvoicedObject] = CATALOGUE, *, destination: str = "duckdb"
) -> dg.AssetsDefinition:
    """The multi-asset that reads Invoiced and writes one table per spec."""
    tables = table_assets(catalogue)
    by_key = {t.key: t for t in tables}
    specs = [
        dg.AssetSpec(
            key=t.key,
            group_name=GROUP_NAME,
            kinds={"invoiced", destination},
            description=t.description,
            metadata={
                "primary_key": ", ".join(t.primary_key),
                "invoiced_endpoint": t.obj.endpoint,
            },
            tags={"invoiced/object": t.obj.name},
        ).with_io_manager_key(IO_MANAGER_KEY)
        for t in tables
    ]

    @dg.multi_asset(name="invoiced_tables", specs=specs, can_subset=True)
    def invoiced_tables(
        context: dg.AssetExecutionContext, invoiced: InvoicedResource
    ) -> Iterator[dg.Output]:
        wanted: dict[InvoicedObject, set[str]] = {}
        for key in context.selected_asset_keys:
            table = by_key[key]
            wanted.setdefault(table.obj, set()).add(table.table)
        client = invoiced.get_client()
        context.log.info(
            f"Reading {len(wanted)} Invoiced listings from {client.settings.base_url}:"
            f" {', '.join(sorted(o.name for o in wanted))}"
        )
        failures: list[Extraction] = []
        for extraction in extract_concurrently(client, wanted, log=context.log.info):
            if extraction.error is not None:
                context.log.error(f"{extraction.obj.name}: {extraction.error}")
                failures.append(extraction)
                continue
            assert extraction.tables is not None
            api_metadata = extraction.stats.as_metadata()
            for name, shaped in extraction.tables.items():
                context.log.info(f"{name}: {shaped.row_count} rows")
                yield dg.Output(
                    shaped,
                    output_name=context.assets_def.get_output_name_for_asset_key(
                        dg.AssetKey([KEY_PREFIX, name])
                    ),
                    metadata={"invoiced_object": extraction.obj.name, **api_metadata},
                )
        if failures:
            raise _failure(failures)

    return invoiced_tables


def _failure(failures: list[Extraction]) -> dg.Failure:
    """One clear error for the run: the rejected key once, or each failed object."""
    auth = next(
        (f.error for f in failures if isinstance(f.error, InvoicedAuthenticationError)), None
    )
    if auth is not None:
        return dg.Failure(
            description=f"{auth} Tables not written by this run keep their last good copy.",
            allow_retries=False,
        )
    lines = [f"- {f.obj.name}: {f.error}" for f in failures]
    return dg.Failure(
        description=(
            f"{len(failures)} Invoiced object(s) could not be read; their tables keep their last"
            " good copy, and the other objects were written:\n" + "\n".join(lines)
        )
    )
