"""History tables (INVOICED_HISTORY): every version of a record, kept by the warehouse in SQL.

`<table>_history` holds the table's columns plus `valid_from`, `valid_to` (null for the current
version), `is_current`, `is_deleted` (the version ended because the record was deleted) and
`record_hash` (a hash of the record's columns). It is maintained in the transaction that
publishes the table, from the published table itself once its rows are in, so a full load and
an incremental merge are versioned alike, deletions come from the same logic as the table's, and
the two can never disagree:

1. a version opens for every published row whose hash no current version has (a new record, a
   changed one, one deleted and inserted again), from the row's change time;
2. the current version it replaces closes at that time; a current version whose record is gone
   closes at the record's deletion time, marked `is_deleted`.

A record's change time is its own `updated_at`; a child row's (a line item) its parent's
`updated_at`. A deletion's time is the deletion event's `timestamp` (for records deleted with
their customer or invoice, with no event of their own, that parent's deletion event; for a line
item removed from an invoice, the invoice's new `updated_at`). Failing those (an object without
`updated_at`, an event older than the events read), the time of the sync that saw the change. A
time that would not come after the version it follows is moved to just after it, so windows never
overlap. A full load of an unchanged account opens no version.

An incremental merge changes only the rows of the records it staged or deleted, so the
statements and the checks read only those records' rows and versions (`Scope`): the others are as the last
publish left them and checked them (the checks also compare the count of current versions with
the table's). A full load, and a merge that widened a column, compare every row.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from invoiced_assets.catalogue import FieldType

HISTORY_SUFFIX = "_history"
VALID_FROM, VALID_TO = "valid_from", "valid_to"
IS_CURRENT, IS_DELETED, RECORD_HASH = "is_current", "is_deleted", "record_hash"
META_COLUMNS: Mapping[str, FieldType] = {
    VALID_FROM: FieldType.TIMESTAMP,
    VALID_TO: FieldType.TIMESTAMP,
    IS_CURRENT: FieldType.BOOLEAN,
    IS_DELETED: FieldType.BOOLEAN,
    RECORD_HASH: FieldType.STRING,
}
META_DESCRIPTIONS: Mapping[str, str] = {
    VALID_FROM: "When this version began: the record's `updated_at` (its parent's for a child"
    " row), else the time of the sync that saw it (UTC).",
    VALID_TO: "When this version ended: the next version's `valid_from`, or the deletion's time"
    " (UTC); null while it is the current version.",
    IS_CURRENT: "Whether this is the record's current version (at most one per key).",
    IS_DELETED: "Whether this version ended because the record was deleted.",
    RECORD_HASH: "MD5 of the record's columns: a new hash is a new version.",
}
# What the history check (`checks.HISTORY_CHECK`, on the versioned table's asset) verifies,
# each as the count of offending rows its query gives (0 passes).
ONE_CURRENT = "one_current_version_per_key"
NO_OVERLAP = "no_overlapping_versions"
CURRENT_MATCHES = "current_versions_match_table"
HISTORY_INVARIANTS = (ONE_CURRENT, NO_OVERLAP, CURRENT_MATCHES)


def history_table(table: str) -> str:
    return f"{table}{HISTORY_SUFFIX}"


@dataclass(frozen=True)
class DeletionSource:
    """Where a gone row's deletion time is found: the deletion events of `object` whose record
    id is the row's `column`."""

    object: str
    column: str


@dataclass(frozen=True)
class HistorySpec:
    """How one published table is versioned."""

    table: str
    key: tuple[str, ...]
    # The row's change time: a column of its own (`updated_at`), or of its parent's row.
    changed_at: str | None = None
    parent: tuple[str, str, str] | None = None  # (parent table, parent key, this row's column)
    deletions: tuple[DeletionSource, ...] = ()

    @property
    def name(self) -> str:
        return history_table(self.table)


@dataclass(frozen=True)
class DeletionTime:
    object: str
    record: str
    at: int  # UNIX seconds


# The rows an incremental merge may have changed, as a condition on a row alias (their records'
# keys staged once: see `sql.merged_keys`); None: every row.
Scope = Callable[[str], str]


def _within(scope: Scope | None, alias: str) -> str:
    return "TRUE" if scope is None else scope(alias)


class HistoryDialect(Protocol):
    """What the statements need of a `sql.Dialect` (see `duckdb_destination`, `snowflake_...`)."""

    def column(self, name: str) -> str: ...
    def published(self, table: str) -> str: ...
    def sql_type(self, field_type: FieldType) -> str: ...
    def convert(self, value: str, source: FieldType, target: FieldType) -> str: ...
    def widen_columns(
        self, table: str, columns: Mapping[str, FieldType], widened: Mapping[str, FieldType]
    ) -> list[str]: ...


