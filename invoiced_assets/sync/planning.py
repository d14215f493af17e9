"""What a run reads: for each object, every record or only the changes since its cursors.

The cursors of each table are in its last materialization's metadata (see `extract.incremental`); a table
without them, or whose last full load is older than INVOICED_FULL_RECONCILE_HOURS, or that is
missing from the destination, is loaded in full.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from invoiced_assets.catalogue import CUSTOMERS, InvoicedObject
from invoiced_assets.destinations.protocol import Destination
from invoiced_assets.extract.incremental import SyncState
from invoiced_assets.extract.listings import ReadPlan
from invoiced_assets.sync.options import SyncOptions


@dataclass(frozen=True)
class TableHistory:
    """What the instance remembers of a table's last successful load."""

    rows: int | None
    api_total_count: int | None
    state: SyncState
    run_id: str | None = None  # the run that materialized it
    # Its publish also versioned its history table (INVOICED_HISTORY).
    history_kept: bool = False

    @classmethod
    def of(cls, event: Any) -> "TableHistory":
        """What a table's last materialization event says (nothing, for a new table)."""
        materialization = event.asset_materialization if event else None
        metadata = materialization.metadata if materialization else {}

        def number(name: str) -> int | None:
            value = getattr(metadata.get(name), "value", None)
            return int(value) if isinstance(value, int | float) else None

        return cls(
            number("dagster/row_count"),
            number("api_total_count"),
            SyncState.from_metadata(metadata),
            event.run_id if materialization else None,
            "invoiced/history_rows" in metadata,
        )


def table_histories(
    instance: dg.DagsterInstance, keys: Mapping[str, dg.AssetKey]
) -> dict[str, TableHistory]:
    """Each table's history, in one query of the instance for all of them."""
    latest = instance.get_latest_materialization_events(list(keys.values()))
    return {name: TableHistory.of(latest.get(key)) for name, key in keys.items()}


class ReadPlanner:
    """Plans one run's reads from the selected tables (`name -> TableAsset`) and their history."""

    def __init__(
        self,
        tables: Mapping[str, Any],
        history: Mapping[str, TableHistory],
        destination: Destination,
        options: SyncOptions,
        now: float,
    ) -> None:
        self.tables = tables
        self.history = history
        self.destination = destination
        self.options = options
        self.now = now

    def plans(self) -> list[ReadPlan]:
        wanted: dict[InvoicedObject, set[str]] = {}
        for name, table in self.tables.items():
            wanted.setdefault(table.obj, set()).add(name)
        plans = [self._plan(obj, names) for obj, names in wanted.items()]
        needs_all_customers = any(p.obj.per_customer and p.updated_after is None for p in plans)
        if needs_all_customers and CUSTOMERS not in wanted and not self.options.incremental:
            plans.append(ReadPlan(CUSTOMERS))  # their ids, for the per-customer listings
        return plans

    def _plan(self, obj: InvoicedObject, names: set[str]) -> ReadPlan:
        # A child table is audited against its parent's rows: the parent is read and staged
        # with it, and published only if it is selected too.
        shaped = names | {obj.name} if obj.children else names
        if obj.append_only:
            after_id = None
            if self._can_continue(names, shaped, by_id=True):
                after_id = min(self.history[name].state.cursor_event_id or 0 for name in names)
            return ReadPlan(obj, frozenset(shaped), after_id=after_id)
        updated_after = None
        if obj.incremental and self._can_continue(names, shaped, by_id=False):
            updated_after = min(self.history[name].state.updated_after() for name in names)
        return ReadPlan(obj, frozenset(shaped), updated_after)

    def _can_continue(self, names: set[str], shaped: set[str], *, by_id: bool) -> bool:
        """Whether every selected table of a read can take changes only (else the object is
        loaded in full): `by_id`, an append-only table continues from its newest event id."""
        if not (self.options.incremental and names):
            return False
        reconcile = self.options.full_reconcile_hours
        states = [self.history[name].state for name in names]
        if not all(state.can_continue(self.now, reconcile, by_id=by_id) for state in states):
            return False
        # A table dropped since its last load is reloaded whole (a merge needs the rows kept).
        with self.destination.session() as session:
            return all(self.destination.published_columns(session, n) for n in shaped)
