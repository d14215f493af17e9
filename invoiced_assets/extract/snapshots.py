"""The states of records the events log recorded (`history_backfill`), shaped as their tables.

Every event's `data.object` is its record as it was at the event's `timestamp`. One walk of
`/events` (the whole log, newest first) shapes the states of each wanted object exactly as a
listing's records are shaped, into its table and its child tables, except that the record's id
is replaced by the event's id: the states of one record at two moments are two rows, and a line
item's row names the state it belongs to. The snapshots' list (`SNAPSHOT_FIELDS`) maps each event
id back to its record and time; a deletion event is a snapshot with no state.

What events cannot say: objects without events (plans, items, coupons, tax rates) have no past
states; states before the first event the service keeps; fields an event's `data.object` leaves
out (they are null in the versions built from it); and the states between two events of a record.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from invoiced_assets.api import InvoicedClient
from invoiced_assets.catalogue import FieldSpec, FieldType, InvoicedObject
from invoiced_assets.extract.incremental import event_subject
from invoiced_assets.tables.batches import BatchDirectory
from invoiced_assets.tables.shaping import ObjectShaper, ShapedTable, TableBuilder

# The snapshots' list: which event, of which record, when, and whether it deleted the record.
SEQ, RECORD, AT, DELETED = "h__seq", "h__record", "h__at", "h__deleted"


def record_type(obj: InvoicedObject) -> FieldType:
    return next((f.type for f in obj.fields if f.name == obj.primary_key), FieldType.INTEGER)


def snapshot_fields(obj: InvoicedObject) -> tuple[FieldSpec, ...]:
    return (
        FieldSpec(SEQ, FieldType.INTEGER, "ID of the event that recorded the state."),
        FieldSpec(RECORD, record_type(obj), "ID of the record."),
        FieldSpec(AT, FieldType.TIMESTAMP, "When the event recorded the state."),
        FieldSpec(DELETED, FieldType.BOOLEAN, "Whether the event is the record's deletion."),
    )


def state_of(obj: InvoicedObject, subject: Mapping[str, Any], event_id: int) -> dict[str, Any]:
    """A record's state as a listing sends it, its id replaced by the event's: the expanded
    `customer` is its id again (contacts and tasks, which name it `customer_id`, drop it)."""
    state = dict(subject)
    customer = state.get("customer")
    if isinstance(customer, Mapping):
        if "customer" in obj.field_names:
            state["customer"] = customer.get("id")
        else:
            del state["customer"]
    state[obj.primary_key] = event_id
    return state


@dataclass
class ObjectSnapshots:
    """One object's states from the events: each table's, and the snapshots' list."""

    obj: InvoicedObject
    shaper: ObjectShaper
    listed: TableBuilder
    states: int = 0

    def add(self, events: list[tuple[int, int, Any, Mapping[str, Any] | None]]) -> None:
        """(event id, timestamp, record id, state or None for a deletion), for one page."""
        self.listed.add_rows(
            [
                {SEQ: seq, RECORD: record, AT: at, DELETED: state is None}
                for seq, at, record, state in events
            ]
        )
        shaped = [state_of(self.obj, s, seq) for seq, _, _, s in events if s is not None]
        self.shaper.add_page(shaped)
        self.states += len(shaped)

    def finish(self) -> tuple[dict[str, ShapedTable], ShapedTable]:
        return self.shaper.finish(), self.listed.finish()


@dataclass
class EventSnapshots:
    """What one walk of `/events` gave: each wanted object's states, and every deletion's time."""

    objects: dict[str, ObjectSnapshots]
    # When each record was deleted (its last deletion event), by object name.
    deleted_at: dict[str, dict[Any, int]] = field(default_factory=dict)
    events: int = 0


def read_event_snapshots(
    client: InvoicedClient,
    wanted: Mapping[InvoicedObject, Iterable[str]],
    batches: BatchDirectory | None = None,
) -> EventSnapshots:
    """Walk the whole events log once; `wanted`: each object with events, and its tables."""
    found = EventSnapshots(
        {
            obj.name: ObjectSnapshots(
                obj,
                ObjectShaper(obj, tables, batches=batches),
                TableBuilder(
                    f"{obj.name}_snapshots",
                    snapshot_fields(obj),
                    key=(SEQ,),
                    batches=batches,
                ),
            )
            for obj, tables in wanted.items()
            if obj.event_object
        }
    )
    for page in client.listing("/events", {}):
        by_object: dict[str, list[tuple[int, int, Any, Mapping[str, Any] | None]]] = {}
        for event in page:
            found.events += 1
            obj, action, subject = event_subject(event)
            at = event.get("timestamp")
            if obj is None or not isinstance(at, int):
                continue
            record = subject.get(obj.primary_key)
            if record is None:
                continue
            if action == "deleted":  # newest first: the first seen is the last deletion
                found.deleted_at.setdefault(obj.name, {}).setdefault(record, at)
            if obj.name in found.objects:
                state = None if action == "deleted" else subject
                by_object.setdefault(obj.name, []).append((int(event["id"]), at, record, state))
        for name, events in by_object.items():
            found.objects[name].add(events)
    return found
