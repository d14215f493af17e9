"""The sync jobs, and the schedule that runs a sync every N hours unless one is still running.

`invoiced_sync` runs in the deployment's mode (INVOICED_SYNC_MODE); `invoiced_full_reload` is
the same sync with `sync_mode: full` set, so a one-off full reload is one click in the UI.
"""

from collections.abc import Sequence
from typing import Any

import dagster as dg

from invoiced_assets.sync.exclusivity import (
    FULL_RELOAD_JOB,
    SYNC_JOB,
    skip_reason,
    syncs_in_progress,
)
from invoiced_assets.sync.options import SyncMode

JOB_NAME = SYNC_JOB
SCHEDULE_NAME = "invoiced_sync_schedule"
STEP_NAME = "invoiced_tables"  # the multi-asset's step (`assets.build_invoiced_assets`)
# The console shows progress, not every Dagster event (all are still in the event log, and the
# UI); printing ~200 debug lines a run also costs measurable time.
CONSOLE_AT_INFO = {"console": {"config": {"log_level": "INFO"}}}


def run_config_for(sync_mode: SyncMode | None) -> dict[str, Any]:
    """A sync's run config: the console at INFO, and the run's mode if it sets one."""
    config: dict[str, Any] = {"loggers": CONSOLE_AT_INFO}
    if sync_mode is not None:
        config["ops"] = {STEP_NAME: {"config": {"sync_mode": sync_mode.value}}}
    return config


def cron_for_frequency(hours: int) -> str:
    """At minute 0 every `hours` hours, counted from midnight UTC.

    When `hours` does not divide 24 the last interval of each day is shorter (cron restarts
    its count at midnight), e.g. every 5 hours runs at 00, 05, 10, 15 and 20 o'clock.
    """
    if not 1 <= hours <= 24:
        raise ValueError(f"hours must be from 1 to 24, got {hours}")
    if hours == 1:
        return "0 * * * *"
    if hours == 24:
        return "0 0 * * *"
    return f"0 */{hours} * * *"


def build_sync_job(key_prefix: Sequence[str], *, full_reload: bool = False) -> Any:
    """`invoiced_sync` (the deployment's mode), or `invoiced_full_reload` (always full)."""
    return dg.define_asset_job(
        name=FULL_RELOAD_JOB if full_reload else JOB_NAME,
        selection=dg.AssetSelection.key_prefixes(list(key_prefix)),
        description=(
            "A full reload of every Invoiced table, whatever INVOICED_SYNC_MODE says."
            if full_reload
            else "Syncs every Invoiced table into the warehouse, in the mode INVOICED_SYNC_MODE"
            " sets (the launchpad's `sync_mode` overrides it for one run)."
        ),
        # One step reads every listing with threads; a second process would only add start-up.
        executor_def=dg.in_process_executor,
        config=run_config_for(SyncMode.full if full_reload else None),
    )


def build_sync_schedule(
    job: Any, frequency_hours: int, key_prefix: Sequence[str]
) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=SCHEDULE_NAME,
        job=job,
        cron_schedule=cron_for_frequency(frequency_hours),
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            f"Runs {JOB_NAME} every {frequency_hours} hour(s) (INVOICED_SYNC_FREQUENCY_HOURS);"
            " skips a tick while a sync is still queued or in progress."
        ),
    )
    def invoiced_sync_schedule(
        context: dg.ScheduleEvaluationContext,
    ) -> dg.RunRequest | dg.SkipReason:
        reason = skip_reason(syncs_in_progress(context.instance, key_prefix))
        return dg.SkipReason(reason) if reason else dg.RunRequest()

    return invoiced_sync_schedule
