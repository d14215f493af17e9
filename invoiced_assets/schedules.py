"""The sync job and the schedule that runs it every N hours, unless a sync is still running."""

from typing import Any

import dagster as dg

from invoiced_assets.assets import KEY_PREFIX
from invoiced_assets.sync.exclusivity import SYNC_JOB, skip_reason, syncs_in_progress

JOB_NAME = SYNC_JOB
SCHEDULE_NAME = "invoiced_sync_schedule"


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


def build_sync_job() -> Any:
    return dg.define_asset_job(
        name=JOB_NAME,
        selection=dg.AssetSelection.key_prefixes([KEY_PREFIX]),
        description="Full load of every Invoiced table into the warehouse.",
        # One step reads every listing with threads; a second process would only add start-up.
        executor_def=dg.in_process_executor,
        # The console shows progress, not every Dagster event (all are still in the event log,
        # and the UI); printing ~200 debug lines a run also costs measurable time.
        config={"loggers": {"console": {"config": {"log_level": "INFO"}}}},
    )


def build_sync_schedule(job: Any, frequency_hours: int) -> dg.ScheduleDefinition:
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
        reason = skip_reason(syncs_in_progress(context.instance))
        return dg.SkipReason(reason) if reason else dg.RunRequest()

    return invoiced_sync_schedule
