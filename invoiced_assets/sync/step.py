"""One sync step: plan, read, stage, audit, and hand each audited object to the IO manager.

`SyncStep.run()` is the body of the `invoiced_tables` multi-asset. For each object, as soon as
its listing is complete:
1. its tables are staged in the destination (`staging`), never written into the published ones;
2. every check is computed there in SQL (`audit`): on the staged tables for a full load, on the
   merge's result for an incremental run;
3. if no blocking check failed, all of the object's tables are published in one transaction
   (`destinations.publication`), and an `Output` per selected table goes to the IO manager,
   which records what the publish did; then the check results follow. If one failed, nothing
   of the object is published: only the check results are reported, no materialization is
   recorded (the cursors stay), and the run fails at the end naming the check, the table and
   the figure, once every other object is published.

Steps 1-3 run in a thread of their own, one object ahead of Dagster's handling of the events
(`sync.ahead`): the only thread that uses the warehouse session while the objects are read.

Checks selected without their table (the UI's "Execute" on a check) audit the published table.
"""

import threading
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg

from invoiced_assets import checks
from invoiced_assets.api import InvoicedClient
from invoiced_assets.api.errors import InvoicedError
from invoiced_assets.catalogue import CUSTOMERS
from invoiced_assets.destinations.history import DeletionTime
from invoiced_assets.destinations.protocol import Destination
from invoiced_assets.destinations.publication import ObjectRelease, TableRelease
from invoiced_assets.extract.incremental import Deletions, events_for_plans, now
from invoiced_assets.extract.listings import Extraction, ReadPlan
from invoiced_assets.extract.scheduling import extract_concurrently
from invoiced_assets.sync.ahead import run_ahead
from invoiced_assets.sync.audit import Auditor, Evaluation, count_now
from invoiced_assets.sync.exclusivity import ensure_sole_sync
from invoiced_assets.sync.options import SyncOptions, SyncRunConfig
from invoiced_assets.sync.outputs import (
    TRANSIENT_ERRORS,
    BlockedObject,
    failure,
    output_metadata,
)
from invoiced_assets.sync.planning import ReadPlanner, table_histories
from invoiced_assets.sync.staging import StagedRead, stage_read
from invoiced_assets.sync.tuning import tuned_for_sync
from invoiced_assets.sync.versioning import Versioning, deletion_times
from invoiced_assets.tables.batches import BatchDirectory

Event = dg.Output | dg.AssetCheckResult