def timestamp_literal(dialect: HistoryDialect, seconds: int) -> str:
    text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"CAST('{text}' AS {dialect.sql_type(FieldType.TIMESTAMP)})"


def record_hash(dialect: HistoryDialect, columns: Mapping[str, FieldType], alias: str) -> str:
    """A hash of a row's columns: name, length and text of each non-null value.

    A null adds nothing, so a column that appears (all null) changes no hash."""
    parts = []
    for name, field_type in sorted(columns.items()):
        # The value's text as the warehouse spells it (JSON as its JSON text).
        text = dialect.convert(f"{alias}.{dialect.column(name)}", field_type, FieldType.STRING)
        parts.append(f"COALESCE('{name}=' || LENGTH({text}) || ':' || {text}, '')")
    # One flat CONCAT of parts that are never null: the same text as chaining them with `||`,
    # and DuckDB plans it in about half the time (its optimizer walks a chain of 35 columns'
    # `||` once per nesting level), which is most of what an incremental run's history costs.
    joined = f"CONCAT({', '.join(parts)})" if parts else "''"
    return f"MD5({joined})"


def keys_equal(dialect: HistoryDialect, key: Sequence[str], left: str, right: str) -> str:
    return " AND ".join(f"{left}.{dialect.column(k)} = {right}.{dialect.column(k)}" for k in key)


def _parent_change(
    dialect: HistoryDialect, spec: HistorySpec, parents: Sequence[str], row: str
) -> tuple[str, str]:
    """(joins, time): a child row's change time, its parent's `updated_at`, from the first of
    `parents` (relations of the parent's rows: staged, then published) that has the parent."""
    assert spec.parent is not None
    _, parent_key, column = spec.parent
    c = dialect.column
    ts = dialect.sql_type(FieldType.TIMESTAMP)
    joins = "".join(
        f" LEFT JOIN {relation} par{i} ON par{i}.{c(parent_key)} = {row}.{c(column)}"
        for i, relation in enumerate(parents)
    )
    times = ", ".join(f"CAST(par{i}.{c('updated_at')} AS {ts})" for i in range(len(parents)))
    return joins, f"COALESCE({times})"


def _new_rows(
    dialect: HistoryDialect,
    spec: HistorySpec,
    columns: Mapping[str, FieldType],
    scope: Scope | None,
    parents: Sequence[str],
) -> str:
    """The published rows (of the records in `scope`), each with its hash and change time."""
    selected = ", ".join(f"p.{dialect.column(c)}" for c in columns)
    changed = "NULL"
    join = ""
    if spec.parent is not None:
        join, changed = _parent_change(dialect, spec, parents, "p")
    elif spec.changed_at is not None:
        changed = f"p.{dialect.column(spec.changed_at)}"
    ts = dialect.sql_type(FieldType.TIMESTAMP)
    return (
        f"SELECT {selected}, {record_hash(dialect, columns, 'p')} AS h__hash,"
        f" CAST({changed} AS {ts}) AS h__changed FROM {dialect.published(spec.table)} p{join}"
        f" WHERE {_within(scope, 'p')}"
    )


def first_after(previous: str, candidates: Sequence[str], now: str) -> str:
    """The first candidate time after `previous` (else now, else just after `previous`)."""
    whens = " ".join(
        f"WHEN {c} IS NOT NULL AND ({previous} IS NULL OR {c} > {previous}) THEN {c}"
        for c in [*candidates, now]
    )
    return f"CASE {whens} ELSE {previous} + INTERVAL '1 second' END"


VALUES_ROWS = 10_000


def deletion_times_relation(
    dialect: HistoryDialect, times: Sequence[DeletionTime], objects: Sequence[str]
) -> str:
    """The deletion events' times of `objects` as a relation (object, record, at), the latest
    per record."""
    ts = dialect.sql_type(FieldType.TIMESTAMP)
    text = dialect.sql_type(FieldType.STRING)
    wanted = set(objects)
    rows = [
        f"('{t.object}', '{_quoted(t.record)}', {timestamp_literal(dialect, t.at)})"
        for t in times
        if t.object in wanted
    ]
    if not rows:
        return (
            f"SELECT CAST(NULL AS {text}) AS d_object, CAST(NULL AS {text}) AS d_record,"
            f" CAST(NULL AS {ts}) AS d_at WHERE 1 = 0"
        )
    # Snowflake takes at most 16,384 rows in one VALUES list.
    lists = [
        "SELECT * FROM (VALUES "
        + ", ".join(rows[start : start + VALUES_ROWS])
        + ") AS v (d_object, d_record, d_at)"
        for start in range(0, len(rows), VALUES_ROWS)
    ]
    return (
        "SELECT d_object, d_record, MAX(d_at) AS d_at FROM ("
        + " UNION ALL ".join(lists)
        + ") d GROUP BY d_object, d_record"
    )


