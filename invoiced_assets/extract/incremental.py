"""Incremental sync: cursors, and what `/events` says changed (the merge itself is SQL that the
destination runs: see `sync.staging` and `destinations.sql`).

Per table, the state of the last successful load is kept in its materialization metadata (so it
survives restarts, and a failed load, which records no materialization, leaves it as it was):

- `invoiced/cursor_updated_at`: the newest `updated_at` loaded. The next read lists
  `updated_after = cursor - OVERLAP_SECONDS` (the API's filter is strictly greater, with
  one-second resolution); records read twice are harmless, the merge is by key.
- `invoiced/cursor_event_id`: the newest event that existed when the load started. The next
  load applies every `<object>.deleted` event after it (credit balance adjustments' events are
  `transaction.*`), to the table and to its child tables.
- `invoiced/last_full_load_at`: when the table was last loaded in full. A full reconciliation
  runs when it is older than INVOICED_FULL_RECONCILE_HOURS, catching anything an incremental run
  could have missed; a table without state (a new or emptied destination) is loaded in full.
"""

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from invoiced_assets.api import InvoicedClient, ListingStats
from invoiced_assets.catalogue import CATALOGUE, InvoicedObject

OVERLAP_SECONDS = 1
CURSOR_UPDATED_AT = "invoiced/cursor_updated_at"
CURSOR_EVENT_ID = "invoiced/cursor_event_id"
LAST_FULL_LOAD_AT = "invoiced/last_full_load_at"
SYNC_KIND = "invoiced/sync_kind"


@dataclass(frozen=True)
class SyncState:
    """What the last successful load of a table recorded."""

    cursor_updated_at: int | None = None
    cursor_event_id: int | None = None
    last_full_load_at: int | None = None

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> "SyncState":
        def number(name: str) -> int | None:
            value = metadata.get(name)
            value = getattr(value, "value", value)
            return int(value) if isinstance(value, int | float) else None

        return cls(number(CURSOR_UPDATED_AT), number(CURSOR_EVENT_ID), number(LAST_FULL_LOAD_AT))

    def can_continue(self, now: float, reconcile_hours: float, *, by_id: bool = False) -> bool:
        """Whether an incremental read can follow this state (else a full load is due).

        `by_id`: an append-only table continues from its newest event id alone.
        """
        cursor = self.cursor_event_id if by_id else self.cursor_updated_at
        if None in (cursor, self.cursor_event_id, self.last_full_load_at):
            return False
        assert self.last_full_load_at is not None
        return now - self.last_full_load_at < reconcile_hours * 3600

    def updated_after(self) -> int:
        assert self.cursor_updated_at is not None
        return self.cursor_updated_at - OVERLAP_SECONDS

    def next_metadata(
        self, *, full: bool, newest_updated_at: int | None, event_id: int | None, now: float
    ) -> dict[str, Any]:
        """The state this load leaves for the next one."""
        cursors = [c for c in (self.cursor_updated_at, newest_updated_at) if c is not None]
        if full:
            cursors = [newest_updated_at] if newest_updated_at is not None else []
        return {
            CURSOR_UPDATED_AT: max(cursors) if cursors else None,
            CURSOR_EVENT_ID: event_id,
            LAST_FULL_LOAD_AT: int(now) if full else self.last_full_load_at,
            SYNC_KIND: "full" if full else "incremental",
        }


EVENT_OBJECTS: Mapping[str, InvoicedObject] = {
    obj.event_object: obj for obj in CATALOGUE if obj.event_object
}
EVENTS_OBJECT = "events"  # the log itself: every new event is a new row of its table


@dataclass
class Deletions:
    """What `/events` says happened since an event id: deleted records by object name, and,
    for per-customer objects (contacts, payment sources), the customers whose records changed
    in any way. Records the service deletes with their customer or invoice have no event of
    their own: `deleted_with` of the catalogue says which, and the merges delete them by it."""

    since_event_id: int
    newest_event_id: int
    ids: dict[str, set[Any]] = field(default_factory=dict)
    # When each was deleted (the event's timestamp, UNIX seconds): a history version's end.
    deleted_at: dict[str, dict[Any, int]] = field(default_factory=dict)
    touched_customers: dict[str, set[Any]] = field(default_factory=dict)
    stats: ListingStats = field(default_factory=lambda: ListingStats("/events"))

    def for_object(self, obj: InvoicedObject) -> set[Any]:
        return self.ids.get(obj.name, set())

    def customers_touched(self, obj: InvoicedObject) -> set[Any]:
        return self.touched_customers.get(obj.name, set())


def event_subject(event: Mapping[str, Any]) -> tuple[InvoicedObject | None, str, Mapping[str, Any]]:
    """The object an event is about (None: none this project copies), its action (`deleted`,
    ...) and its `data.object`."""
    object_type, _, action = str(event.get("type", "")).rpartition(".")
    obj = EVENT_OBJECTS.get(object_type)
    subject = (event.get("data") or {}).get("object")
    if not isinstance(subject, Mapping):
        subject = {}
    kind = subject.get("type")
    if obj is not None and obj.event_types and kind is not None and kind not in obj.event_types:
        obj = None  # e.g. a refund's `transaction.created`: not a credit balance adjustment
    return obj, action, subject


