"""`invoiced_events_sensor`: near-real-time syncs, started by what `/events` says changed.

Every INVOICED_EVENTS_POLL_SECONDS (60 by default, at least 30) the sensor asks `/events` for
what happened after its cursor, the newest event it has seen (kept by Dagster with the sensor,
so it survives restarts). While nothing changed that is one request and no run. When something
did, it requests one incremental run of `invoiced_sync` for exactly the tables of the objects
the new events touch (and the events table), keyed by the newest event id: a change reaches
the warehouse about two polls later. While a sync is queued or in progress it waits, cursor
unchanged, so it never overlaps one; the next poll asks again.

Off by default: switch it on in the UI (Automation), or with INVOICED_EVENTS_SENSOR=on.
"""

from collections.abc import Sequence
from typing import Any

import dagster as dg

from invoiced_assets.api import InvoicedResource
from invoiced_assets.assets import API_KEY, TableAsset
from invoiced_assets.extract.incremental import Changes, newest_event_id, read_changes
from invoiced_assets.schedules import run_config_for
from invoiced_assets.sync.exclusivity import skip_reason, syncs_in_progress
from invoiced_assets.sync.options import SyncMode

SENSOR_NAME = "invoiced_events_sensor"
TRIGGER_TAG = "invoiced/trigger"
NEWEST_EVENT_TAG = "invoiced/newest_event_id"


def tables_to_sync(changes: Changes, tables: Sequence[TableAsset]) -> list[TableAsset]:
    """The replicated tables of the objects that changed (every table when too much changed).

    An object's child tables go with it: they are read from the same listing."""
    if changes.objects is None:
        return list(tables)
    return [t for t in tables if t.obj.name in changes.objects]


def sync_request(changes: Changes, tables: Sequence[TableAsset]) -> dg.RunRequest | None:
    """One incremental run of the changed tables, keyed by the newest event (None: none)."""
    selected = tables_to_sync(changes, tables)
    if not selected:
        return None
    return dg.RunRequest(
        run_key=f"invoiced-events-{changes.newest_event_id}",
        asset_selection=[t.key for t in selected],
        run_config=run_config_for(SyncMode.incremental),
        tags={TRIGGER_TAG: "events", NEWEST_EVENT_TAG: str(changes.newest_event_id)},
    )


def build_events_sensor(
    job: Any,
    tables: Sequence[TableAsset],
    *,
    poll_seconds: int,
    running: bool,
    key_prefix: Sequence[str],
) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR_NAME,
        job=job,
        minimum_interval_seconds=poll_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING
        if running
        else dg.DefaultSensorStatus.STOPPED,
        required_resource_keys={API_KEY},
        description=(
            f"Polls Invoiced's /events every {poll_seconds} s (INVOICED_EVENTS_POLL_SECONDS) and"
            " requests an incremental sync of the tables whose objects changed. Waits while a"
            " sync is in progress."
        ),
    )
    def invoiced_events_sensor(
        context: dg.SensorEvaluationContext,
    ) -> dg.SensorResult | dg.SkipReason:
        invoiced: InvoicedResource = getattr(context.resources, API_KEY)
        client = invoiced.get_client()
        if not context.cursor:
            newest = newest_event_id(client)
            return dg.SensorResult(
                skip_reason=f"Watching /events from event {newest} on: later events start syncs.",
                cursor=str(newest),
            )
        # A sync in progress is not overlapped: the same events are asked for again next time.
        reason = skip_reason(syncs_in_progress(context.instance, key_prefix))
        if reason:
            return dg.SkipReason(reason)
        changes = read_changes(client, int(context.cursor))
        if not changes.any:
            return dg.SkipReason(f"No event after {changes.since_event_id}.")
        request = sync_request(changes, tables)
        if request is None:
            return dg.SensorResult(
                skip_reason=(
                    f"Events up to {changes.newest_event_id} touch no replicated table"
                    " (INVOICED_DISABLED_OBJECTS)."
                ),
                cursor=str(changes.newest_event_id),
            )
        return dg.SensorResult(run_requests=[request], cursor=str(changes.newest_event_id))

    return invoiced_events_sensor
