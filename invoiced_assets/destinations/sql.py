"""The SQL every destination runs, written once over a `Dialect`: pure functions, no connection.

A destination stages what a run read (see `protocol`), and these build the statements that
audit and publish it:

- `relation`: the rows a table would hold once published, as a query. A full load's is the
  staged table; an incremental run's is the merge (the published rows it keeps, then the staged
  rows), so the checks audit the merge's result before it is committed.
- `publish_statements`: the schema-drift statements (a new column, a widened type), the data
  statements (replace the table; or delete the replaced rows and insert the staged ones) and the
  comment statements (`tables.docs`: the table's and every column's description) that publish
  one table. Only comments the table does not already hold are written.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

from invoiced_assets.catalogue import FieldType
from invoiced_assets.destinations.protocol import StagedTable
from invoiced_assets.tables.docs import TableComments, comments_for
from invoiced_assets.tables.drift import ColumnPlan, PlannedColumn, plan_columns

# The one column of a staged key set (see `protocol.KeySet`).
KEY_SET_COLUMN = "key"


class Dialect(Protocol):
    """How one warehouse spells names, types and conversions."""

    # Whether DDL takes part in a transaction (DuckDB) or commits on its own (Snowflake).
    transactional_ddl: bool
    # Whether a widened column keeps the table's comments: DuckDB alters the column in place;
    # Snowflake rebuilds the table (`widen_columns`), which drops them.
    widening_keeps_comments: bool

    def column(self, name: str) -> str:
        """A column, by its API name, as a quoted identifier."""
        ...

    def stored_column(self, name: str) -> str:
        """A column's name as the warehouse stores and shows it."""
        ...

    def published(self, table: str) -> str:
        """The published table's qualified name."""
        ...

    def staged(self, table: str) -> str:
        """The staged table's qualified name."""
        ...

    def key_set(self, name: str) -> str:
        """A staged key set's qualified name."""
        ...

    def sql_type(self, field_type: FieldType) -> str: ...

    def convert(self, value: str, source: FieldType, target: FieldType) -> str:
        """A typed value of `source` as a value of the wider `target` (`tables.conversions.widest`)."""
        ...

    def widen_columns(
        self, table: str, columns: Mapping[str, FieldType], widened: Mapping[str, FieldType]
    ) -> list[str]:
        """Statements that widen columns of a published table in place, keeping its rows."""
        ...

    def comment_statements(self, table: str, comments: TableComments) -> list[str]:
        """Statements that set these comments on a published table (its own, when given)."""
        ...


def converted(dialect: Dialect, column: PlannedColumn) -> str:
    """A staged column in its published type (null when the staged table lacks it)."""
    if column.incoming_type is None:
        return f"CAST(NULL AS {dialect.sql_type(column.type)})"
    return dialect.convert(dialect.column(column.name), column.incoming_type, column.type)


def _select_list(dialect: Dialect, columns: Sequence[PlannedColumn]) -> str:
    return ", ".join(f"{converted(dialect, c)} AS {dialect.column(c.name)}" for c in columns)


@dataclass(frozen=True)
class MergedKeys:
    """The records an incremental merge may have changed, by one of its table's columns, staged
    as a key set (see `merged_keys`)."""

    column: str
    key_set: str
    statement: str  # stages the key set

    def condition(self, dialect: "Dialect", alias: str) -> str:
        c = dialect.column
        return (
            f"{alias}.{c(self.column)} IN"
            f" (SELECT {c(KEY_SET_COLUMN)} FROM {dialect.key_set(self.key_set)})"
        )