def newest_event_id(client: InvoicedClient) -> int:
    """The id of the newest event (0 when there is none): where the next deletions start."""
    page = client.get("/events", {"per_page": 1}).body
    return int(page[0]["id"]) if page else 0


def read_deletions(client: InvoicedClient, since_event_id: int) -> Deletions:
    """Every `*.deleted` event after `since_event_id` (the listing is newest first: stop there)."""
    listing = client.listing("/events", {})
    deletions = Deletions(since_event_id, since_event_id, stats=listing.stats)
    for page in listing:
        for event in page:
            event_id = int(event["id"])
            if event_id <= since_event_id:
                return deletions
            deletions.newest_event_id = max(deletions.newest_event_id, event_id)
            obj, action, subject = event_subject(event)
            if obj is None:
                continue
            if action == "deleted" and subject.get("id") is not None:
                deletions.ids.setdefault(obj.name, set()).add(subject["id"])
                if isinstance(event.get("timestamp"), int):  # newest first: the last deletion
                    times = deletions.deleted_at.setdefault(obj.name, {})
                    times.setdefault(subject["id"], event["timestamp"])
            customer = event_customer(obj, subject)
            if obj.per_customer and customer is not None:
                # A contact added or changed leaves its customer's updated_at as it was.
                deletions.touched_customers.setdefault(obj.name, set()).add(customer)
    return deletions


# The events sensor reads at most this many pages of new events a poll; more new events than
# that (a sensor switched back on after a long pause) means every table is synced.
CHANGES_MAX_PAGES = 10


@dataclass(frozen=True)
class Changes:
    """What `/events` says changed after an event id: the objects whose tables a sync must
    read (None: too many events to sort, sync everything), and the newest event id seen."""

    since_event_id: int
    newest_event_id: int
    objects: frozenset[str] | None
    requests: int

    @property
    def any(self) -> bool:
        return self.newest_event_id > self.since_event_id


def objects_changed_by(event_type: str) -> set[str]:
    """The objects whose tables an event changes: its own object's, the events table, and on a
    deletion the records the service deletes with it, without events of their own
    (`deleted_with`: a customer's contacts, payment sources, notes and tasks)."""
    object_type, _, action = event_type.rpartition(".")
    changed = {EVENTS_OBJECT}
    obj = EVENT_OBJECTS.get(object_type)
    if obj is not None:
        changed.add(obj.name)
        if action == "deleted":
            changed |= {o.name for o in CATALOGUE if obj.name in o.deleted_with.values()}
    return changed


def read_changes(
    client: InvoicedClient, since_event_id: int, max_pages: int = CHANGES_MAX_PAGES
) -> Changes:
    """The events after `since_event_id`, newest first: one request while nothing changed."""
    listing = client.listing("/events", {})
    newest, objects = since_event_id, set[str]()
    for pages, page in enumerate(listing, start=1):
        for event in page:
            event_id = int(event["id"])
            if event_id <= since_event_id:
                return Changes(since_event_id, newest, frozenset(objects), listing.stats.requests)
            newest = max(newest, event_id)
            objects |= objects_changed_by(str(event.get("type", "")))
        if pages >= max_pages:
            return Changes(since_event_id, newest, None, listing.stats.requests)
    return Changes(since_event_id, newest, frozenset(objects), listing.stats.requests)


def event_customer(obj: InvoicedObject, subject: Mapping[str, Any]) -> Any:
    """The customer id of an event's `data.object`: events send the customer expanded (an
    object), beside the id contacts, tasks and payment sources carry as `customer_id`."""
    for name in (obj.customer_column, "customer_id", "customer"):
        value = subject.get(name)
        if isinstance(value, Mapping):
            value = value.get("id")
        if value is not None:
            return value
    return None


def now() -> float:
    return time.time()


def events_for_plans(
    client: InvoicedClient,
    plans: list[Any],
    cursor_event_ids: Mapping[str, int | None],
    versioned: frozenset[str] = frozenset(),
) -> tuple[Deletions | None, int, list[Any]]:
    """What `/events` says for a run's `ReadPlan`s: the deletions after the tables' cursors (None
    when nothing is read incrementally and no table in `versioned` has history to close), the
    event cursor for the next load, and the plans with the customers whose per-customer listings
    changed."""
    incremental_plans = [p for p in plans if p.incremental]
    # A versioned table's deletions end its current versions at the deletion events' times,
    # read since its last load: full loads too.
    read_for = [
        name
        for plan in plans
        for name in plan.tables
        if name in cursor_event_ids and (plan.incremental or name in versioned)
    ]
    cursors = [cursor_event_ids.get(name) for name in read_for]
    known = [c for c in cursors if c is not None]
    if not incremental_plans and not known:
        return None, newest_event_id(client), plans
    since = min(
        (cursor_event_ids.get(name) or 0 for p in incremental_plans for name in p.tables
         if name in cursor_event_ids),
        default=min(known, default=0),
    )  # fmt: skip
    since = min([since, *known])
    deletions = read_deletions(client, since)
    plans = [
        dataclasses.replace(p, also_customers=frozenset(deletions.customers_touched(p.obj)))
        if p.obj.per_customer and p.updated_after is not None
        else p
        for p in plans
    ]
    return deletions, deletions.newest_event_id, plans
