"""How a sync runs: options fixed by the settings, and what one run's config may change."""

from dataclasses import dataclass

import dagster as dg
from pydantic import Field

from invoiced_assets import checks


@dataclass(frozen=True)
class SyncOptions:
    incremental: bool = False
    full_reconcile_hours: float = 24.0
    min_row_ratio: float = checks.DEFAULT_MIN_ROW_RATIO


class SyncRunConfig(dg.Config):
    """Run config of `invoiced_tables` (the launchpad, `dg launch --config-json`)."""

    accept_row_drop: list[str] = Field(
        default_factory=list,
        description=(
            "Objects or tables (e.g. `invoices`) whose fall in rows this run accepts: their"
            " `no_row_count_collapse` check passes, noting that it was accepted. For a real mass"
            " deletion in Invoiced; any other failed check still blocks."
        ),
    )
