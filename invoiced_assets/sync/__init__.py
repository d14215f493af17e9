"""The sync step: what a run of `invoiced_tables` does, in parts with one job each.

`planning` (what to read: everything, or the changes since the cursors), `staging` (one
object's read into the destination's staging, with how an incremental run merges it), `audit`
(the checks, in SQL), `outputs` (metadata and failures), `step` (the order of it all).
"""

from invoiced_assets.sync.options import SyncOptions, SyncRunConfig
from invoiced_assets.sync.outputs import failure_for
from invoiced_assets.sync.step import SyncStep

__all__ = ["SyncOptions", "SyncRunConfig", "SyncStep", "failure_for"]
