"""Date windows: a long listing split into contiguous, non-overlapping `date` ranges, each walked
in order on its own, so a full walk is no longer bounded by one chain of pages."""

import math
import time
from collections.abc import Mapping
from typing import Any

from invoiced_assets.api import InvoicedClient, ListingStats
from invoiced_assets.catalogue import InvoicedObject
from invoiced_assets.extract import pace

# A listing of more pages than this is split into date windows of about this many pages.
PAGES_PER_WINDOW = 25
MAX_WINDOWS = 32

Window = tuple[int | None, int | None]


def date_windows(
    client: InvoicedClient, obj: InvoicedObject, params: Mapping[str, Any], stats: ListingStats
) -> list[Window]:
    """Contiguous, non-overlapping `date` windows covering the whole listing (one if short).

    A one-record request sizes the listing (X-Total-Count) and times a round trip; when windows
    pay, one-record requests for the earliest and the latest `date` place them (all counted in
    `stats`). The first window has no start and the last no end, so no date is left out.
    """
    if not obj.date_filterable:
        return [(None, None)]
    # Timed on an unsorted request: a sorted one also times the service's sort (measured on the
    # emulator: 112 ms for the first sorted request of invoices, 1-4 ms unsorted).
    started = time.monotonic()
    head = client.get(obj.endpoint, {**params, "per_page": 1})
    round_trip = time.monotonic() - started
    stats.requests += head.attempts
    total = head.response.headers.get("X-Total-Count", "")
    pages = math.ceil(int(total) / client.settings.page_size) if total.isdigit() else 0
    count = min(MAX_WINDOWS, pages // PAGES_PER_WINDOW)
    if count < 2 or not head.body or round_trip < pace.FAST_ROUND_TRIP_SECONDS:
        return [(None, None)]
    earliest = client.get(obj.endpoint, {**params, "sort": f"{obj.date_field} asc", "per_page": 1})
    stats.requests += earliest.attempts
    latest = client.get(obj.endpoint, {**params, "sort": f"{obj.date_field} desc", "per_page": 1})
    stats.requests += latest.attempts
    field = obj.date_field or "date"
    first, last = (earliest.body or [{}])[0].get(field), (latest.body or [{}])[0].get(field)
    if not isinstance(first, int) or not isinstance(last, int) or last - first < count:
        return [(None, None)]
    bounds = [first + (last - first) * i // count for i in range(1, count)]
    starts: list[int | None] = [None, *bounds]
    ends: list[int | None] = [*(b - 1 for b in bounds), None]
    return list(zip(starts, ends, strict=True))
