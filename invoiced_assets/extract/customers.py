"""Per-customer objects (contacts, payment sources): one listing per customer, from the customer
ids of this run's customers read or of a walk of their own, and the check that a read where every
customer was "not found" is not believed."""

import threading
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from invoiced_assets.api import InvoicedClient, Listing
from invoiced_assets.api.errors import InvoicedCustomerNotFoundError, InvoicedNotFoundError
from invoiced_assets.catalogue import CUSTOMERS, InvoicedObject

if TYPE_CHECKING:
    from invoiced_assets.extract.listings import ReadPlan


@dataclass
class CustomerRead:
    """The customers whose per-customer listings a read covers."""

    ids: set[Any]
    max_updated_at: int | None
    requests: int = 0

    @classmethod
    def walk(cls, client: InvoicedClient, updated_after: int | None) -> "CustomerRead":
        """Customers (updated after the cursor, or all), from the customers listing."""
        listing = client.object_listing("customers", updated_after=updated_after)
        ids: set[Any] = set()
        newest: int | None = None
        for page in listing:
            ids.update(record["id"] for record in page)
            stamps = [r["updated_at"] for r in page if isinstance(r.get("updated_at"), int)]
            newest = max([*stamps, *([newest] if newest is not None else [])], default=None)
        return cls(ids, newest, listing.stats.requests)


class CustomerIds:
    """Every customer id, for per-customer listings: from this run's full customers read when
    there is one (awaited), else from a walk of the customers listing of their own (once)."""

    def __init__(self, client: InvoicedClient, *, from_customers_read: bool) -> None:
        self._future: Future[CustomerRead] = Future()
        self._client = client
        self._from_customers_read = from_customers_read
        self._lock = threading.Lock()

    def set(self, read: CustomerRead) -> None:
        if not self._future.done():
            self._future.set_result(read)

    def fail(self, error: BaseException) -> None:
        if not self._future.done():
            self._future.set_exception(error)

    def result(self) -> CustomerRead:
        if not self._from_customers_read:
            with self._lock:
                if not self._future.done():
                    self._future.set_result(CustomerRead.walk(self._client, None))
        return self._future.result()


def customer_listings(
    client: InvoicedClient, plan: "ReadPlan", customers: CustomerIds
) -> tuple[Iterator[tuple[Listing, dict[str, Any]]], int, CustomerRead]:
    """One listing per customer (and per variant) for a per-customer object, made as it is
    taken from the iterator; and how many there are."""
    if plan.updated_after is not None:
        # Only customers changed since the cursor: their listings are read again whole.
        changed = CustomerRead.walk(client, plan.updated_after)
        changed.ids |= plan.also_customers
    else:
        changed = customers.result()
    column = plan.obj.customer_column
    listings = (
        (client.object_listing(plan.obj.name, customer=customer, params=variant), {column: customer})
        for customer in sorted(changed.ids, key=str)
        for variant in plan.obj.list_variants
    )  # fmt: skip
    return listings, len(changed.ids) * len(plan.obj.list_variants), changed


# How many of the skipped customers are looked up before every listing skipped is believed.
SKIPPED_CUSTOMERS_LOOKED_UP = 3


def check_not_all_skipped(
    client: InvoicedClient, obj: InvoicedObject, skipped: list[Any], listed: int
) -> None:
    """Fail when every customer's listing answered "Customer was not found" while one of those
    customers still exists: then the answers are wrong, not the customers gone."""
    if not skipped or len(skipped) < listed:
        return
    for customer in sorted(skipped, key=str)[:SKIPPED_CUSTOMERS_LOOKED_UP]:
        try:
            client.get(f"{CUSTOMERS.endpoint}/{customer}", {})
        except InvoicedCustomerNotFoundError:
            continue  # gone indeed (deleted during the read)
        raise InvoicedNotFoundError(
            f"{obj.name}: all {listed} listings {obj.endpoint} answered 404 Customer was not"
            f" found, yet customer {customer} exists ({CUSTOMERS.endpoint}/{customer} answers):"
            " no table is published rather than an empty one. Check INVOICED_BASE_URL and that"
            " the API key belongs to the account whose customers were listed.",
            path=obj.endpoint,
            status=404,
        )
