"""What a sync step does for the history tables (INVOICED_HISTORY): which ones an incremental
merge may version by the records it touched, a backfill's states from the events log, and the
history checks' results.

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
    HISTORY_CHECKS,
    DeletionTime,
    check_figures,
    checks_query,
    history_table,
)
from invoiced_assets.destinations.protocol import Destination
from invoiced_assets.destinations.publication import ObjectRelease
from invoiced_assets.extract.snapshots import EventSnapshots, read_event_snapshots
from invoiced_assets.sync.outputs import TRANSIENT_ERRORS
from invoiced_assets.sync.planning import TableHistory, table_histories
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
        return history_table(name) in self.all_tables

    def followed(
        self, instance: dg.DagsterInstance, history: Mapping[str, TableHistory]
    ) -> frozenset[str]:
        """The versioned tables whose history table was published by the same run as their
        table's last publish (not so: history switched on since, or off for a while)."""
        names = [n for n in self.tables if self.versioned(n)]
        keys = {history_table(n): self.all_tables[history_table(n)].key for n in names}
        versions = table_histories(instance, keys)
        return frozenset(
            n
            for n in names
            if history[n].run_id is not None
            and versions[history_table(n)].run_id == history[n].run_id
        )

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

    def checks_on_their_own(self, table: Any) -> Iterator[dg.AssetCheckResult]:
        """A history table's selected checks executed on their own: on the published history
        table, every record, in one query for all of them."""
        spec = self.all_tables[table.history_of].history_spec()
        offending: dict[str, int] = {}
        with self.destination.session() as session:
            columns = self.destination.published_columns(session, spec.table)
            if columns and self.destination.published_columns(session, spec.name):
                query = checks_query(self.destination.dialect, spec, columns)
                offending = check_figures(session.rows(query)[0])[0]
        for check in HISTORY_CHECKS:
            if (table.table, check) not in self.selected_checks:
                continue
            found = offending.get(check)
            metadata = (
                {"offending_rows": found} if found is not None else {"note": "no history yet"}
            )
            outcome = checks.CheckOutcome(not found, metadata)
            yield checks.check_result(table.key, check, outcome)

    def check_results(
        self, versioned: list[Any], release: ObjectRelease
    ) -> Iterator[dg.AssetCheckResult]:
        """The history tables' checks, passed in the publishing transaction (a failure there
        publishes nothing and fails the step)."""
        published = release.published_by(self.destination)
        for table in versioned:
            details = published[table.table].details
            for check in HISTORY_CHECKS:
                if (table.table, check) in self.selected_checks:
                    offending = int(details[f"invoiced/check/{check}"])
                    outcome = checks.CheckOutcome(offending == 0, {"offending_rows": offending})
                    yield checks.check_result(table.key, check, outcome)


def deletion_times(deleted_at: Mapping[str, Mapping[Any, int]]) -> tuple[DeletionTime, ...]:
    """The deletion events' times (by object, record), for the history tables' versions."""
    return tuple(
        DeletionTime(name, str(record), at)
        for name, times in sorted(deleted_at.items())
        for record, at in times.items()
    )