def _quoted(text: str) -> str:
    return text.replace("'", "''")


def insert_versions(
    dialect: HistoryDialect, spec: HistorySpec, columns: Mapping[str, FieldType]
) -> str:
    """`INSERT INTO` the history table, its table's columns then its own (a SELECT follows)."""
    c = dialect.column
    names = ", ".join(c(n) for n in [*columns, *META_COLUMNS])
    return f"INSERT INTO {dialect.published(spec.name)} ({names})"


def deletion_joins(
    dialect: HistoryDialect, spec: HistorySpec, deletions: str, row: str
) -> tuple[list[str], list[str]]:
    """(joins, times): for each of the spec's deletion sources, the deletion time of the record
    `row` names, from `deletions` (a relation d_object, d_record, d_at)."""
    text = dialect.sql_type(FieldType.STRING)
    joins, times = [], []
    for index, source in enumerate(spec.deletions):
        alias = f"d{index}"
        joins.append(
            f" LEFT JOIN ({deletions}) {alias} ON {alias}.d_object = '{source.object}'"
            f" AND {alias}.d_record = CAST({row}.{dialect.column(source.column)} AS {text})"
        )
        times.append(f"{alias}.d_at")
    return joins, times


def maintenance_statements(
    dialect: HistoryDialect,
    spec: HistorySpec,
    columns: Mapping[str, FieldType],
    deletion_times: Sequence[DeletionTime],
    now: int,
    scope: Scope | None = None,
    parents: Sequence[str] = (),
) -> tuple[str, str]:
    """(open new versions, close replaced and deleted ones), to run in that order; for the
    records in `scope` only (None: every record). `parents`: where a child row's parent is
    found (default: the published parent table)."""
    if spec.parent is not None and not parents:
        parents = [dialect.published(spec.parent[0])]
    h = dialect.published(spec.name)
    c = dialect.column
    now_sql = timestamp_literal(dialect, now)
    first_key = c(spec.key[0])
    new = _new_rows(dialect, spec, columns, scope, parents)
    # The current versions of the records in scope, filtered before any join: the scope is a few
    # records of an incremental merge, the history table every version of every record.
    current = f"(SELECT * FROM {h} cur WHERE cur.{c(IS_CURRENT)} AND {_within(scope, 'cur')})"
    # A changed record's new version begins here, strictly after the version it replaces.
    replaced_at = first_after(f"cur.{c(VALID_FROM)}", ["n.h__changed"], now_sql)
    opened = (
        f"{insert_versions(dialect, spec, columns)}"
        f" SELECT {', '.join(f'n.{c(n)}' for n in columns)}, {replaced_at}, NULL, TRUE, FALSE,"
        f" n.h__hash"
        f" FROM ({new}) n LEFT JOIN {current} cur ON {keys_equal(dialect, spec.key, 'cur', 'n')}"
        f" WHERE cur.{first_key} IS NULL OR cur.{c(RECORD_HASH)} <> n.h__hash"
    )
    deletions = deletion_times_relation(
        dialect, deletion_times, [source.object for source in spec.deletions]
    )
    joins, candidates = deletion_joins(dialect, spec, deletions, "cur")
    if spec.parent is not None:
        parent_joins, parent_time = _parent_change(dialect, spec, parents, "cur")
        joins.append(parent_joins)
        candidates.append(parent_time)
    gone_at = first_after(f"cur.{c(VALID_FROM)}", candidates, now_sql)
    # Run after `opened`, and without hashing again: a record `opened` gave a new version has two
    # current ones, and the older ends where the newer begins; a record with no published row
    # is gone, and ends at its deletion's time.
    kept = ", ".join(f"p.{c(k)}" for k in spec.key)
    published = f"SELECT {kept} FROM {dialect.published(spec.table)} p WHERE {_within(scope, 'p')}"
    closing = (
        f"SELECT {', '.join(f'cur.{c(k)}' for k in spec.key)}, cur.{c(RECORD_HASH)} AS h__old,"
        f" nv.{first_key} IS NULL AS h__gone,"
        f" CASE WHEN nv.{first_key} IS NOT NULL THEN nv.{c(VALID_FROM)} ELSE {gone_at} END"
        f" AS h__ends"
        f" FROM {current} cur"
        f" LEFT JOIN {current} nv ON {keys_equal(dialect, spec.key, 'nv', 'cur')}"
        f" AND nv.{c(VALID_FROM)} > cur.{c(VALID_FROM)}"
        f" LEFT JOIN ({published}) pr ON {keys_equal(dialect, spec.key, 'pr', 'cur')}"
        + "".join(joins)
        + f" WHERE nv.{first_key} IS NOT NULL OR pr.{first_key} IS NULL"
    )
    closed = (
        f"UPDATE {h} AS t SET {c(VALID_TO)} = x.h__ends, {c(IS_CURRENT)} = FALSE,"
        f" {c(IS_DELETED)} = x.h__gone FROM ({closing}) x"
        f" WHERE t.{c(IS_CURRENT)} AND {keys_equal(dialect, spec.key, 't', 'x')}"
        f" AND t.{c(RECORD_HASH)} = x.h__old"
    )
    return opened, closed


