"""A local emulator of the Invoiced REST API, for tests and benchmarks.

It serves a deterministic synthetic account (see `data`) over HTTP (see `server`) and reproduces
the service's documented and undocumented behaviour: Basic auth, pagination with `Link` and
`X-Total-Count`, the server-side cursor and its 10,000-offset refusal, hidden subscriptions,
`include=applied_to`, strict query parameters, concurrency-based 429s, and injectable faults.
Besides the seven billing listings and `/events` it serves the catalog (`/plans`, `/items`,
`/coupons`, `/tax_rates`: string ids, archived plans and items behind `archived=1`), `/notes`,
`/tasks`, and each customer's `/customers/{id}/contacts` and `/customers/{id}/payment_sources`.
"""

from invoiced_assets.emulator.data import LISTINGS, Dataset
from invoiced_assets.emulator.server import FAULT_KINDS, EmulatorServer, FaultConfig

__all__ = ["FAULT_KINDS", "LISTINGS", "Dataset", "EmulatorServer", "FaultConfig"]
