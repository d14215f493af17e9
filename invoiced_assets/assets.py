"""The asset factory: one asset per table, all materialized by one multi-asset step.

Every object of the catalogue, and every child table unnested from it, is its own asset
(`invoiced/<table>`): separately visible, selectable and materializable, with its data-quality
checks (`checks`) and a freshness policy from the sync frequency. They share one step so that
listings are read concurrently by threads (see `extraction`), and a child table is produced by
the same read as its parent. Selecting a subset reads only the listings it needs.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import dagster as dg
import pandas as pd

from invoiced_assets import checks
from invoiced_assets.api_errors import (
    InvoicedAPIError,
    InvoicedAuthenticationError,
    InvoicedConnectionError,
    InvoicedRateLimitError,
)
from invoiced_assets.catalogue import CATALOGUE, CUSTOMERS, ChildTable, InvoicedObject
from invoiced_assets.extraction import Extraction, ReadPlan, extract_concurrently
from invoiced_assets.invoiced_api import InvoicedResource
from invoiced_assets.shaping import ShapedTable

KEY_PREFIX = "invoiced"
GROUP_NAME = "invoiced"
IO_MANAGER_KEY = "invoiced_io_manager"
PREVIEW_ROWS = 5
TRANSIENT_ERRORS = (InvoicedAPIError, InvoicedConnectionError, InvoicedRateLimitError, OSError)


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
    def refers_to_customers(self) -> bool:
        return (
            self.child is None and self.obj is not CUSTOMERS and "customer" in self.obj.field_names
        )

    @property
    def check_names(self) -> list[str]:
        return checks.check_names_for(
            is_child=self.child is not None, has_customer=self.refers_to_customers
        )

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
    min_row_ratio: float = checks.DEFAULT_MIN_ROW_RATIO,
    retry_policy: dg.RetryPolicy | None = None,
) -> dg.AssetsDefinition:
    """The multi-asset that reads Invoiced and writes one table per spec, with its checks."""
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
    )
    def invoiced_tables(
        context: dg.AssetExecutionContext, invoiced: InvoicedResource
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        selected = [by_key[key] for key in context.selected_asset_keys]
        selected_checks = {(c.asset_key, c.name) for c in context.selected_asset_check_keys}
        wanted: dict[InvoicedObject, set[str]] = {}
        for table in selected:
            wanted.setdefault(table.obj, set()).add(table.table)
        needs_customers = any(
            (t.key, checks.CUSTOMER_REFERENCES) in selected_checks for t in selected
        )
        if needs_customers:
            wanted.setdefault(CUSTOMERS, set())  # its ids only, to resolve references
        previous_rows = {t.table: _previous_row_count(context, t.key) for t in selected}
        client = invoiced.get_client()
        context.log.info(
            f"Reading {len(wanted)} Invoiced listings from {client.settings.base_url}:"
            f" {', '.join(sorted(o.name for o in wanted))}"
        )

        customer_ids: set[Any] | None = None
        waiting_for_customers: list[tuple[TableAsset, pd.Series]] = []
        failures: list[Extraction] = []
        plans = [ReadPlan(obj, frozenset(names)) for obj, names in wanted.items()]
        for extraction in extract_concurrently(client, plans, log=context.log.info):
            if extraction.error is not None:
                context.log.error(
                    f"{extraction.obj.name}: {extraction.error} Its tables keep their last good"
                    " copy."
                )
                failures.append(extraction)
                continue
            assert extraction.tables is not None
            if extraction.obj is CUSTOMERS:
                customer_ids = extraction.ids or set()
            for name, shaped in extraction.tables.items():
                table = by_key[dg.AssetKey([KEY_PREFIX, name])]
                yield dg.Output(
                    shaped,
                    output_name=context.assets_def.get_output_name_for_asset_key(table.key),
                    metadata=_output_metadata(extraction, shaped),
                )
                outcomes = _table_outcomes(table, shaped, extraction, previous_rows, min_row_ratio)
                for check_name, outcome in outcomes.items():
                    if (table.key, check_name) in selected_checks:
                        yield checks.check_result(table.key, check_name, outcome)
                if (table.key, checks.CUSTOMER_REFERENCES) in selected_checks:
                    values = shaped.frame[checks.CUSTOMER_COLUMN]
                    waiting_for_customers.append((table, values))
            if customer_ids is not None:
                yield from _customer_reference_results(waiting_for_customers, customer_ids)
                waiting_for_customers = []
        if waiting_for_customers:
            # The customers listing failed: these references cannot be resolved in this run.
            yield from _customer_reference_results(waiting_for_customers, None)
        if failures:
            raise _failure(failures)

    return invoiced_tables


def _previous_row_count(context: dg.AssetExecutionContext, key: dg.AssetKey) -> int | None:
    event = context.instance.get_latest_materialization_event(key)
    materialization = event.asset_materialization if event else None
    if materialization is None:
        return None
    value = materialization.metadata.get("dagster/row_count")
    return int(value.value) if value is not None else None


def _output_metadata(extraction: Extraction, shaped: ShapedTable) -> dict[str, Any]:
    return {
        "invoiced_object": extraction.obj.name,
        **extraction.stats.as_metadata(),
        "preview": dg.MetadataValue.md(markdown_preview(shaped)),
    }


def markdown_preview(shaped: ShapedTable, rows: int = PREVIEW_ROWS, width: int = 40) -> str:
    """The first rows as a Markdown table, each cell cut to `width` characters."""

    def cell(value: Any) -> str:
        text = "" if value is None or value is pd.NA else str(value)
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= width else text[: width - 1] + "…"

    names = list(shaped.frame.columns)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for record in shaped.frame.head(rows).itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in record) + " |")
    return "\n".join(lines)


def _table_outcomes(
    table: TableAsset,
    shaped: ShapedTable,
    extraction: Extraction,
    previous_rows: dict[str, int | None],
    min_row_ratio: float,
) -> dict[str, checks.CheckOutcome]:
    outcomes = {
        checks.PRIMARY_KEY: checks.check_primary_key(shaped.frame, table.primary_key),
        checks.COLLAPSE: checks.check_collapse(
            shaped.row_count, previous_rows.get(table.table), min_row_ratio
        ),
    }
    if table.child is None:
        stats = extraction.stats
        outcomes[checks.ROW_COUNT] = checks.check_row_count(
            shaped.row_count, stats.total_count, stats.total_count_after
        )
    else:
        outcomes[checks.PARENT_REFERENCES] = checks.check_references(
            shaped.frame[table.child.parent_key_column],
            extraction.ids or set(),
            target=f"{table.obj.name}.{table.obj.primary_key}",
            nullable=False,
        )
    return outcomes


def _customer_reference_results(
    waiting: list[tuple[TableAsset, pd.Series]], customer_ids: set[Any] | None
) -> Iterator[dg.AssetCheckResult]:
    for table, values in waiting:
        if customer_ids is None:
            outcome = checks.CheckOutcome(
                False, {"reason": "the customers listing could not be read in this run"}
            )
        else:
            outcome = checks.check_references(values, customer_ids, target="customers.id")
        yield checks.check_result(table.key, checks.CUSTOMER_REFERENCES, outcome)


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
        ),
        # Retrying the step helps only when something was transient (outage, rate limit).
        allow_retries=any(isinstance(f.error, TRANSIENT_ERRORS) for f in failures),
    )