def checks_query(
    dialect: HistoryDialect,
    spec: HistorySpec,
    columns: Mapping[str, FieldType],
    scope: Scope | None = None,
) -> str:
    """The history check in one query of one row: the offending rows of each invariant in
    `HISTORY_INVARIANTS` order (0 passes), over the records in `scope` (None: every record; the
    current versions are counted in full), then the history table's rows. One statement, as a
    statement's planning costs more than its reading of a few records."""
    h = dialect.published(spec.name)
    t = dialect.published(spec.table)
    c = dialect.column
    keys = ", ".join(c(k) for k in spec.key)
    listed = ", ".join(f"t.{c(k)}" for k in spec.key)
    overlap = (
        f"SELECT {c(VALID_FROM)} AS f, {c(VALID_TO)} AS t_,"
        f" LEAD({c(VALID_FROM)}) OVER (PARTITION BY {keys} ORDER BY {c(VALID_FROM)}) AS nf"
        f" FROM {h} t WHERE {_within(scope, 't')}"
    )
    published = (
        f"SELECT {listed}, {record_hash(dialect, columns, 't')} AS rh FROM {t} t"
        f" WHERE {_within(scope, 't')}"
    )
    current = (
        f"SELECT {listed}, t.{c(RECORD_HASH)} AS rh FROM {h} t"
        f" WHERE t.{c(IS_CURRENT)} AND {_within(scope, 't')}"
    )
    counts = f"ABS((SELECT COUNT(*) FROM {t}) - (SELECT COUNT(*) FROM {h} WHERE {c(IS_CURRENT)}))"
    offending = {
        ONE_CURRENT: (
            f"SELECT COUNT(*) FROM (SELECT {keys} FROM {h} t WHERE t.{c(IS_CURRENT)}"
            f" AND {_within(scope, 't')} GROUP BY {keys} HAVING COUNT(*) > 1) x"
        ),
        NO_OVERLAP: (
            f"SELECT COUNT(*) FROM ({overlap}) x WHERE (x.t_ IS NOT NULL AND x.t_ <= x.f)"
            " OR (x.nf IS NOT NULL AND (x.t_ IS NULL OR x.nf < x.t_))"
        ),
        # A published row without a current version of the same hash, or the other way round
        # (one join, so the hash of the published rows is written and planned once).
        CURRENT_MATCHES: (
            f"SELECT COUNT(*) + {counts} FROM ({published}) a FULL OUTER JOIN ({current}) b"
            f" ON {keys_equal(dialect, spec.key, 'a', 'b')} AND a.rh = b.rh"
            f" WHERE a.{c(spec.key[0])} IS NULL OR b.{c(spec.key[0])} IS NULL"
        ),
    }
    figures = [f"({offending[check]})" for check in HISTORY_INVARIANTS]
    return f"SELECT {', '.join(figures)}, (SELECT COUNT(*) FROM {h})"


def check_figures(row: Sequence[Any]) -> tuple[dict[str, int], int]:
    """(offending rows by check, the history table's rows) from a `checks_query` row."""
    offending = {check: int(row[i]) for i, check in enumerate(HISTORY_INVARIANTS)}
    return offending, int(row[len(HISTORY_INVARIANTS)])


def table_statements(
    dialect: HistoryDialect,
    spec: HistorySpec,
    columns: Mapping[str, FieldType],
    existing: Mapping[str, FieldType],
) -> list[str]:
    """What gives the history table the published table's columns (and its own)."""
    h = dialect.published(spec.name)
    c = dialect.column
    if not existing:
        listed = {**columns, **META_COLUMNS}
        definitions = ", ".join(f"{c(n)} {dialect.sql_type(t)}" for n, t in listed.items())
        return [f"CREATE TABLE {h} ({definitions})"]
    # A published column widened since (see `tables.drift`) is widened here too; its values'
    # text changes with its type, so each record gets one new version.
    widened = {n: t for n, t in columns.items() if n in existing and existing[n] is not t}
    statements = dialect.widen_columns(spec.name, existing, widened) if widened else []
    return statements + [
        f"ALTER TABLE {h} ADD COLUMN {c(n)} {dialect.sql_type(t)}"
        for n, t in columns.items()
        if n not in existing
    ]
