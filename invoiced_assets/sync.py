"""One sync step: plan the reads, read concurrently, merge if incremental, write, check.

`SyncStep.run()` is the body of the `invoiced_tables` multi-asset. It yields, for each object as
soon as its listing is complete, an `Output` per selected table (written by the IO manager at
once, atomically) and the results of that table's checks, computed on exactly the rows written.
Long tables are not held in memory meanwhile: they wait in the step's batch files (see
`table_data`), which are removed when the step ends.

Full mode reads every record. Incremental mode (INVOICED_SYNC_MODE=incremental) reads only the
records updated since each table's cursor, applies the deletions recorded in `/events`, merges
them into the table as it is (read back through the `Warehouse`), and writes the merged table
through the same path as a full load; see `incremental` for the cursors and when a table is
loaded in full instead.
"""

import dataclasses
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pandas as pd

from invoiced_assets import checks
from invoiced_assets.api_errors import (
    InvoicedAPIError,
    InvoicedAuthenticationError,
    InvoicedConnectionError,
    InvoicedError,
    InvoicedRateLimitError,
)
from invoiced_assets.catalogue import CUSTOMERS, InvoicedObject
from invoiced_assets.extraction import Extraction, ReadPlan, extract_concurrently
from invoiced_assets.extraction_process import ExtractionProcessError, extract_in_child_process
from invoiced_assets.incremental import (
    Deletions,
    SyncState,
    merge_tables,
    newest_event_id,
    now,
    read_deletions,
)
from invoiced_assets.invoiced_api import InvoicedClient
from invoiced_assets.process_tuning import tuned_for_sync
from invoiced_assets.shaping import ShapedTable
from invoiced_assets.table_data import BatchDirectory
from invoiced_assets.warehouse import Warehouse, read_ids, table_exists

PREVIEW_ROWS = 5
TRANSIENT_ERRORS = (InvoicedAPIError, InvoicedConnectionError, InvoicedRateLimitError, OSError)


@dataclass(frozen=True)
class SyncOptions:
    incremental: bool = False
    full_reconcile_hours: float = 24.0
    min_row_ratio: float = checks.DEFAULT_MIN_ROW_RATIO
    # Read and shape in a forked child process where that is safe (see `extraction_process`).
    extraction_process: bool = True


@dataclass
class _TableRecord:
    """What the instance remembers of a table's last successful load."""

    rows: int | None
    state: SyncState


def _history(event: Any) -> _TableRecord:
    """What a table's last materialization event says (nothing, for a new table)."""
    materialization = event.asset_materialization if event else None
    metadata = materialization.metadata if materialization else {}
    rows = metadata.get("dagster/row_count")
    return _TableRecord(
        int(rows.value) if rows is not None else None, SyncState.from_metadata(metadata)
    )


