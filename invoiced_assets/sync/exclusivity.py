"""One sync at a time: which run gives way when two would overlap.

Two syncs writing one warehouse at once would interleave their publishes and move the cursors
under each other. Three things keep them apart:

- the schedule skips a tick while a sync is queued or in progress (`skip_reason`);
- the sync step is in the concurrency pool `invoiced_sync` (`POOL`): where the Dagster instance
  limits it to one (`concurrency: {pools: {default_limit: 1}}` in dagster.yaml), a second run
  waits for the slot, queued in the UI, or blocked in `dagster job execute`, and then runs;
- otherwise (an ephemeral instance, no limit on the pool) the step checks the instance's runs
  when it starts (`ensure_sole_sync`): if a sync recorded before this run is queued or in
  progress, this run fails at once, before reading or writing anything, naming that run.

Only the later-recorded run gives way, so two runs started together never both fail, and never
both proceed: the earlier one was in the instance before the later one looked.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import dagster as dg

POOL = "invoiced_sync"  # the sync step's concurrency pool (`assets.build_invoiced_assets`)
SYNC_JOB = "invoiced_sync"  # the job's name (`schedules.JOB_NAME` is this)
FULL_RELOAD_JOB = "invoiced_full_reload"  # the same sync, always full
IN_PROGRESS = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)
# The instance setting (dagster.yaml) that makes the pool wait, in YAML one can paste as one line.
POOL_SETTING = "concurrency: {pools: {default_limit: 1}}"


@dataclass(frozen=True)
class SyncRun:
    """A sync run as the instance recorded it."""

    run_id: str
    status: dg.DagsterRunStatus
    created: datetime
    # The run storage's row id: it grows with every run the instance records, so it orders
    # runs by when they were recorded. Creation timestamps come from each process's clock.
    order: int

    def describe(self) -> str:
        return (
            f"run {self.run_id} ({self.status.value}, created {self.created:%Y-%m-%d %H:%M:%S} UTC)"
        )


def sync_run(record: dg.RunRecord) -> SyncRun:
    run = record.dagster_run
    return SyncRun(run.run_id, run.status, record.create_timestamp, record.storage_id)


def is_sync(run: dg.DagsterRun, key_prefix: Sequence[str]) -> bool:
    """Whether the run executes the sync step: a run of the job, or of any of its assets (those
    under `key_prefix`: a run materializing any of them, e.g. the UI's "Materialize", runs it)."""
    if run.job_name in (SYNC_JOB, FULL_RELOAD_JOB):
        return True
    keys = set(run.asset_selection or ())
    keys |= {check.asset_key for check in run.asset_check_selection or ()}
    prefix = list(key_prefix)
    return any(key.path[: len(prefix)] == prefix for key in keys)


def syncs_in_progress(instance: dg.DagsterInstance, key_prefix: Sequence[str]) -> list[SyncRun]:
    """Every sync queued or in progress on the instance, earliest recorded first."""
    records = instance.get_run_records(filters=dg.RunsFilter(statuses=list(IN_PROGRESS)))
    syncs = [sync_run(r) for r in records if is_sync(r.dagster_run, key_prefix)]
    return sorted(syncs, key=lambda r: r.order)


def run_to_give_way_to(this: SyncRun | None, in_progress: Sequence[SyncRun]) -> SyncRun | None:
    """The earliest sync in progress recorded before `this` one (None: this one goes ahead).

    A run the instance does not know (`this` is None) was recorded after every other.
    """
    earlier = [
        r for r in in_progress if this is None or (r.run_id != this.run_id and r.order < this.order)
    ]
    return min(earlier, key=lambda r: r.order, default=None)


def skip_reason(in_progress: Sequence[SyncRun]) -> str | None:
    """The schedule's reason to skip a tick (None: no sync is queued or in progress)."""
    if not in_progress:
        return None
    first = min(in_progress, key=lambda r: r.order)
    others = len(in_progress) - 1
    more = f" (and {others} more)" if others else ""
    return (
        f"Not starting {SYNC_JOB}: a sync is still queued or in progress, {first.describe()}{more}."
        " The next tick will try again."
    )


def pool_gap(storage_has_pools: bool, limit: int | None, holds_slot: bool) -> str | None:
    """Why the pool does not keep this step alone (None: it does).

    `limit` is the pool's on the instance, `holds_slot` whether this run holds one of its slots:
    Dagster claims it before the step starts, when the instance enforces the pool per op.
    """
    if not storage_has_pools:
        return (
            "this Dagster instance keeps no concurrency pools (an ephemeral instance: set"
            " DAGSTER_HOME; or a storage that needs `dagster instance migrate`)"
        )
    if limit is None:
        return f"the pool {POOL} has no limit on this instance"
    if limit != 1:
        return f"the pool {POOL} allows {limit} steps at once"
    if not holds_slot:
        return (
            f"this run holds no slot of the pool {POOL} (with `granularity: run` only runs"
            " launched through the run queue wait for it)"
        )
    return None


def give_way_message(earlier: SyncRun, gap: str) -> str:
    """The step's failure: which run it gives way to, and what the user can do."""
    return (
        f"Another sync is in progress: {earlier.describe()}. This run was recorded after it, so"
        " it stops here, before reading Invoiced or writing the warehouse. Wait for that run to"
        " finish, or terminate (or delete) it in the Dagster UI if it is stale (its process is"
        " gone), then launch again. To have a run wait for the one in progress instead, add"
        f" `{POOL_SETTING}` to $DAGSTER_HOME/dagster.yaml (here {gap})."
    )


def pool_gap_on(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """`pool_gap` for this run, from the instance's storage (see `pool_gap`)."""
    # Dagster offers no public API for this: these are what `dagster instance concurrency`
    # and the UI's pool page read.
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return pool_gap(False, None, False)
    info = storage.get_concurrency_info(POOL)
    holds_slot = any(slot.run_id == run_id for slot in info.claimed_slots)
    return pool_gap(True, info.limit, holds_slot)


def check_sole_sync(instance: dg.DagsterInstance, run_id: str, key_prefix: Sequence[str]) -> str:
    """Raise `dg.Failure` if run `run_id` must give way to an earlier sync; else say why not."""
    gap = pool_gap_on(instance, run_id)
    if gap is None:
        return f"This run holds the only slot of the pool {POOL}: no other sync runs meanwhile."
    in_progress = syncs_in_progress(instance, key_prefix)
    this = next((r for r in in_progress if r.run_id == run_id), None)
    earlier = run_to_give_way_to(this, in_progress)
    if earlier is not None:
        raise dg.Failure(
            description=give_way_message(earlier, gap),
            metadata={"run_in_progress": dg.MetadataValue.dagster_run(earlier.run_id)},
            # Retrying would only find the same run in progress.
            allow_retries=False,
        )
    later = [r for r in in_progress if r.run_id != run_id]
    if later:
        return (
            f"No earlier sync is in progress; later ones give way to this run:"
            f" {', '.join(r.describe() for r in later)}."
        )
    return "No other sync is queued or in progress."


def ensure_sole_sync(context: dg.AssetExecutionContext, key_prefix: Sequence[str]) -> None:
    """Fail the step at once if an earlier sync is queued or in progress (see the module)."""
    context.log.info(check_sole_sync(context.instance, context.run.run_id, key_prefix))
