"""How a sync runs: options fixed by the settings, and what one run's config may change."""

from dataclasses import dataclass, replace
from enum import Enum

import dagster as dg
from pydantic import Field

from invoiced_assets import checks


@dataclass(frozen=True)
class SyncOptions:
    incremental: bool = False
    full_reconcile_hours: float = 24.0
    min_row_ratio: float = checks.DEFAULT_MIN_ROW_RATIO
    # Objects whose tables are versioned in `<table>_history` (INVOICED_HISTORY).
    history: frozenset[str] = frozenset()


class SyncMode(Enum):
    """How one run reads: offered as a choice in the launchpad."""

    full = "full"
    incremental = "incremental"


class SyncRunConfig(dg.Config):
    """Run config of `invoiced_tables` (the launchpad, `dg launch --config-json`)."""

    sync_mode: SyncMode | None = Field(
        default=None,
        description=(
            "This run only: `full` reads and replaces every selected table; `incremental` reads"
            " what changed since each table's last sync (a table never loaded, or due for its"
            " full reconciliation, is still loaded in full). Unset: the deployment's"
            " INVOICED_SYNC_MODE."
        ),
    )

    accept_row_drop: list[str] = Field(
        default_factory=list,
        description=(
            "Objects or tables (e.g. `invoices`) whose fall in rows this run accepts: their"
            " `no_row_count_collapse` check passes, noting that it was accepted. For a real mass"
            " deletion in Invoiced; any other failed check still blocks."
        ),
    )

    history_backfill: bool = Field(
        default=False,
        description=(
            "This run only: also build the history tables' versions from before their first"
            " sync, from the events log (each event's `data.object` is its record's state then),"
            " for the versioned objects read (INVOICED_HISTORY). Reads the whole log once; a"
            " second backfill adds nothing."
        ),
    )

    def options_for_run(self, options: SyncOptions) -> SyncOptions:
        """The deployment's options, with this run's `sync_mode` if it sets one."""
        if self.sync_mode is None:
            return options
        return replace(options, incremental=self.sync_mode is SyncMode.incremental)
