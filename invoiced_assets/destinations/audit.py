"""The checks' SQL: figures computed by the destination over a relation, never in Python.

Each function takes a query (`sql.relation`: a staged table, the result of a merge, or a
published table) and returns the `checks` outcome computed from the figures the warehouse sends
back: a few numbers and at most ten example keys, whatever the table's size.
"""

from collections.abc import Sequence

from invoiced_assets import checks
from invoiced_assets.destinations.protocol import SqlSession
from invoiced_assets.destinations.sql import Dialect

EXAMPLES = 5


def _number(value: object) -> int:
    return int(value) if value is not None else 0  # type: ignore[call-overload]


def row_count(session: SqlSession, relation: str) -> int:
    return _number(session.rows(f"SELECT COUNT(*) FROM ({relation}) r")[0][0])


def primary_key(
    session: SqlSession, dialect: Dialect, relation: str, key: Sequence[str]
) -> checks.CheckOutcome:
    """Nulls and repeats of `key` in `relation` (whose columns include the key's)."""
    columns = [dialect.column(name) for name in key]
    any_null = " OR ".join(f"{c} IS NULL" for c in columns)
    none_null = " AND ".join(f"{c} IS NOT NULL" for c in columns)
    listed = ", ".join(columns)
    repeats = (
        f"SELECT {listed}, COUNT(*) AS n FROM ({relation}) r WHERE {none_null}"
        f" GROUP BY {listed} HAVING COUNT(*) > 1"
    )
    rows, nulls, duplicated = session.rows(
        f"SELECT COUNT(*), SUM(CASE WHEN {any_null} THEN 1 ELSE 0 END),"
        f" (SELECT COALESCE(SUM(n), 0) FROM ({repeats}) d) FROM ({relation}) r"
    )[0]
    examples = []
    if _number(duplicated):
        examples = session.rows(
            f"SELECT {listed} FROM ({repeats}) d ORDER BY {listed} LIMIT {EXAMPLES}"
        )
    return checks.primary_key_outcome(
        key,
        rows=_number(rows),
        null_keys=_number(nulls),
        duplicated_rows=_number(duplicated),
        examples=[dict(zip(key, example, strict=True)) for example in examples],
    )


def references(
    session: SqlSession,
    dialect: Dialect,
    relation: str,
    column: str,
    target_relation: str,
    target_column: str,
    *,
    target: str,
    nullable: bool = True,
) -> checks.CheckOutcome:
    """Values of `column` in `relation` that are not values of `target_column` in the target."""
    value, key = dialect.column(column), dialect.column(target_column)
    joined = (
        f"({relation}) r LEFT JOIN (SELECT DISTINCT {key} AS t FROM ({target_relation}) x) k"
        f" ON r.{value} = k.t"
    )
    present, nulls, unresolved = session.rows(
        f"SELECT COUNT(r.{value}), SUM(CASE WHEN r.{value} IS NULL THEN 1 ELSE 0 END),"
        f" SUM(CASE WHEN r.{value} IS NOT NULL AND k.t IS NULL THEN 1 ELSE 0 END) FROM {joined}"
    )[0]
    examples = []
    if _number(unresolved):
        examples = session.rows(
            f"SELECT DISTINCT r.{value} FROM {joined} WHERE r.{value} IS NOT NULL"
            f" AND k.t IS NULL ORDER BY 1 LIMIT {2 * EXAMPLES}"
        )
    return checks.references_outcome(
        references=_number(present),
        null_references=_number(nulls),
        unresolved=_number(unresolved),
        examples=[example for (example,) in examples],
        target=target,
        nullable=nullable,
    )