def merged_keys(dialect: Dialect, staged: StagedTable, link: str, name: str) -> list[MergedKeys]:
    """The rows an incremental merge of `staged` may have changed: those of the records it
    staged (`link`: the record's id, or a child row's parent id) and those it deleted (by each
    deletion's column), as one key set per column (`<name>_<column>`), staged once before the
    statements that read only those rows: a semi-join on one small table is planned and run in
    a fraction of the time of an `OR` of one `IN` per source repeated in each of them."""
    c = dialect.column
    sources = {
        link: [f"SELECT {c(link)} AS {c(KEY_SET_COLUMN)} FROM {dialect.staged(staged.name)}"]
    }
    for d in staged.merge.deletions if staged.merge else ():
        sources.setdefault(d.column, []).append(
            f"SELECT {c(KEY_SET_COLUMN)} FROM {dialect.key_set(d.key_set)}"
        )
    found = []
    for column, selects in sources.items():
        key_set = f"{name}_{column}"
        statement = f"CREATE OR REPLACE TABLE {dialect.key_set(key_set)} AS " + " UNION ".join(
            selects
        )
        found.append(MergedKeys(column, key_set, statement))
    return found


def merged_rows_filter(dialect: Dialect, merged: Sequence[MergedKeys], alias: str) -> str:
    """The rows of `alias` in any of the `merged` key sets."""
    return "(" + " OR ".join(m.condition(dialect, alias) for m in merged) + ")"


def _kept_rows_filter(dialect: Dialect, staged: StagedTable, alias: str) -> str:
    """The published rows a merge keeps: none of its deletions' keys (nulls are kept)."""
    conditions = [
        f"NOT EXISTS (SELECT 1 FROM {dialect.key_set(d.key_set)} k"
        f" WHERE k.{dialect.column(KEY_SET_COLUMN)} = {alias}.{dialect.column(d.column)})"
        for d in staged.merge.deletions  # type: ignore[union-attr]
    ]
    return " AND ".join(conditions) or "TRUE"


def _appended_rows_filter(dialect: Dialect, staged: StagedTable) -> str:
    """An append-only table takes only staged rows after the newest key it holds."""
    assert staged.merge is not None and staged.merge.append_after
    key = dialect.column(staged.merge.append_after)
    return f" WHERE {key} > (SELECT COALESCE(MAX({key}), -1) FROM {dialect.published(staged.name)})"


def relation(
    dialect: Dialect,
    staged: StagedTable,
    published_columns: Mapping[str, FieldType],
    columns: Sequence[str],
) -> str:
    """A query of `columns` over the rows the table holds once `staged` is published."""
    if staged.merge is None or not published_columns:
        present = [c for c in columns if c in staged.column_types]
        planned = [
            PlannedColumn(c, staged.column_types[c], staged.column_types[c]) for c in present
        ]
        missing = [PlannedColumn(c, FieldType.STRING, None) for c in columns if c not in present]
        return (
            f"SELECT {_select_list(dialect, planned + missing)} FROM {dialect.staged(staged.name)}"
        )
    plan = {c.name: c for c in plan_columns(published_columns, staged.columns).columns}
    kept = [
        PlannedColumn(c, plan[c].type, published_columns.get(c)) if c in plan
        else PlannedColumn(c, FieldType.STRING, None)
        for c in columns
    ]  # fmt: skip
    incoming = [
        PlannedColumn(c, plan[c].type, staged.column_types.get(c)) if c in plan
        else PlannedColumn(c, FieldType.STRING, None)
        for c in columns
    ]  # fmt: skip
    appended = _appended_rows_filter(dialect, staged) if staged.merge.append_after else ""
    return (
        f"SELECT {_select_list(dialect, kept)} FROM {dialect.published(staged.name)} p"
        f" WHERE {_kept_rows_filter(dialect, staged, 'p')}"
        f" UNION ALL SELECT {_select_list(dialect, incoming)}"
        f" FROM {dialect.staged(staged.name)}{appended}"
    )


@dataclass(frozen=True)
class PublishStatements:
    """How one table is published: `drift` first, then `data` (see the module docstring)."""

    plan: ColumnPlan
    drift: list[str] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    # Which data statements delete rows and which insert them (to count the rows written).
    deleting: frozenset[int] = frozenset()
    inserting: frozenset[int] = frozenset()
    # The table's comments once published (the materialization's column descriptions).
    comments: TableComments = field(default_factory=TableComments)
    # Right after `drift`: the comments of added columns, and those a widening dropped.
    drift_comments: list[str] = field(default_factory=list)
    # After `data`: every comment the table does not hold yet.
    comment_changes: list[str] = field(default_factory=list)


