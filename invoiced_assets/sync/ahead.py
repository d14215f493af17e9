"""A sync step's warehouse work, one object ahead of Dagster's handling of its events.

Once the listings are read, a step alternates two kinds of work: the warehouse's (staging,
auditing and publishing an object, mostly DuckDB or Snowflake time) and Dagster's (storing the
object's outputs, materializations and check results in its instance, mostly SQLite time).
Done one after the other they add up; `run_ahead` runs the first in a thread of its own, one
object ahead, so that object n+1 is staged, audited and published while Dagster stores object
n's events (both spend most of their time outside Python's lock).

Only that thread uses the step's warehouse session while it runs: every release is published
there before its outputs are handed on (`ObjectRelease.published_by`), so the IO manager, in
Dagster's thread, only reads what the publish did.
"""

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_DONE = object()


def run_ahead(
    make_batches: Callable[[threading.Event], Generator[list[T], None, None]], ahead: int = 1
) -> Iterator[T]:
    """The items of the batches `make_batches(stop)` yields, in order. A thread makes them:
    batch n+1 (up to `ahead` more) while the caller handles batch n's items. An error making a
    batch is raised here, in its place in the order.

    When the caller stops early (an error, the run terminated, this generator closed), `stop` is
    set, for the batch under way to end soon (the step's listings stop before their next
    request); the thread finishes that batch, makes no other, closes the batches and is joined
    before this returns, so nothing of the step runs after it."""
    stop = threading.Event()
    batches = make_batches(stop)
    permits = threading.Semaphore(ahead + 1)  # batches made and not yet handled, at most
    made: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue()

    def make() -> None:
        try:
            while True:
                permits.acquire()
                if stop.is_set():
                    return
                try:
                    batch = next(batches)
                except StopIteration:
                    made.put((_DONE, None))
                    return
                made.put((batch, None))
        except BaseException as error:  # handed to the caller, raised in its thread
            made.put((None, error))
        finally:
            batches.close()  # its own clean-up runs in the thread that ran it

    worker = threading.Thread(target=make, name="invoiced-warehouse", daemon=True)
    worker.start()
    try:
        while True:
            batch, error = made.get()
            if error is not None:
                raise error
            if batch is _DONE:
                return
            yield from batch
            permits.release()
    finally:
        stop.set()
        permits.release()  # a thread waiting for a permit sees `stop`
        worker.join()
