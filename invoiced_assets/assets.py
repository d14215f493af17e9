"""The asset factory: one asset per table, all materialized by one multi-asset step.

Every object of the catalogue, and every child table unnested from it, is its own asset
(`invoiced/<table>`): separately visible, selectable and materializable, with its data-quality
checks (`checks`) and a freshness policy from the sync frequency. A versioned table's history
(`<table>_history`, INVOICED_HISTORY) is part of its table's asset: the two are written in one
transaction, so one materialization records both. The object's table carries one history check
for all its history tables (a child table's history is checked by its object's).

They share one step so that listings are read concurrently by threads (see
`extract.scheduling`), and a child table is produced by the same read as its parent. Selecting a
subset reads only the listings it needs.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import dagster as dg

from invoiced_assets import checks
from invoiced_assets.api import InvoicedResource
from invoiced_assets.catalogue import CATALOGUE, ChildTable, InvoicedObject
from invoiced_assets.destinations import column_spelling, history
from invoiced_assets.settings import DEFAULT_KEY_PREFIX
from invoiced_assets.sync import SyncOptions, SyncRunConfig, SyncStep
from invoiced_assets.sync.exclusivity import POOL
from invoiced_assets.tables.docs import documented_schema, table_comment

KEY_PREFIX = DEFAULT_KEY_PREFIX
API_KEY = "invoiced"
# The destination: the IO manager that publishes the tables, which the step also stages into.
IO_MANAGER_KEY = "invoiced_io_manager"


@dataclass(frozen=True)
class TableAsset:
    """One warehouse table and the object whose listing produces it."""

    table: str
    obj: InvoicedObject
    child: ChildTable | None = None
    key_prefix: tuple[str, ...] = (KEY_PREFIX,)
    # Every version of its rows is kept in `<table>_history` (INVOICED_HISTORY).
    versioned: bool = False

    @property
    def key(self) -> dg.AssetKey:
        return dg.AssetKey([*self.key_prefix, self.table])

    @property
    def primary_key(self) -> tuple[str, ...]:
        return self.child.key if self.child else (self.obj.primary_key,)

    @property
    def refers_to_customers(self) -> bool:
        return self.child is None and self.obj.refers_to_customers

    @property
    def check_names(self) -> list[str]:
        return checks.check_names_for(
            is_child=self.child is not None,
            has_customer=self.refers_to_customers,
            versioned=self.versioned,
        )

    @property
    def history_table(self) -> str:
        return history.history_table(self.table)

    @property
    def description(self) -> str:
        """The asset's description: the warehouse's table comment, and where its history is."""
        comment = table_comment(self.obj, self.child)
        if not self.versioned:
            return comment
        return (
            f"{comment} Every version of its rows is kept in `{self.history_table}`"
            " (INVOICED_HISTORY), written in the same transaction: valid from `valid_from` until"
            " `valid_to` (null while current)."
        )

    def history_spec(self) -> history.HistorySpec:
        """How the published table is versioned in its history table."""
        obj, child, table = self.obj, self.child, self.table
        if child is not None:
            return history.HistorySpec(
                table,
                self.primary_key,
                parent=(obj.name, obj.primary_key, child.parent_key_column),
                deletions=(history.DeletionSource(obj.name, child.parent_key_column),),
            )
        own = (history.DeletionSource(obj.name, obj.primary_key),) if obj.event_object else ()
        cascades = tuple(history.DeletionSource(p, c) for c, p in obj.deleted_with.items())
        return history.HistorySpec(
            table,
            self.primary_key,
            changed_at="updated_at" if "updated_at" in obj.field_names else None,
            deletions=own + cascades,
        )


def table_assets(
    catalogue: Sequence[InvoicedObject] = CATALOGUE,
    key_prefix: Sequence[str] = (KEY_PREFIX,),
    versioned: frozenset[str] = frozenset(),
) -> list[TableAsset]:
    """Every table of `catalogue`; those of the objects in `versioned` keep their history."""
    prefix = tuple(key_prefix)
    tables: list[TableAsset] = []
    for obj in catalogue:
        kept = obj.name in versioned
        tables.append(TableAsset(obj.name, obj, key_prefix=prefix, versioned=kept))
        tables += [TableAsset(c.name, obj, c, prefix, versioned=kept) for c in obj.children]
    return tables


def history_column_schema(table: TableAsset, spelling: Any) -> dg.TableSchema:
    """The history table's columns, described: the table's, then its version columns."""
    documented = documented_schema(table.obj, table.child, spelling)
    meta = [
        dg.TableColumn(
            spelling.stored_column(name) if spelling else name,
            spelling.sql_type(t) if spelling else t.value,
            description=history.META_DESCRIPTIONS[name],
        )
        for name, t in history.META_COLUMNS.items()
    ]
    return dg.TableSchema(columns=[*documented.columns, *meta])


def freshness_policy(frequency_hours: int) -> dg.FreshnessPolicy:
    """Stale (warning) one hour after a sync was due, failed when two syncs in a row were missed."""
    return dg.FreshnessPolicy.time_window(
        warn_window=timedelta(hours=frequency_hours + 1),
        fail_window=timedelta(hours=2 * frequency_hours + 1),
    )


def build_invoiced_assets(
    catalogue: Sequence[InvoicedObject] = CATALOGUE,
    *,
    destination: str = "duckdb",
    frequency_hours: int = 1,
    options: SyncOptions | None = None,
    retry_policy: dg.RetryPolicy | None = None,
    key_prefix: Sequence[str] = (KEY_PREFIX,),
) -> dg.AssetsDefinition:
    """The multi-asset that reads Invoiced and publishes one table per spec, with its checks."""
    options = options or SyncOptions()
    tables = table_assets(catalogue, key_prefix, options.history)
    by_name = {t.table: t for t in tables}
    spelling = column_spelling(destination)
    specs = [
        dg.AssetSpec(
            key=t.key,
            group_name=t.obj.group,
            kinds={"invoiced", destination},
            description=t.description,
            metadata={
                # The Columns table of the UI, described, before the first materialization.
                "dagster/column_schema": documented_schema(t.obj, t.child, spelling),
                "primary_key": ", ".join(t.primary_key),
                "invoiced_endpoint": t.obj.endpoint,
                **(
                    {
                        "invoiced/history_table": t.history_table,
                        "invoiced/history_column_schema": history_column_schema(t, spelling),
                    }
                    if t.versioned
                    else {}
                ),
            },
            tags={"invoiced/object": t.obj.name},
            freshness_policy=freshness_policy(frequency_hours),
        ).with_io_manager_key(IO_MANAGER_KEY)
        for t in tables
    ]
    check_specs = [checks.check_spec(t.key, name) for t in tables for name in t.check_names]

    @dg.multi_asset(
        name="invoiced_tables",
        specs=specs,
        check_specs=check_specs,
        can_subset=True,
        retry_policy=retry_policy,
        required_resource_keys={API_KEY, IO_MANAGER_KEY},
        # One sync at a time where the instance limits the pool (see `sync.exclusivity`).
        pool=POOL,
    )
    def invoiced_tables(
        context: dg.AssetExecutionContext, config: SyncRunConfig
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        invoiced: InvoicedResource = getattr(context.resources, API_KEY)
        destination = getattr(context.resources, IO_MANAGER_KEY)
        step = SyncStep(
            context, invoiced.get_client(), destination, by_name, options, config, tuple(key_prefix)
        )
        yield from step.run()

    return invoiced_tables