class SyncStep:
    """One run of the multi-asset; `tables` maps each selected table name to its `TableAsset`."""

    def __init__(
        self,
        context: dg.AssetExecutionContext,
        client: InvoicedClient,
        warehouse: Warehouse | None,
        tables: dict[str, Any],
        options: SyncOptions,
    ) -> None:
        self.context = context
        self.client = client
        self.warehouse = warehouse
        self.tables = tables  # name -> TableAsset (selected only)
        self.options = options
        self.selected_checks = {(c.asset_key, c.name) for c in context.selected_asset_check_keys}
        self.now = now()
        # One query for every table's last materialization, not one per table.
        latest = context.instance.get_latest_materialization_events(
            [t.key for t in tables.values()]
        )
        self.history = {name: _history(latest.get(t.key)) for name, t in tables.items()}

    # -- planning -------------------------------------------------------------------------------

    def _wants_customer_ids(self) -> bool:
        return any(
            (t.key, checks.CUSTOMER_REFERENCES) in self.selected_checks
            for t in self.tables.values()
        )

    def plans(self) -> list[ReadPlan]:
        wanted: dict[InvoicedObject, set[str]] = {}
        for name, table in self.tables.items():
            wanted.setdefault(table.obj, set()).add(name)
        if (
            self._wants_customer_ids()
            and CUSTOMERS not in wanted
            and not (self.options.incremental and self._customer_ids_from_warehouse is not None)
        ):
            wanted[CUSTOMERS] = set()  # its ids only, to resolve references
        plans = [self._plan(obj, names) for obj, names in wanted.items()]
        needs_all_customers = any(p.obj.per_customer and p.updated_after is None for p in plans)
        if needs_all_customers and CUSTOMERS not in wanted and not self.options.incremental:
            plans.append(ReadPlan(CUSTOMERS))  # their ids, for the per-customer listings
        return plans

    def _plan(self, obj: InvoicedObject, names: set[str]) -> ReadPlan:
        if obj.append_only:
            after_id = self._after_id(names)
            return ReadPlan(obj, frozenset(names), after_id=after_id)
        return ReadPlan(obj, frozenset(names), self._updated_after(obj, names))

    def _after_id(self, names: set[str]) -> int | None:
        """Where an append-only read continues (the newest id held), or None for a full read."""
        if not self._can_continue(names, by_id=True):
            return None
        return min(self.history[name].state.cursor_event_id or 0 for name in names)

    def _updated_after(self, obj: InvoicedObject, names: set[str]) -> int | None:
        """The incremental cursor of a read, or None when a full read is due."""
        if not (obj.incremental and self._can_continue(names, by_id=False)):
            return None
        return min(self.history[name].state.updated_after() for name in names)

    def _can_continue(self, names: set[str], *, by_id: bool) -> bool:
        """Whether every table of a read can take changes only (else it is loaded in full)."""
        if not (self.options.incremental and names and self.warehouse):
            return False
        reconcile = self.options.full_reconcile_hours
        states = [self.history[name].state for name in names]
        if not all(state.can_continue(self.now, reconcile, by_id=by_id) for state in states):
            return False
        # A table dropped since its last load is reloaded whole.
        return all(table_exists(self.warehouse, n, self.tables[n].primary_key) for n in names)

    @functools.cached_property
    def _customer_ids_from_warehouse(self) -> set[Any] | None:
        """The customers table's ids (read once: planning and the reference checks share them)."""
        if self.warehouse is None:
            return None
        return read_ids(self.warehouse, CUSTOMERS.name, CUSTOMERS.primary_key)

    # -- running --------------------------------------------------------------------------------

    def run(self) -> Iterator[dg.Output | dg.AssetCheckResult]:
        # Long tables wait in batch files until written (see `table_data`); removed at the end.
        with tuned_for_sync(), BatchDirectory() as batches:
            yield from self._run(batches)

    def _run(self, batches: BatchDirectory) -> Iterator[dg.Output | dg.AssetCheckResult]:
        plans = self.plans()
        incremental_plans = [p for p in plans if p.incremental]
        self.context.log.info(
            f"Reading {len(plans)} Invoiced listings from {self.client.settings.base_url}: "
            + ", ".join(
                f"{p.obj.name} ({'changes' if p.incremental else 'all'})"
                for p in sorted(plans, key=lambda p: p.obj.name)
            )
        )
        # Events first: deletions after the tables' cursors, and the cursor for the next load.
        deletions: Deletions | None = None
        try:
            if incremental_plans:
                since = min(
                    self.history[name].state.cursor_event_id or 0
                    for plan in incremental_plans
                    for name in plan.tables
                )
                deletions = read_deletions(self.client, since)
                event_cursor = deletions.newest_event_id
                plans = [
                    dataclasses.replace(
                        p, also_customers=frozenset(deletions.customers_touched(p.obj))
                    )
                    if p.obj.per_customer and p.updated_after is not None
                    else p
                    for p in plans
                ]
            else:
                event_cursor = newest_event_id(self.client)
        except InvoicedError as exc:
            raise dg.Failure(
                description=f"Reading /events failed: {exc} No table was changed.",
                allow_retries=isinstance(exc, TRANSIENT_ERRORS),
            ) from None

        try:
            yield from self._write_each(plans, batches, deletions, event_cursor)
        except ExtractionProcessError as exc:
            raise dg.Failure(
                description=f"{exc}\nTables not written by this run keep their last good copy.",
                allow_retries=exc.transient,
            ) from None

    def _write_each(
        self,
        plans: list[ReadPlan],
        batches: BatchDirectory,
        deletions: Deletions | None,
        event_cursor: int,
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        """Write and check each object's tables as its extraction completes."""
        customer_ids = None
        if self._wants_customer_ids() and not any(p.obj is CUSTOMERS for p in plans):
            customer_ids = self._customer_ids_from_warehouse
        waiting_for_customers: list[tuple[Any, pd.Series]] = []
        failures: list[Extraction] = []
        for extraction in self._extractions(plans, batches):
            if extraction.error is not None:
                self.context.log.error(
                    f"{extraction.obj.name}: {extraction.error} Its tables keep their last good"
                    " copy."
                )
                failures.append(extraction)
                continue
            written, object_ids = self._merged(extraction, deletions)
            if extraction.obj is CUSTOMERS:
                customer_ids = object_ids
            for name, shaped in written.items():
                yield from self._write_and_check(name, shaped, extraction, object_ids, event_cursor)
                table = self.tables[name]
                if (table.key, checks.CUSTOMER_REFERENCES) in self.selected_checks:
                    waiting_for_customers.append((table, shaped.column(checks.CUSTOMER_COLUMN)))
                # Written and checked: its batch files are not needed for the rest of the run.
                shaped.data.release()
            if customer_ids is not None:
                yield from _customer_reference_results(waiting_for_customers, customer_ids)
                waiting_for_customers = []
        if waiting_for_customers:
            # The customers listing failed: these references cannot be resolved in this run.
            yield from _customer_reference_results(waiting_for_customers, None)
        if failures:
            raise failure_for(failures)

    def _extractions(self, plans: list[ReadPlan], batches: BatchDirectory) -> Iterator[Extraction]:
        """Each object's extraction as it completes: from a child process, or from threads."""
        log = self.context.log.info
        if self.options.extraction_process:
            return extract_in_child_process(self.client, plans, batches=batches, log=log)
        return extract_concurrently(self.client, plans, batches=batches, log=log)

    def _merged(
        self, extraction: Extraction, deletions: Deletions | None
    ) -> tuple[dict[str, ShapedTable], set[Any]]:
        """The tables to write and the object's ids, after merging an incremental read."""
        assert extraction.tables is not None
        obj, changed = extraction.obj, extraction.ids or set()
        if not extraction.plan.incremental:
            return extraction.tables, changed
        assert self.warehouse is not None and deletions is not None
        deleted = deletions.for_object(obj)
        replaced = changed | deleted
        merged: dict[str, ShapedTable] = {}
        for name, shaped in extraction.tables.items():
            table = self.tables[name]
            previous = self.warehouse.read_table(name, table.primary_key)
            assert previous is not None  # checked when planning
            if obj.per_customer:
                # Every listing read is a customer's whole listing: replace those customers'
                # rows, drop deleted customers' rows, and rows deleted on their own.
                assert extraction.customers_read is not None
                gone = extraction.customers_read.ids | deletions.for_object(CUSTOMERS)
                previous = merge_tables(previous, shaped.empty_like(), "id", deleted)
                merged[name] = merge_tables(previous, shaped, "customer", gone)
                continue
            key_column = table.child.parent_key_column if table.child else obj.primary_key
            merged[name] = merge_tables(previous, shaped, key_column, replaced)
        if obj.name in merged:
            ids = set(merged[obj.name].frame[obj.primary_key].dropna().tolist())
        else:
            previous_ids = read_ids(self.warehouse, obj.name, obj.primary_key) or set()
            ids = (previous_ids - deleted) | changed
        self.context.log.info(
            f"{obj.name}: {len(changed)} changed and {len(deleted)} deleted since the last load"
        )
        return merged, ids

    def _write_and_check(
        self,
        name: str,
        shaped: ShapedTable,
        extraction: Extraction,
        object_ids: set[Any],
        event_cursor: int,
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        table = self.tables[name]
        record = self.history[name]
        full = not extraction.plan.incremental
        obj = extraction.obj
        state = record.state.next_metadata(
            full=full,
            newest_updated_at=extraction.max_updated_at,
            # An append-only table continues after the newest event it holds.
            event_id=max(extraction.max_id or 0, record.state.cursor_event_id or 0)
            if obj.append_only
            else event_cursor,
            now=self.now,
        )
        yield dg.Output(
            shaped,
            output_name=self.context.assets_def.get_output_name_for_asset_key(table.key),
            metadata={
                "invoiced_object": extraction.obj.name,
                **extraction.stats.as_metadata(),
                **{k: v for k, v in state.items() if v is not None},
                "preview": dg.MetadataValue.md(markdown_preview(shaped)),
            },
        )
        stats = extraction.stats
        outcomes = {
            checks.PRIMARY_KEY: checks.check_primary_key(
                shaped.key_frame(), table.primary_key, rows=shaped.row_count
            ),
            checks.COLLAPSE: checks.check_collapse(
                shaped.row_count, record.rows, self.options.min_row_ratio
            ),
        }
        if table.child is None and obj.per_customer and not full:
            # Only the changed customers' listings were read: count their rows.
            assert extraction.customers_read is not None
            rows = int(shaped.column("customer").isin(extraction.customers_read.ids).sum())
            outcomes[checks.ROW_COUNT] = checks.check_row_count(rows, stats.total_count, None)
        elif table.child is None:
            # An incremental read's own X-Total-Count counts only the changes.
            before = stats.total_count if full else None
            outcomes[checks.ROW_COUNT] = checks.check_row_count(
                shaped.row_count, before, stats.total_count_after
            )
        else:
            outcomes[checks.PARENT_REFERENCES] = checks.check_references(
                shaped.column(table.child.parent_key_column),
                object_ids,
                target=f"{table.obj.name}.{table.obj.primary_key}",
                nullable=False,
            )
        for check_name, outcome in outcomes.items():
            if (table.key, check_name) in self.selected_checks:
                yield checks.check_result(table.key, check_name, outcome)


def markdown_preview(shaped: ShapedTable, rows: int = PREVIEW_ROWS, width: int = 40) -> str:
    """The first rows as a Markdown table, each cell cut to `width` characters."""

    def cell(value: Any) -> str:
        text = "" if value is None or value is pd.NA else str(value)
        text = text.replace("|", "\\|").replace("\n", " ")
        return text if len(text) <= width else text[: width - 1] + "…"

    head = shaped.data.head(rows)
    names = list(head.columns)
    lines = ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]
    for record in head.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in record) + " |")
    return "\n".join(lines)


def _customer_reference_results(
    waiting: list[tuple[Any, pd.Series]], customer_ids: set[Any] | None
) -> Iterator[dg.AssetCheckResult]:
    for table, values in waiting:
        if customer_ids is None:
            outcome = checks.CheckOutcome(
                False, {"reason": "the customers listing could not be read in this run"}
            )
        else:
            outcome = checks.check_references(values, customer_ids, target="customers.id")
        yield checks.check_result(table.key, checks.CUSTOMER_REFERENCES, outcome)


def failure_for(failures: list[Extraction]) -> dg.Failure:
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