def publish_statements(
    dialect: Dialect,
    staged: StagedTable,
    published_columns: Mapping[str, FieldType],
    held: TableComments | None = None,
    *,
    today: date,
) -> PublishStatements:
    """The statements that publish `staged` over the table as it is (no columns: new), whose
    comments are `held`; a column schema drift adds is stamped with `today`."""
    held = held if held is not None else TableComments()
    plan = plan_columns(published_columns, staged.columns)
    comments = comments_for(staged.name, [c.name for c in plan.columns], held, today)
    target = dialect.published(staged.name)
    source = dialect.staged(staged.name)
    if staged.merge is None and dialect.transactional_ddl:
        # One statement in the publishing transaction replaces the table, rows and schema (and
        # drops its comments: every one is written again).
        replace = f"CREATE OR REPLACE TABLE {target} AS SELECT {_select_list(dialect, plan.columns)} FROM {source}"
        return PublishStatements(
            plan,
            data=[replace],
            inserting=frozenset({0}),
            comments=comments,
            comment_changes=dialect.comment_statements(staged.name, comments),
        )
    drift: list[str] = []
    if not published_columns:
        definitions = ", ".join(
            f"{dialect.column(c.name)} {dialect.sql_type(c.type)}" for c in plan.columns
        )
        drift.append(f"CREATE TABLE {target} ({definitions})")
    else:
        if plan.widened:  # first: a widening may rebuild the table from the columns it has
            widened = {name: new for name, (_, new) in plan.widened.items()}
            drift += dialect.widen_columns(staged.name, published_columns, widened)
        drift += [
            f"ALTER TABLE {target} ADD COLUMN {dialect.column(c.name)} {dialect.sql_type(c.type)}"
            for c in plan.columns
            if c.name in plan.added
        ]
    data: list[str] = []
    if staged.merge is None:
        data.append(f"DELETE FROM {target}")
    elif published_columns:
        data += [
            f"DELETE FROM {target} WHERE {dialect.column(d.column)} IN"
            f" (SELECT {dialect.column(KEY_SET_COLUMN)} FROM {dialect.key_set(d.key_set)})"
            for d in staged.merge.deletions
        ]
    deleting = frozenset(range(len(data)))
    written = [c for c in plan.columns if c.incoming_type is not None]
    names = ", ".join(dialect.column(c.name) for c in written)
    appended = ""
    if staged.merge is not None and staged.merge.append_after and published_columns:
        appended = _appended_rows_filter(dialect, staged)
    data.append(
        f"INSERT INTO {target} ({names}) SELECT {_select_list(dialect, written)}"
        f" FROM {source}{appended}"
    )
    drift_comments, kept = _drift_comments(dialect, staged.name, plan, held, comments)
    return PublishStatements(
        plan,
        drift,
        data,
        deleting,
        frozenset({len(data) - 1}),
        comments,
        drift_comments,
        dialect.comment_statements(staged.name, comments.differing_from(kept)),
    )


def _drift_comments(
    dialect: Dialect, table: str, plan: ColumnPlan, held: TableComments, comments: TableComments
) -> tuple[list[str], TableComments]:
    """The comments to write right after the drift statements, and what the table then holds.

    Where DDL commits on its own, a column is thus never left without its comment, even by a
    publish that fails later: a column added (null) keeps the day it first came, and a table a
    widening rebuilt gets its comments back before any reader relies on them.
    """
    statements: list[str] = []
    if plan.widened and not dialect.widening_keeps_comments:
        statements += dialect.comment_statements(table, held)
    added = {name: comments.columns[name] for name in plan.added}
    statements += dialect.comment_statements(table, TableComments(None, added))
    return statements, TableComments(held.table, {**held.columns, **added})
