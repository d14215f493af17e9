"""Print every Invoiced table in the DuckDB warehouse with its row count.

Usage: python -m invoiced_assets.report  (reads INVOICED_DUCKDB_PATH, default data/warehouse.duckdb)
"""

import sys

import duckdb

from invoiced_assets.settings import SCHEMA, load_settings


def table_counts(database: str, schema: str = SCHEMA) -> list[tuple[str, int]]:
    with duckdb.connect(database, read_only=True) as connection:
        tables = connection.execute(
            "select table_name from information_schema.tables where table_schema = ?"
            " order by table_name",
            [schema],
        ).fetchall()
        return [
            (name, connection.execute(f'select count(*) from "{schema}"."{name}"').fetchall()[0][0])
            for (name,) in tables
        ]


def main() -> int:
    path = load_settings().duckdb_path
    if not path.exists():
        print(f"No warehouse at {path}: run the invoiced_sync job first.", file=sys.stderr)
        return 1
    counts = table_counts(str(path))
    width = max((len(name) for name, _ in counts), default=10)
    print(f"Tables in {path} (schema {SCHEMA}):")
    for name, rows in counts:
        print(f"  {SCHEMA}.{name:<{width}}  {rows:>9,} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