class SyncStep:
    """One run of the multi-asset over `tables` (every `TableAsset` of it, by name)."""

    def __init__(
        self,
        context: dg.AssetExecutionContext,
        client: InvoicedClient,
        destination: Destination,
        tables: Mapping[str, Any],
        options: SyncOptions,
        run_config: SyncRunConfig,
        key_prefix: tuple[str, ...],
    ) -> None:
        options = run_config.options_for_run(options)
        self.context = context
        self.key_prefix = key_prefix
        self.client = client
        self.destination = destination
        self.all_tables = tables
        by_key = {t.key: t for t in tables.values()}
        selected = {by_key[k].table: by_key[k] for k in context.selected_asset_keys}
        # The tables read and published (with their history, where it is kept).
        self.tables = selected
        self.selected_checks = {
            (by_key[c.asset_key].table, c.name) for c in context.selected_asset_check_keys
        }
        keys = {t.table: t.key for t in tables.values()}
        wanted = set(self.tables) | {table for table, _ in self.selected_checks}
        self.history = table_histories(context.instance, {n: keys[n] for n in wanted})
        self.versioning = Versioning(
            tables, self.tables, destination, self.selected_checks, context.log.info
        )
        self.history_followed = self.versioning.followed(self.history)
        self.now = now()
        self.auditor = Auditor(
            destination,
            tables,
            self.history,
            options.min_row_ratio,
            frozenset(run_config.accept_row_drop),
        )
        self.planner = ReadPlanner(self.tables, self.history, destination, options, self.now)
        self.options = options
        self.failures: list[Extraction] = []
        self.deletions: Deletions | None = None
        self.deletion_times: tuple[DeletionTime, ...] = ()
        self.blocked: list[BlockedObject] = []
        self.backfill = run_config.history_backfill

    def run(self) -> Iterator[Event]:
        ensure_sole_sync(self.context, self.key_prefix)  # before anything is read or written
        # One session for everything the step does in the warehouse (the publishes included).
        with self.destination.held_session():
            if self.tables:
                # Long tables wait in batch files until staged (see `tables.batches`); the
                # warehouse works one object ahead of Dagster's events (see `sync.ahead`).
                with tuned_for_sync(), BatchDirectory() as batches:
                    yield from run_ahead(lambda stop: self._sync(batches, stop))
            yield from self._checks_on_their_own()
        error = failure(self.failures, self.blocked, self.destination.staging_location)
        if error is not None:
            raise error

    def _result(self, evaluation: Evaluation) -> dg.AssetCheckResult:
        key = self.all_tables[evaluation.table].key
        return checks.check_result(key, evaluation.check, evaluation.outcome)

    def _selected(self, evaluations: list[Evaluation]) -> Iterator[dg.AssetCheckResult]:
        for evaluation in evaluations:
            if (evaluation.table, evaluation.check) in self.selected_checks:
                yield self._result(evaluation)

    def _sync(self, batches: BatchDirectory, stop: threading.Event) -> Iterator[list[Event]]:
        """The step's events, a list per object read (its outputs, published already, and its
        check results), in the thread that alone uses the warehouse meanwhile (`run_ahead`).
        Once `stop` is set (the step is stopping), the listings end before their next request."""
        self.destination.clear_staging()
        plans = self.planner.plans()
        self.context.log.info(
            f"Reading {len(plans)} Invoiced listings from {self.client.settings.base_url}: "
            + ", ".join(
                f"{p.obj.name} ({'changes' if p.incremental else 'all'})"
                for p in sorted(plans, key=lambda p: p.obj.name)
            )
        )
        deletions, event_cursor, plans = self._read_events(plans)
        self.deletions = deletions
        # For every object's history, once: the deletion events' times.
        self.deletion_times = deletion_times(deletions.deleted_at if deletions else {})
        if self.backfill:
            self.versioning.read_snapshots(self.client, batches)
        customers_pending = CUSTOMERS.name in self.tables
        waiting_for_customers: list[str] = []
        for extraction in extract_concurrently(
            self.client, plans, batches=batches, log=self.context.log.info, cancelled=stop
        ):
            events: list[Event] = []
            if extraction.error is not None:
                self.context.log.error(
                    f"{extraction.obj.name}: {extraction.error} Its tables keep their last"
                    " good copy."
                )
                self.failures.append(extraction)
            elif extraction.tables:
                read = stage_read(self.destination, extraction, deletions)
                events += self._audit_and_release(read, event_cursor)
                waiting_for_customers += [
                    name
                    for name in read.tables
                    if name in self.tables
                    and (name, checks.CUSTOMER_REFERENCES) in self.selected_checks
                ]
            customers_pending &= extraction.obj is not CUSTOMERS
            if not customers_pending:
                for name in waiting_for_customers:
                    events.append(self._result(self.auditor.customer_references(name)))
                waiting_for_customers = []
            yield events
        yield [  # the customers could not be read in this run
            self._result(self.auditor.customer_references(name)) for name in waiting_for_customers
        ]

    def _read_events(self, plans: list[ReadPlan]) -> tuple[Deletions | None, int, list[ReadPlan]]:
        cursors = {name: h.state.cursor_event_id for name, h in self.history.items()}
        versioned = frozenset(n for n in self.tables if self.versioning.versioned(n))
        try:
            return events_for_plans(self.client, plans, cursors, versioned)
        except InvoicedError as exc:
            raise dg.Failure(
                description=f"Reading /events failed: {exc} No table was changed.",
                allow_retries=isinstance(exc, TRANSIENT_ERRORS),
            ) from None

    def _audit_and_release(self, read: StagedRead, event_cursor: int) -> Iterator[Event]:
        """Audit a staged object; publish it through the IO manager only if nothing blocks."""
        extraction = read.extraction
        if extraction.plan.incremental and not extraction.obj.append_only:
            self.context.log.info(
                f"{extraction.obj.name}: {read.changed} changed and {read.deleted} deleted since"
                " the last load"
            )
        names = [name for name in read.tables if name in self.tables]
        evaluations = self.auditor.audit(read, names)
        blocking = [e for e in evaluations if e.blocks]
        if blocking:
            found = [(e.table, e.check, _figures(e)) for e in blocking]
            self.blocked.append(BlockedObject(extraction.obj.name, found))
            self.context.log.error(
                f"{extraction.obj.name} is not published: "
                + "; ".join(
                    f"{table}: {check} failed ({figures})" for table, check, figures in found
                )
            )
            yield from self._selected(evaluations)
            return
        versioned = [self.tables[n] for n in names if self.versioning.versioned(n)]
        release = ObjectRelease(
            read.for_publishing(
                self.tables,
                history=tuple(t.history_spec() for t in versioned),
                deletion_times=self.deletion_times,
                synced_at=int(self.now),
                history_followed=self.history_followed,
                snapshots=(
                    self.versioning.staged_snapshots(extraction.obj.name) if versioned else None
                ),
            )
        )
        # Published here, in the warehouse's thread (`run_ahead`): the IO manager, in Dagster's,
        # only records what it did. A failure fails the step before any of its outputs.
        release.published_by(self.destination)
        for name in names:
            yield self._output(read, name, release, event_cursor)
        self.auditor.released(read)
        yield from self._selected(evaluations)
        yield from self.versioning.check_results(versioned, release)

    def _output(
        self, read: StagedRead, name: str, release: ObjectRelease, event_cursor: int
    ) -> dg.Output:
        table = self.tables[name]
        state = self.history[name].state
        return dg.Output(
            TableRelease(release, name),
            output_name=self.context.assets_def.get_output_name_for_asset_key(table.key),
            metadata=output_metadata(read, name, state, event_cursor, self.now),
        )

    def _checks_on_their_own(self) -> Iterator[dg.AssetCheckResult]:
        """Checks selected without their table: evaluated on the published table."""
        for name, check in sorted(self.selected_checks):
            if name in self.tables:
                continue
            if check == checks.HISTORY_CHECK:
                yield self.versioning.check_on_its_own(self.all_tables[name])
            else:
                obj = self.all_tables[name].obj
                evaluation = self.auditor.on_published_tables(
                    name, check, lambda obj=obj: count_now(self.client, obj)
                )
                yield self._result(evaluation)


def _figures(evaluation: Evaluation) -> str:
    """The figures of a failed check, as one line."""
    shown = {k: v for k, v in evaluation.outcome.metadata.items() if k not in ("allowance",)}
    return ", ".join(f"{k} {v}" for k, v in shown.items())
