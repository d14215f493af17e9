"""Several objects read at once, each yielded as soon as it is complete.

Measured on 2 cores (see benchmarks/full_load.py): one Dagster step per listing pays a process
start and the dagster/pandas import per step, and the default executor runs only as many steps as
there are CPUs; threads in one step overlap every listing's network waits.

All of that pays only while pages wait on the network. When the API answers in under
FAST_ROUND_TRIP_SECONDS (`pace`) the read is CPU-bound: listings are not split, and the objects
are read one after another, so that each is complete (and written by the step) as early as it
can be. A rejected key, or a consumer that stops, cancels the rest.
"""

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from invoiced_assets.api import InvoicedClient, ListingStats
from invoiced_assets.api.errors import InvoicedAuthenticationError, InvoicedError
from invoiced_assets.extract import listings, pace
from invoiced_assets.extract.customers import CustomerIds, CustomerRead
from invoiced_assets.extract.listings import Extraction, ExtractionCancelled, ReadPlan, default_log
from invoiced_assets.tables.batches import BatchDirectory


def extract_concurrently(
    client: InvoicedClient,
    plans: Iterable[ReadPlan],
    *,
    batches: BatchDirectory | None = None,
    log: Callable[[str], None] = default_log,
    cancelled: threading.Event | None = None,
) -> Iterator[Extraction]:
    """Read every planned object side by side; yield each one as soon as it is complete.

    While the API answers fast (no request waits FAST_ROUND_TRIP_SECONDS), the objects are read
    one after another instead, customers first.

    A failed object is yielded with its error, after which the others continue (their tables are
    still worth writing), except when the key is rejected: then the rest stop early, as they do
    when `cancelled` is set.
    Per-customer objects wait for the customers read of the same run for their customer ids.
    """
    plans = list(plans)
    if not plans:
        return
    if cancelled is None:
        cancelled = threading.Event()
    full_customers_read = any(p.obj.name == "customers" and p.updated_after is None for p in plans)
    customers = CustomerIds(client, from_customers_read=full_customers_read)

    def read(plan: ReadPlan) -> Extraction:
        try:
            extraction = listings.extract_object(
                client, plan, cancelled=cancelled, customers=customers, batches=batches, log=log
            )
        except BaseException as exc:
            if isinstance(exc, InvoicedAuthenticationError):
                cancelled.set()  # before any other object starts: they would be refused too
            if plan.obj.name == "customers":
                customers.fail(exc)
            raise
        if plan.obj.name == "customers" and plan.updated_after is None:
            customers.set(CustomerRead(extraction.ids or set(), extraction.max_updated_at))
        return extraction

    # Objects are started by a thread of their own, so that the next one starts on time however
    # long the consumer takes over the one it was handed (the step writes its tables meanwhile).
    completed: queue.SimpleQueue[tuple[ReadPlan, Future | None] | BaseException | None]
    completed = queue.SimpleQueue()
    scheduler = threading.Thread(
        target=_start_objects,
        args=(client, plans, read, cancelled, completed),
        name="invoiced-objects",
    )
    scheduler.start()
    try:
        while (item := completed.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            plan, future = item
            if future is None:
                error = ExtractionCancelled(f"{plan.obj.name}: not read because another failed")
                yield Extraction(plan, ListingStats(plan.obj.endpoint), error=error)
                continue
            try:
                yield future.result()
            except (InvoicedError, ExtractionCancelled, OSError, ValueError) as exc:
                yield Extraction(plan, ListingStats(plan.obj.endpoint), error=exc)
    except BaseException:
        # The consumer stopped (the step failed or was terminated), or an object failed in an
        # unexpected way: the other listings stop before their next request.
        cancelled.set()
        raise
    finally:
        scheduler.join()


def _start_objects(
    client: InvoicedClient,
    plans: list[ReadPlan],
    read: Callable[[ReadPlan], Extraction],
    cancelled: threading.Event,
    completed: "queue.SimpleQueue[tuple[ReadPlan, Future | None] | BaseException | None]",
) -> None:
    """Start each object's read, and hand each one over as it completes (then None).

    The next object starts when none is being read, or when a request of those being read has
    waited on the API for FAST_ROUND_TRIP_SECONDS. A fast API is thus read one object at a time
    (the read is CPU-bound: each object is complete, and written, sooner); a slow one has its
    objects started one after another until their waits overlap. The customers go first:
    per-customer objects wait for their ids. Once `cancelled`, no other object starts.
    """
    waiting = sorted(plans, key=lambda plan: (plan.obj.name != "customers", plan.obj.per_customer))
    try:
        with ThreadPoolExecutor(len(plans), thread_name_prefix="invoiced-listing") as pool:
            running: dict[Future, ReadPlan] = {}
            while (waiting and not cancelled.is_set()) or running:
                startable = waiting and not cancelled.is_set()
                if startable and (
                    not running or client.waiting_seconds() >= pace.FAST_ROUND_TRIP_SECONDS
                ):
                    plan = waiting.pop(0)
                    running[pool.submit(read, plan)] = plan
                    continue
                done, _ = wait(
                    running,
                    timeout=pace.PACE_CHECK_SECONDS if startable else None,
                    return_when=FIRST_COMPLETED,
                )
                for future in done:
                    completed.put((running.pop(future), future))
        for plan in waiting:  # never started: another listing failed
            completed.put((plan, None))
    except BaseException as exc:
        completed.put(exc)
    finally:
        completed.put(None)
