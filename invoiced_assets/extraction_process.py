"""Run the extraction (the API walk, parsing and shaping) in a child process with a core of its own.

Measured at 0 ms latency on 2 cores (`benchmarks/full_load.py --objects core`): in the step's
own process, reading and shaping shared one core (Python's GIL) with everything else the step
does: Dagster's events (one SQLite write each, about 260 for the seven core objects), the writes
and the checks. In a child process the two run side by side, and each table is written while
the next ones are still being read.

The child is forked at the start of the read, while the step has no other thread:
- It inherits the loaded modules, so it starts at once. A spawned child spent 1.5 s importing
  pandas, pyarrow, requests and dagster before its first request.
- No lock can be held by another thread at that moment, which is what makes forking safe. The
  step falls back to reading in its own threads when it has other threads, and on platforms
  other than Linux: macOS frameworks (used by requests' proxy lookup) break in forked children.

The child uses a client of its own, built from the same settings; it shares nothing with the step
but two pipes. Its extractions come back pickled as they complete: short tables as DataFrames,
long ones as the paths of the batch files it wrote in the step's `BatchDirectory` (the step
removes them, as it does its own). Progress lines come back through the same pipe and are logged
by the step. When the step stops early (a failure, or the run being terminated), it closes the
other pipe: the child stops its listings before their next page and exits.
"""

import contextlib
import multiprocessing
import pickle
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from invoiced_assets.extraction import Extraction, ReadPlan, extract_concurrently
from invoiced_assets.invoiced_api import InvoicedClient
from invoiced_assets.table_data import BatchDirectory

# Messages from the child: (kind, payload).
_LOG, _EXTRACTION, _DONE, _CRASH = "log", "extraction", "done", "crash"


class ExtractionProcessError(RuntimeError):
    """The extraction's child process failed outside any one listing (a bug, or it was killed).

    `transient`: it was killed or exited (say, out of memory), so a retry may pass; a bug would
    fail again.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


def can_fork_for_extraction() -> str | None:
    """None when the extraction can run in a forked child now, else why not (for the logs)."""
    if not sys.platform.startswith("linux"):
        return f"a child process is forked only on Linux (this is {sys.platform})"
    if threading.active_count() > 1:
        names = ", ".join(
            t.name for t in threading.enumerate() if t is not threading.current_thread()
        )
        return f"the step has other threads ({names}), so it is not safe to fork"
    return None


def extract_in_child_process(
    client: InvoicedClient,
    plans: list[ReadPlan],
    *,
    batches: BatchDirectory,
    log: Callable[[str], None],
) -> Iterator[Extraction]:
    """`extract_concurrently` in a forked child: the same extractions, in the same order of
    completion. The caller must have checked `can_fork_for_extraction()`."""
    context = multiprocessing.get_context("fork")
    results_in, results_out = context.Pipe(duplex=False)
    # The child reads nothing from this pipe: its end of file means the step has stopped.
    lifeline_in, lifeline_out = context.Pipe(duplex=False)
    child = context.Process(
        target=_child_main,
        args=(
            client.settings,
            plans,
            batches,
            results_out,
            lifeline_in,
            (results_in, lifeline_out),
        ),
        name="invoiced-extraction",
        daemon=True,  # killed if the step's process exits without closing it
    )
    child.start()
    results_out.close()
    lifeline_in.close()
    log(f"Reading the API in child process {child.pid}; this step writes each table as it comes.")
    try:
        while True:
            try:
                kind, payload = results_in.recv()
            except EOFError:
                child.join()
                raise ExtractionProcessError(
                    f"The extraction process exited (code {child.exitcode}) before it finished;"
                    " no table was written from its unfinished listings. If the system ran out"
                    " of memory, lower INVOICED_MAX_IN_FLIGHT or free some.",
                    transient=True,
                ) from None
            if kind == _LOG:
                log(payload)
            elif kind == _EXTRACTION:
                yield payload
            elif kind == _DONE:
                break
            else:
                raise ExtractionProcessError(f"The extraction process failed:\n{payload}")
    finally:
        lifeline_out.close()  # the child's listings stop at their next page
        results_in.close()
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
            child.join()


def _child_main(
    settings: Any,
    plans: list[ReadPlan],
    batches: BatchDirectory,
    results: Connection,
    lifeline: Connection,
    step_ends: tuple[Connection, ...],
) -> None:
    # The step's ends of both pipes, inherited by the fork: held open here, they would keep the
    # child from seeing the step go (no end of file on the lifeline, no broken results pipe).
    for end in step_ends:
        end.close()
    cancelled = threading.Event()  # the listings stop (also set on a rejected key)
    step_gone = threading.Event()  # nobody reads the results any more

    def watch_lifeline() -> None:
        with contextlib.suppress(EOFError, OSError):
            lifeline.recv()
        step_gone.set()
        cancelled.set()

    threading.Thread(target=watch_lifeline, name="lifeline", daemon=True).start()

    def send(kind: str, payload: Any) -> None:
        if not step_gone.is_set():
            results.send((kind, payload))

    # A directory of its own inside the step's (removed with it): no file name can collide.
    own_batches = BatchDirectory(str(batches.path), rows_per_batch=batches.rows_per_batch)
    try:
        for extraction in extract_concurrently(
            InvoicedClient(settings),
            plans,
            batches=own_batches,
            log=lambda line: send(_LOG, line),
            cancelled=cancelled,
        ):
            send(_EXTRACTION, _picklable(extraction))
        send(_DONE, None)
    except (BrokenPipeError, EOFError):
        pass  # the step has gone: nobody is listening
    except BaseException:
        with contextlib.suppress(OSError):
            send(_CRASH, traceback.format_exc())


def _picklable(extraction: Extraction) -> Extraction:
    """The extraction, its error replaced by a plain one of the same message if it cannot be
    pickled (an error may hold a socket or a response)."""
    if extraction.error is None:
        return extraction
    try:
        pickle.dumps(extraction.error)
    except Exception:
        error = extraction.error
        extraction.error = ExtractionProcessError(f"{type(error).__name__}: {error}")
    return extraction
