"""Run the extraction (the API walk, parsing and shaping) in a child process with a core of its own.

Measured at 0 ms latency on 2 cores (`benchmarks/full_load.py --objects core`): in the step's
own process, reading and shaping shared one core (Python's GIL) with everything else the step
does: Dagster's events (one SQLite write each, about 260 for the seven core objects), the writes
and the checks. In a child process the two run side by side, and each table is written while
the next ones are still being read.

The child is forked at the start of the read:
- It inherits the loaded modules, so it starts at once. A spawned child spent 1.5 s importing
  pandas, pyarrow, requests and dagster before its first request.
- Forking is safe only when no other thread can hold a lock that the child will need. So the
  step forks only while its other threads, if any, are Dagster's own waiting threads of a
  launched run (`DAGSTER_WAITING_THREADS`). Otherwise, and on platforms other than Linux, it
  reads in its own threads and logs why. macOS frameworks, which requests' proxy lookup uses,
  break in forked children.

The child uses an API client of its own, built from the same settings. The process-wide cap on
requests in flight is then the child's: the step makes no request while the child reads.
Besides its inherited memory, the child shares with the step two pipes and the step's batch
directory, where it writes the long tables' batch files (the step removes them, as it does its
own). Everything it sends goes through the results pipe, from one thread:
- each extraction as it completes, pickled: short tables as DataFrames, long ones as the paths
  of their batch files;
- progress lines, which the step logs.

Warnings from Python's logging go to the inherited stderr, as they would in the step. When the
step stops early (a failure, or the run being terminated), it closes the other pipe. The child's
listings then stop before their next request, and the child exits.
"""

import contextlib
import multiprocessing
import pickle
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from typing import Any

from invoiced_assets.extraction import Extraction, ReadPlan, extract_concurrently
from invoiced_assets.invoiced_api import ClientSettings, InvoicedClient
from invoiced_assets.table_data import BatchDirectory

# Threads of a run launched by Dagster (the UI, a schedule) that wait for the whole run and hold
# no lock the child uses: the run worker's termination handler (it waits on a multiprocessing
# event) and the feeder of its status queue (its locks are that queue's, which the child never
# touches; multiprocessing drops the queue's finalizers in a forked child). Checked on a run
# launched through the code server.
DAGSTER_WAITING_THREADS = frozenset({"termination-handler", "QueueFeederThread"})
# How long the step waits for a stopped child to exit before killing it.
CHILD_EXIT_SECONDS = 10.0

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
    others = [
        thread.name
        for thread in threading.enumerate()
        if thread is not threading.current_thread() and thread.name not in DAGSTER_WAITING_THREADS
    ]
    if others:
        return f"the step has other threads ({', '.join(others)}), so it is not safe to fork"
    return None


def extract_in_child_process(
    client: InvoicedClient,
    plans: list[ReadPlan],
    *,
    batches: BatchDirectory,
    log: Callable[[str], None],
) -> Iterator[Extraction]:
    """`extract_concurrently` in a forked child: the same extractions, in the same order of
    completion. Where forking is not safe, or fails, the step's own threads read instead, and
    the log says why."""
    why_not = can_fork_for_extraction()  # first: Windows has no "fork" context at all
    if why_not is None:
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
        try:
            child.start()
        except OSError as exc:  # out of memory or processes
            for end in (results_in, results_out, lifeline_in, lifeline_out):
                end.close()
            why_not = f"a child process could not be started ({exc})"
    if why_not is not None:
        log(f"Reading in the step's own threads: {why_not}.")
        yield from extract_concurrently(client, plans, batches=batches, log=log)
        return
    results_out.close()
    lifeline_in.close()
    log(f"Reading the API in child process {child.pid}; this step writes each table as it comes.")
    try:
        while True:
            try:
                kind, payload = results_in.recv()
            except EOFError:
                child.join(CHILD_EXIT_SECONDS)
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
        lifeline_out.close()  # the child's listings stop before their next request
        results_in.close()
        child.join(CHILD_EXIT_SECONDS)
        if child.is_alive():
            child.kill()
            child.join()


def _child_main(
    settings: ClientSettings,
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
    # Ctrl-C reaches the whole process group: the step decides, and closes the lifeline.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cancelled = threading.Event()  # the listings stop (also set on a rejected key)
    step_gone = threading.Event()  # nobody reads the results any more
    outbox: queue.SimpleQueue[tuple[str, Any] | None] = queue.SimpleQueue()

    def the_step_has_gone() -> None:
        step_gone.set()
        cancelled.set()

    def send_all() -> None:
        # The only thread writing to the pipe: a message sent from two threads at once can
        # interleave in the pipe. A full pipe (the step busy writing a table) blocks only here.
        try:
            while (message := outbox.get()) is not None:
                results.send(message)
        except OSError:  # broken pipe
            the_step_has_gone()

    def watch_lifeline() -> None:
        with contextlib.suppress(EOFError, OSError):
            lifeline.recv()
        the_step_has_gone()

    def send(kind: str, payload: Any) -> None:
        if not step_gone.is_set():
            outbox.put((kind, payload))

    sender = threading.Thread(target=send_all, name="results-sender")
    try:
        sender.start()
        threading.Thread(target=watch_lifeline, name="lifeline", daemon=True).start()
        # A directory of its own inside the step's (removed with it): no file name can collide.
        own_batches = BatchDirectory(str(batches.path), rows_per_batch=batches.rows_per_batch)
        for extraction in extract_concurrently(
            InvoicedClient(settings),
            plans,
            batches=own_batches,
            log=lambda line: send(_LOG, line),
            cancelled=cancelled,
        ):
            send(_EXTRACTION, _picklable(extraction))
        send(_DONE, None)
    except BaseException:
        send(_CRASH, traceback.format_exc())
    finally:
        outbox.put(None)
        if sender.is_alive():
            sender.join()


def _picklable(extraction: Extraction) -> Extraction:
    """The extraction, its error replaced by a plain one of the same message and kind if it
    cannot cross to the step (it may hold a socket, or not take its own arguments back)."""
    error = extraction.error
    if error is None:
        return extraction
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        message = f"{type(error).__name__}: {error}"
        # OSError stays OSError: the step retries transient errors, and counts OSError as one.
        extraction.error = OSError(message) if isinstance(error, OSError) else ValueError(message)
    return extraction
