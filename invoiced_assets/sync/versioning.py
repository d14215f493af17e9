"""What a sync step does for the history tables (INVOICED_HISTORY): which ones an incremental
merge may version by the records it touched, a backfill's states from the events log, and the
history check's results (one per versioned object, with a figure for each invariant).

The versions themselves are written by the publish (`destinations.history`, `.backfill`).
"""

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import dagster as dg

from invoiced_assets import checks
from invoiced_assets.api import InvoicedClient
from invoiced_assets.api.errors import InvoicedError
from invoiced_assets.destinations.backfill import Snapshots
from invoiced_assets.destinations.history import (
    HISTORY_INVARIANTS,
    DeletionTime,
    check_figures,
    checks_query,
)
from invoiced_assets.destinations.protocol import Destination
from invoiced_assets.destinations.publication import ObjectRelease
from invoiced_assets.extract.snapshots import EventSnapshots, read_event_snapshots
from invoiced_assets.sync.outputs import TRANSIENT_ERRORS
from invoiced_assets.sync.planning import TableHistory
from invoiced_assets.sync.staging import stage_snapshots
from invoiced_assets.tables.batches import BatchDirectory


class Versioning:
    """The history side of one sync step over `tables` (the tables it reads, by name)."""

    def __init__(
        self,
        all_tables: Mapping[str, Any],
        tables: Mapping[str, Any],
        destination: Destination,
        selected_checks: set[tuple[str, str]],
        log: Callable[[str], None],
    ) -> None:
        self.all_tables = all_tables
        self.tables = tables
        self.destination = destination
        self.selected_checks = selected_checks
        self.log = log
        self.snapshots: EventSnapshots | None = None

    def versioned(self, name: str) -> bool:
        return self.all_tables[name].versioned

    def followed(self, history: Mapping[str, TableHistory]) -> frozenset[str]:
        """The versioned tables whose last publish also versioned their history (not so:
        history switched on since, or off for a while)."""
        return frozenset(n for n in self.tables if self.versioned(n) and history[n].history_kept)

    def read_snapshots(self, client: InvoicedClient, batches: BatchDirectory) -> None:
        """A backfill run's states of the versioned objects read, from the whole events log."""
        wanted: dict[Any, list[str]] = {}
        for name, table in self.tables.items():
            if self.versioned(name) and table.obj.event_object:
                wanted.setdefault(table.obj, []).append(name)
        if not wanted:
            dg.get_dagster_logger().warning(
                "history_backfill: no versioned object with events is read in this run (set"
                " INVOICED_HISTORY, and select the tables of invoices, payments, ...); nothing"
                " is backfilled."
            )
            return
        try:
            found = read_event_snapshots(client, wanted, batches)
        except InvoicedError as exc:
            raise dg.Failure(
                description=f"Reading /events for the history backfill failed: {exc} No table"
                " was changed.",
                allow_retries=isinstance(exc, TRANSIENT_ERRORS),
            ) from None
        self.log(
            f"history_backfill: {found.events} events read; states of "
            + ", ".join(f"{n} {s.states}" for n, s in sorted(found.objects.items()))
        )
        self.snapshots = found

    def staged_snapshots(self, name: str) -> Snapshots | None:
        """Stage an object's states from the events, once, as the object is published."""
        if self.snapshots is None or name not in self.snapshots.objects:
            return None
        found = self.snapshots.objects.pop(name)
        return stage_snapshots(self.destination, found, self.snapshots.deleted_at)

    def check_on_its_own(self, table: Any) -> dg.AssetCheckResult:
        """A versioned object's history check executed on its own: on the published tables,
        every record of every history table of the object."""
        versioned = [t for t in self.all_tables.values() if t.obj is table.obj and t.versioned]
        found = {}
        with self.destination.session() as session:
            for spec in (t.history_spec() for t in versioned):
                columns = self.destination.published_columns(session, spec.table)
                if columns and self.destination.published_columns(session, spec.name):
                    query = checks_query(self.destination.dialect, spec, columns)
                    found[spec.name] = check_figures(session.rows(query)[0])[0]
        if not found:
            outcome = checks.CheckOutcome(True, {"note": f"no {table.history_table} yet"})
            return checks.check_result(table.key, checks.HISTORY_CHECK, outcome)
        return checks.check_result(table.key, checks.HISTORY_CHECK, _history_outcome(found))

    def check_results(
        self, versioned: list[Any], release: ObjectRelease
    ) -> Iterator[dg.AssetCheckResult]:
        """The object's history check, passed in the publishing transaction (a failure there
        publishes nothing and fails the step), on its table's asset."""
        published = release.published_by(self.destination)
        for table in versioned:
            if (table.table, checks.HISTORY_CHECK) not in self.selected_checks:
                continue
            found = {
                t.history_table: {
                    i: int(published[t.table].details[f"invoiced/check/{i}"])
                    for i in HISTORY_INVARIANTS
                }
                for t in versioned
                if t.obj is table.obj
            }
            yield checks.check_result(table.key, checks.HISTORY_CHECK, _history_outcome(found))


def _history_outcome(found: Mapping[str, Mapping[str, int]]) -> checks.CheckOutcome:
    """The history check over the history tables `found` (their offending rows by invariant):
    it passes when no invariant has an offending row in any of them. A figure per invariant,
    summed over the tables, and the tables checked."""
    offending = {i: sum(figures[i] for figures in found.values()) for i in HISTORY_INVARIANTS}
    return checks.CheckOutcome(
        not any(offending.values()), {**offending, "history_tables": ", ".join(found)}
    )


def deletion_times(deleted_at: Mapping[str, Mapping[Any, int]]) -> tuple[DeletionTime, ...]:
    """The deletion events' times (by object, record), for the history tables' versions."""
    return tuple(
        DeletionTime(name, str(record), at)
        for name, times in sorted(deleted_at.items())
        for record, at in times.items()
    )
