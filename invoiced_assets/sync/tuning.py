"""How the process runs a sync step: three allocator settings, measured.

- The cyclic garbage collector: every page parsed makes thousands of dicts and lists, and the
  collector's youngest generation runs every 700 allocations. JSON has no cycles (reference
  counting frees it), so those passes only cost time: about a third of a listing's walk and
  shaping (measured on invoices at scale 5). During a step it runs 100x less often.
- Arrow's memory pool: pyarrow's default (mimalloc) keeps what each thread freed for that
  thread's reuse; with dozens of listing threads converting batches, that held about 100 MB
  at scale 5 (peak RSS of the full load, all objects, at 0 ms: 790 MB with it, 690 MB with the
  system allocator, no measurable change in time). During a step Arrow allocates from the
  system allocator, which hands large blocks back when they are freed.
- glibc's malloc (Linux): each thread that allocates under contention gets an arena of its own
  (up to 8 per core), and freed blocks stay in it; and a freed block of more than 128 KB (a page
  of JSON, an Arrow buffer) raises the size below which later blocks come from those arenas
  instead of being mapped and unmapped. With dozens of listing threads that kept about 100 MB
  (every object at scale 5, 100 ms: peak RSS 659 MB with the settings below, against 764 MB). So
  a step allocates from at most 2 arenas, blocks over 128 KB are always mapped apart (handed back
  when freed), and free memory at the top of a heap is returned past 128 KB. These stay set
  after the step: glibc cannot be handed back its own moving threshold. Elsewhere, nothing is done.

The first two are restored when the step ends, so nothing else in the process is changed for
good (the sync is one step, so two never overlap in a process).
"""

import contextlib
import ctypes
import ctypes.util
import gc
import sys
from collections.abc import Iterator

import pyarrow as pa

STEP_GC_THRESHOLD = 70_000
# mallopt(3) parameters, and the values a step sets.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
STEP_MALLOC_SETTINGS = {
    _M_ARENA_MAX: 2,
    _M_MMAP_THRESHOLD: 128 * 1024,
    _M_TRIM_THRESHOLD: 128 * 1024,
}


def tune_glibc_malloc() -> bool:
    """Set `STEP_MALLOC_SETTINGS` where the C library is glibc; whether they were set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(parameter, value) == 1 for parameter, value in STEP_MALLOC_SETTINGS.items())


@contextlib.contextmanager
def tuned_for_sync(gc_threshold: int = STEP_GC_THRESHOLD) -> Iterator[None]:
    previous_threshold = gc.get_threshold()
    previous_pool = pa.default_memory_pool()
    gc.set_threshold(max(gc_threshold, previous_threshold[0]), *previous_threshold[1:])
    pa.set_memory_pool(pa.system_memory_pool())
    tune_glibc_malloc()  # before the listing threads start, so they share the two arenas
    try:
        yield
    finally:
        pa.set_memory_pool(previous_pool)
        gc.set_threshold(*previous_threshold)
