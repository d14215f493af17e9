"""What the sync step needs of a destination, and what it hands one: plain data, no SQL.

A run never writes into the published tables directly. For each object it *stages* what it read
(`StagedObject`: a staged table per table, plus the key sets an incremental merge deletes by),
*audits* the result in SQL (`sql.relation`, `audit`), and only then hands the object to the IO
manager, which *publishes* all of its tables in one transaction (`publication.publish_object`).
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from invoiced_assets.catalogue import FieldType
from invoiced_assets.destinations.backfill import Snapshots
from invoiced_assets.destinations.history import DeletionTime, HistorySpec
from invoiced_assets.tables.docs import TableComments
from invoiced_assets.tables.drift import ColumnPlan
from invoiced_assets.tables.shaping import Column


@dataclass(frozen=True)
class RowDeletion:
    """In a merge, the published rows whose `column` is one of a staged key set's keys."""

    column: str
    key_set: str


@dataclass(frozen=True)
class Merge:
    """How an incremental run's staged rows go into the published table.

    The rows of `deletions` go (records changed or deleted since the last load, with their child
    rows; for per-customer listings, the rows of the customers read), then every staged row is
    inserted. An append-only table (`append_after`: its key) deletes nothing and takes only the
    staged rows after the newest key it holds.
    """

    deletions: tuple[RowDeletion, ...] = ()
    append_after: str | None = None


@dataclass(frozen=True)
class StagedTable:
    """One table's rows as staged, with the types they were staged in."""

    name: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    rows: int
    merge: Merge | None = None  # None: the published table is replaced whole
    # Columns whose values did not fit the catalogue's type in this load: name -> (from, to).
    widened: Mapping[str, tuple[FieldType, FieldType]] = field(default_factory=dict)

    @property
    def column_types(self) -> dict[str, FieldType]:
        return {c.name: c.type for c in self.columns}


@dataclass(frozen=True)
class StagedObject:
    """Everything one object's read staged: its tables, published together or not at all."""

    name: str
    tables: Mapping[str, StagedTable]
    # The published tables versioned in `<table>_history` (INVOICED_HISTORY), in the same
    # transaction, with the deletion events' times and the sync's (see `history`).
    history: tuple[HistorySpec, ...] = ()
    deletion_times: tuple[DeletionTime, ...] = ()
    synced_at: int = 0
    # The versioned tables whose history table was published with their table's last publish:
    # an incremental merge may version only the records it touched (see `history`).
    history_followed: frozenset[str] = frozenset()
    # A backfill run's states from the events log (see `backfill`): versions before the first.
    snapshots: Snapshots | None = None


@dataclass(frozen=True)
class PublishedSchema:
    """A published table's columns by API name, and the comments it holds (empty: no table)."""

    columns: dict[str, FieldType]
    comments: TableComments

    @classmethod
    def absent(cls) -> "PublishedSchema":
        """A table that does not exist."""
        return cls({}, TableComments())


def schemas_by_table(
    rows: Iterable[tuple[str, str, FieldType, str | None, str | None]],
) -> dict[str, PublishedSchema]:
    """Each table's schema from `(table, column, type, column comment, table comment)` rows in
    column order (the rows of one query over `information_schema`)."""
    columns: dict[str, dict[str, FieldType]] = {}
    comments: dict[str, dict[str, str]] = {}
    table_comments: dict[str, str | None] = {}
    for table, column, field_type, column_comment, table_comment in rows:
        columns.setdefault(table, {})[column] = field_type
        if column_comment:
            comments.setdefault(table, {})[column] = column_comment
        table_comments[table] = table_comment
    return {
        table: PublishedSchema(held, TableComments(table_comments[table], comments.get(table, {})))
        for table, held in columns.items()
    }


@dataclass(frozen=True)
class PublishedColumn:
    """A published column as the warehouse shows it: stored name, SQL type and comment."""

    name: str
    sql_type: str
    description: str | None


@dataclass(frozen=True)
class PublishedTable:
    """What publishing a table did: its columns, and the rows it holds and wrote."""

    name: str
    location: str
    plan: ColumnPlan
    columns: Sequence[PublishedColumn]
    rows: int
    rows_deleted: int
    rows_inserted: int
    # More of what the publish did, shown on the materialization (its history table's versions).
    details: Mapping[str, Any] = field(default_factory=dict)


# Called with each statement of a publish just before it runs (logging, tests that stop there).
StatementObserver = Callable[[str], None]


class SqlSession(Protocol):
    """One open connection to the warehouse."""

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Run a query and fetch every row."""
        ...

    def change(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement and return the number of rows it changed."""
        ...


class Destination(Protocol):
    """A warehouse that stages, audits and publishes (DuckDB, Snowflake)."""

    @property
    def dialect(self) -> Any: ...

    def session(self) -> AbstractContextManager[SqlSession]:
        """The step's held session, or a new one."""
        ...

    def held_session(self) -> AbstractContextManager[SqlSession]:
        """A session every `session()` uses until it is closed (one per sync step)."""
        ...

    def clear_staging(self) -> None:
        """Drop whatever earlier runs left staged (a failed audit's data, a killed run's)."""
        ...

    def published_columns(self, session: SqlSession, table: str) -> dict[str, FieldType]:
        """The published table's columns by API name (empty when it does not exist)."""
        ...

    def published_comments(self, session: SqlSession, table: str) -> TableComments:
        """The comments the published table and its columns hold (by API name)."""
        ...

    def forget_columns(self, tables: Iterable[str]) -> None:
        """The tables' columns may have changed: read them again at the next look."""
        ...

    def stage(
        self, tables: Sequence[tuple[str, Any]], key_sets: Mapping[str, Sequence[Any]]
    ) -> None:
        """Stage each `(name, ShapedTable)` and each key set, replacing earlier ones."""
        ...

    def drop_staged_statements(self, staged: StagedObject) -> list[str]:
        """What drops an object's staged tables and key sets once it is published."""
        ...

    def table_location(self, table: str) -> str: ...

    @property
    def staging_location(self) -> str:
        """Where staged tables are kept, for messages."""
        ...
