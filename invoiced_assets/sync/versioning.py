"""What a sync step does for the history tables (INVOICED_HISTORY): which ones an incremental
merge may version by the records it touched, a backfill's states from the events log, and the
history check's results (one per versioned table, with a figure for each invariant).

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
        """A versioned table's history check executed on its own: on the published tables,
        every record, in one query."""
        spec = table.history_spec()
        offending: dict[str, int] = {}
        with self.destination.session() as session:
            columns = self.destination.published_columns(session, spec.table)
            if columns and self.destination.published_columns(session, spec.name):
                query = checks_query(self.destination.dialect, spec, columns)
                offending = check_figures(session.rows(query)[0])[0]
        if not offending:
            outcome = checks.CheckOutcome(True, {"note": f"no {spec.name} yet"})
        else:
            outcome = _history_outcome(offending)
        return checks.check_result(table.key, checks.HISTORY_CHECK, outcome)

    def check_results(
        self, versioned: list[Any], release: ObjectRelease
    ) -> Iterator[dg.AssetCheckResult]:
        """The history checks, passed in the publishing transaction (a failure there publishes
        nothing and fails the step)."""
        published = release.published_by(self.destination)
        for table in versioned:
            if (table.table, checks.HISTORY_CHECK) not in self.selected_checks:
                continue
            details = published[table.table].details
            offending = {i: int(details[f"invoiced/check/{i}"]) for i in HISTORY_INVARIANTS}
            yield checks.check_result(table.key, checks.HISTORY_CHECK, _history_outcome(offending))


def _history_outcome(offending: Mapping[str, int]) -> checks.CheckOutcome:
    """The history check passes when no invariant has an offending row; each is a figure."""
    return checks.CheckOutcome(not any(offending.values()), dict(offending))


def deletion_times(deleted_at: Mapping[str, Mapping[Any, int]]) -> tuple[DeletionTime, ...]:
    """The deletion events' times (by object, record), for the history tables' versions."""
    return tuple(
        DeletionTime(name, str(record), at)
        for name, times in sorted(deleted_at.items())
        for record, at in times.items()
    )
