"""How a table's columns evolve from one load to the next: pure, destination-independent.

The rules (schema drift never fails a load, nothing is lost):
- a column that appears is added, after the existing ones;
- a column no longer sent is kept, null in the new rows;
- a column whose values need a wider type is widened by `conversions.widest` (the same rule
  that types a column within one load), and never narrowed back;
- existing columns keep their order, whatever order the API sends fields in.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from invoiced_assets.catalogue import FieldType
from invoiced_assets.tables.conversions import widest
from invoiced_assets.tables.shaping import Column


@dataclass(frozen=True)
class PlannedColumn:
    name: str
    type: FieldType
    incoming_type: FieldType | None  # None: not in this load, written as null


@dataclass(frozen=True)
class ColumnPlan:
    columns: list[PlannedColumn]
    added: list[str]
    kept_missing: list[str]
    widened: dict[str, tuple[FieldType, FieldType]]

    @property
    def changed(self) -> bool:
        return bool(self.added or self.kept_missing or self.widened)

    def describe(self) -> list[str]:
        """One human-readable line per change, for materialization metadata."""
        lines = [f"added column {name}" for name in self.added]
        lines += [f"column {name} not sent any more: kept, null" for name in self.kept_missing]
        lines += [
            f"column {name} widened from {old} to {new}"
            for name, (old, new) in self.widened.items()
        ]
        return lines


def plan_columns(existing: Mapping[str, FieldType], incoming: Sequence[Column]) -> ColumnPlan:
    """The columns of the table to write, given the table as it is (empty if new)."""
    incoming_types = {c.name: c.type for c in incoming}
    columns: list[PlannedColumn] = []
    widened: dict[str, tuple[FieldType, FieldType]] = {}
    kept_missing: list[str] = []
    for name, old_type in existing.items():
        new_type = incoming_types.get(name)
        if new_type is None:
            kept_missing.append(name)
            columns.append(PlannedColumn(name, old_type, None))
            continue
        final = widest(old_type, new_type)
        if final is not old_type:
            widened[name] = (old_type, final)
        columns.append(PlannedColumn(name, final, new_type))
    added = [c.name for c in incoming if c.name not in existing]
    columns += [PlannedColumn(c.name, c.type, c.type) for c in incoming if c.name in added]
    return ColumnPlan(columns, added if existing else [], kept_missing, widened)
