"""How many requests may be in flight at once: a ceiling, lowered while the service says 429.

The service allows 20 requests in flight per API key, and the account's other integrations
share them. The ceiling (`max_in_flight`, 16 by default) leaves the others room at our busiest;
and when the service still answers 429 (the key's 20 are in use: ours and theirs together), the
limit halves and then grows back by one for every `limit` answers without a 429 (additive
increase, multiplicative decrease, as TCP does). One burst of 429s, from requests that were all
in flight together, halves the limit once, not once per answer.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class InFlightLimit:
    """At most `limit` requests at once, for every client of one API host in the process."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = ceiling
        self.limit = ceiling
        self._in_flight = 0
        self._generation = 0  # how many times the limit was lowered
        self._answered_since_change = 0
        self._condition = threading.Condition()

    @property
    def times_lowered(self) -> int:
        """How many times a burst of 429s has lowered the limit."""
        return self._generation

    @contextmanager
    def slot(self) -> Iterator["SlotOutcome"]:
        """Hold a slot for one request; mark the outcome `rate_limited` on a 429."""
        with self._condition:
            while self._in_flight >= self.limit:
                self._condition.wait()
            self._in_flight += 1
            outcome = SlotOutcome(self._generation)
        try:
            yield outcome
        finally:
            self._release(outcome)

    def _release(self, outcome: "SlotOutcome") -> None:
        with self._condition:
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
                    self._condition.notify()  # one more slot
            # One request may start in the slot freed (waking every waiting thread to find that
            # out cost measurable CPU with dozens of listing threads).
            self._condition.notify()


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
