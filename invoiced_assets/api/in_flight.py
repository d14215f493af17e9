"""How many requests may be in flight at once: a ceiling, lowered while the service says 429.

The service allows 20 requests in flight per API key, and the account's other integrations
share them. The ceiling (`max_in_flight`, 16 by default) leaves the others room at our busiest;
and when the service still answers 429 (the key's 20 are in use: ours and theirs together), the
limit halves and then grows back by one for every `limit` answers without a 429 (additive
increase, multiplicative decrease, as TCP does). One burst of 429s, from requests that were all
in flight together, halves the limit once, not once per answer.
"""

import enum
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager


class Rank(enum.IntEnum):
    """Which waiting request a freed slot goes to first (the lowest rank)."""

    AWAITED = 0  # a page of a walk other listings wait for (the customers: their ids)
    WALK = 1  # a page of any other listing of the account
    PER_CUSTOMER = 2  # one customer's listing (contacts, payment sources): thousands, short


class InFlightLimit:
    """At most `limit` requests at once, for every client of one API host in the process.

    A freed slot goes to a waiting request, never to whoever asks next: by `Rank`, then in the
    order they asked. A long listing's pages must come one after another, so each one kept
    waiting behind thousands of one-page per-customer listings lengthens the whole read; those
    fill the slots the walks leave free instead. Among walks, the order asked keeps them all
    moving (date windows end together, leaving no slot idle at the end).
    """

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.limit = ceiling
        self._in_flight = 0
        self._generation = 0  # how many times the limit was lowered
        self._answered_since_change = 0
        self._lock = threading.Lock()
        self._waiting: tuple[deque[_Waiter], ...] = tuple(deque() for _ in Rank)

    @property
    def times_lowered(self) -> int:
        """How many times a burst of 429s has lowered the limit."""
        return self._generation

    @property
    def waiting(self) -> int:
        """How many requests are waiting for a slot."""
        with self._lock:
            return sum(len(queue) for queue in self._waiting)

    @contextmanager
    def slot(self, rank: Rank = Rank.WALK) -> Iterator["SlotOutcome"]:
        """Hold a slot for one request; mark the outcome `rate_limited` on a 429."""
        with self._lock:
            if self._in_flight < self.limit and not any(self._waiting):
                self._in_flight += 1
            else:
                self._wait_for_slot(self._waiting[rank])
            outcome = SlotOutcome(self._generation)
        try:
            yield outcome
        finally:
            self._release(outcome)

    def _wait_for_slot(self, queue: "deque[_Waiter]") -> None:
        """Wait (holding `_lock`) until a release hands this request a slot."""
        waiter = _Waiter(self._lock)
        queue.append(waiter)
        try:
            while not waiter.granted:
                waiter.condition.wait()
        except BaseException:  # interrupted while waiting: give the slot, or the place, back
            if waiter.granted:
                self._in_flight -= 1
                self._hand_over()
            else:
                queue.remove(waiter)
            raise

    def _release(self, outcome: "SlotOutcome") -> None:
        with self._lock:
            self._in_flight -= 1
            if outcome.rate_limited:
                # Requests started before the last decrease saw the old limit: ignored.
                if outcome.generation == self._generation:
                    self.limit = max(1, self.limit // 2)
                    self._generation += 1
                    self._answered_since_change = 0
            elif self.limit < self.ceiling:
                self._answered_since_change += 1
                if self._answered_since_change >= self.limit:
                    self.limit += 1
                    self._answered_since_change = 0
            self._hand_over()

    def _hand_over(self) -> None:
        """Give free slots to waiting requests, by rank (holding `_lock`).

        Only the requests given a slot are woken: waking every waiting thread to find out cost
        measurable CPU with dozens of listing threads."""
        while self._in_flight < self.limit and (queue := next(filter(None, self._waiting), None)):
            waiter = queue.popleft()
            self._in_flight += 1
            waiter.granted = True
            waiter.condition.notify()


class _Waiter:
    """A request waiting for a slot."""

    __slots__ = ("condition", "granted")

    def __init__(self, lock: threading.Lock) -> None:
        self.condition = threading.Condition(lock)
        self.granted = False


class SlotOutcome:
    """What one request in a slot saw: set `rate_limited` when the service answered 429."""

    __slots__ = ("generation", "rate_limited")

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.rate_limited = False


_LIMITS_LOCK = threading.Lock()
_LIMITS: dict[tuple[str, int], InFlightLimit] = {}


def shared_limit(base_url: str, ceiling: int) -> InFlightLimit:
    """One limit per API host and ceiling, shared by every client in the process."""
    with _LIMITS_LOCK:
        return _LIMITS.setdefault((base_url, ceiling), InFlightLimit(ceiling))
