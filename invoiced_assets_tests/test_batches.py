"""Long listings are written in batches, never held whole, and give exactly the same tables.

Proves: a table built in batches on disk equals the same records built in memory, column types,
drift notes and every value alike (spelling included), even when a late batch widens a column
(integers, then a fraction; text mixed with numbers, then an object) or brings a new field, for
random mixes of values in every type; the batch files are one schema and DuckDB writes them as
one table; a full job run with tiny batches writes every field exactly (field by field against
the emulator), removes each table's batch files once it is written and leaves none behind; a
write that fails mid-listing (a full disk) keeps that table's last good copy and still writes
the others. The allocator settings a step runs under (see `sync.tuning`) are restored after;
glibc's malloc is tuned where the C library is glibc.
"""

import errno
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest

from invoiced_assets.catalogue import INVOICES, FieldSpec, FieldType
from invoiced_assets.emulator import EmulatorServer
from invoiced_assets.tables import batches as table_data
from invoiced_assets.tables import shaping
from invoiced_assets.tables.batches import BatchDirectory, BatchFiles, FrameData
from invoiced_assets.tables.conversions import rewire
from invoiced_assets.tables.shaping import ObjectShaper, ShapedTable, TableBuilder

from .conftest import API_KEY, use_emulator
from .test_sync_job import query, run_sync
from .test_tables import write
from .warehouse_compare import assert_matches_truth


def drifting_invoices(count: int, seed: int) -> list[dict[str, Any]]:
    """Invoices whose fields change type part-way through, the way an API's fields drift."""
    rng = random.Random(seed)
    records = []
    for n in range(count):
        late = n >= count * 3 // 4
        record: dict[str, Any] = {
            "id": n + 1,
            "customer": rng.choice([None, rng.randint(1, 50)]),
            "total": rng.choice([rng.randint(0, 999), round(rng.uniform(0, 999), 2), None]),
            "draft": rng.choice([True, False, None]),
            "date": rng.randint(1_400_000_000, 1_700_000_000),
            # Integers, then fractions: integer -> decimal.
            "attempt_count": rng.random() / 3 if late and n % 5 == 0 else rng.randint(0, 4),
            # Text, then objects: text stays text, the objects as their JSON text.
            "notes": {"text": f"n{n}"} if late and n % 7 == 0 else rng.choice(["Zoë", None]),
            # Numbers, then objects: decimal -> json.
            "subtotal": [n] if late and n % 13 == 0 else rng.choice([5, 2.25, None]),
            # Booleans, then text: boolean -> string.
            "paid": "yes" if late and n % 11 == 0 else rng.choice([True, False]),
            "metadata": {"k": n} if n % 3 else {},
            "items": [
                {"id": n * 10 + i, "quantity": rng.choice([1, 2.5]), "amount": rng.randint(1, 9)}
                for i in range(rng.randint(0, 3))
            ],
        }
        if late:
            record["brand_new_field"] = rng.choice([1, "one", None])
        records.append(record)
    return records


def shape(records: list[dict[str, Any]], batches: BatchDirectory | None) -> dict[str, ShapedTable]:
    shaper = ObjectShaper(INVOICES, batches=batches)
    for start in range(0, len(records), 100):
        shaper.add_page(records[start : start + 100])
    return shaper.finish()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_batched_tables_equal_tables_built_whole(seed: int, tmp_path: Path) -> None:
    records = drifting_invoices(400, seed)
    whole = shape(records, None)
    with BatchDirectory(str(tmp_path), rows_per_batch=37) as batches:
        batched = shape(records, batches)
        assert set(batched) == set(whole)
        for name, table in whole.items():
            other = batched[name]
            assert isinstance(table.data, FrameData)
            if table.row_count > 37:
                assert isinstance(other.data, BatchFiles) and len(other.data.paths) > 1, name
            assert other.columns == table.columns, name
            assert other.widened == table.widened and other.unknown_columns == table.unknown_columns
            assert other.row_count == table.row_count
            pd.testing.assert_frame_equal(other.frame, table.frame, check_dtype=True)
            # Every batch file has the final schema, so they read as one dataset.
            if isinstance(other.data, BatchFiles):
                assert (
                    len({str(table_data._read_batch_file(p).schema) for p in other.data.paths}) == 1
                )
    assert not any(tmp_path.iterdir()), "the batch directory is removed"
    assert whole["invoice_line_items"].row_count > 37
    widened = whole["invoices"].widened
    assert widened["attempt_count"] == (FieldType.INTEGER, FieldType.DECIMAL)
    assert widened["subtotal"] == (FieldType.DECIMAL, FieldType.JSON)
    assert "notes" not in widened
    assert widened["paid"] == (FieldType.BOOLEAN, FieldType.STRING)


VALUE_POOL = [None, True, False, 0, 7, -3, 2**40, 1.5, 0.1, 12.0, 1e-05, 3e-7, 1e16]
VALUE_POOL += ["a", "Zoë", "", "42", {}, [], {"k": 1}, [1, "x"]]


def build_table(pages: list[list[dict[str, Any]]], batches: BatchDirectory | None) -> ShapedTable:
    fields = [FieldSpec(f"declared_{t.value}", t) for t in FieldType]
    builder = TableBuilder(
        "t", fields, key=("pk",), leading=(FieldSpec("pk", FieldType.INTEGER),), batches=batches
    )
    for page in pages:
        builder.add_rows(page, [(i,) for i in range(len(page))])
    return builder.finish()


def test_any_mix_of_values_gives_the_same_table_in_batches(tmp_path: Path) -> None:
    """Random pages of any values in every declared type and in unknown fields, in batches of
    1 to 5 rows: text mixed with numbers then objects, tiny floats turning to text, and so on."""
    rng = random.Random(8)
    names = [f"declared_{t.value}" for t in FieldType] + ["unknown_1", "unknown_2"]
    for _ in range(400):
        pages = [
            [
                {n: rng.choice(rng.sample(VALUE_POOL, 3)) for n in names if rng.random() < 0.5}
                for _ in range(rng.randint(0, 4))
            ]
            for _ in range(rng.randint(1, 6))
        ]
        whole = build_table(pages, None)
        with BatchDirectory(str(tmp_path), rows_per_batch=rng.randint(1, 5)) as batches:
            batched = build_table(pages, batches)
            assert batched.columns == whole.columns, pages
            assert (
                batched.widened == whole.widened
                and batched.unknown_columns == whole.unknown_columns
            )
            pd.testing.assert_frame_equal(batched.frame, whole.frame, obj=str(pages))


def test_batched_table_writes_like_the_whole_table(tmp_path: Path) -> None:
    records = drifting_invoices(300, seed=4)
    whole_db, batched_db = tmp_path / "whole.duckdb", tmp_path / "batched.duckdb"
    assert write(whole_db, shape(records, None)).success
    with BatchDirectory(str(tmp_path), rows_per_batch=50) as batches:
        assert write(batched_db, shape(records, batches)).success
    for table in ("invoices", "invoice_line_items"):
        sql = f"select * from invoiced.{table} order by all"
        assert query(batched_db, sql) == query(whole_db, sql)
        assert len(query(batched_db, sql)) == len(query(whole_db, sql)) > 0


def widened(values: list[Any], source: FieldType, target: FieldType) -> list[Any]:
    return rewire(pa.array(values), source, target).to_pylist()


def test_widening_a_batch_spells_values_as_one_batch_would() -> None:
    assert widened([1, None, 2**62], FieldType.INTEGER, FieldType.DECIMAL) == [
        "1",
        None,
        str(2**62),
    ]
    assert widened([True, False], FieldType.BOOLEAN, FieldType.STRING) == ["true", "false"]
    assert widened(['Zoë "x"'], FieldType.STRING, FieldType.JSON) == ['"Zoë \\"x\\""']
    # Decimal text is `repr` of what the API sent; as text or JSON it is spelled as JSON does.
    assert widened(["5e-05", "1.25", "7"], FieldType.DECIMAL, FieldType.STRING) == [
        "0.00005",
        "1.25",
        "7",
    ]
    # Text mixed with other values was held as JSON text: strings come back as they were.
    assert widened(['"abc"', "42", "true"], FieldType.JSON, FieldType.STRING) == [
        "abc",
        "42",
        "true",
    ]
    nulls = rewire(pa.array([None, None], pa.string()), FieldType.STRING, FieldType.INTEGER)
    assert nulls.type == pa.int64() and nulls.null_count == 2


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """Batches of 97 rows, in a temporary directory of the test's own; the files written."""
    batch_root = tmp_path / "tmp"
    batch_root.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(batch_root))
    monkeypatch.setattr(table_data, "BATCH_ROWS", 97)
    written: list[Path] = []
    original = shaping.write_batch

    def recording_write_batch(path: Path, columns: Any) -> Any:
        written.append(path)
        return original(path, columns)

    monkeypatch.setattr(shaping, "write_batch", recording_write_batch)
    return written


def test_a_job_in_small_batches_writes_every_field_exactly(
    small_batches: list[Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    released: list[Path] = []
    release = BatchFiles.release

    def recording_release(self: BatchFiles) -> None:
        release(self)
        released.extend(path for path in self.paths if not path.exists())

    monkeypatch.setattr(BatchFiles, "release", recording_release)
    with EmulatorServer(scale=0.5, seed=3, api_key=API_KEY) as server:
        path = tmp_path / "warehouse.duckdb"
        use_emulator(monkeypatch, server, path)
        assert run_sync().success
        assert assert_matches_truth(server, path) > 100_000
    assert len(small_batches) > 100
    # Each table's files go as soon as it is written, not only when the run ends.
    assert set(released) == set(small_batches)
    assert not any((tmp_path / "tmp").iterdir()), "every batch file is removed after the run"


def test_a_failed_batch_write_keeps_the_last_good_table(
    small_batches: list[Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with EmulatorServer(scale=0.2, seed=5, api_key=API_KEY) as server:
        path = tmp_path / "warehouse.duckdb"
        use_emulator(monkeypatch, server, path, INVOICED_STEP_RETRIES="0")
        assert run_sync().success
        before = query(path, "select * from invoiced.invoices order by id")
        server.mutate("invoices", insert=5, update=5)

        def disk_full(path: Path, columns: Any) -> Any:
            if path.name.startswith("invoice"):
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return table_data.write_batch(path, columns)

        monkeypatch.setattr(shaping, "write_batch", disk_full)
        result = run_sync()
        assert not result.success
        failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
        message = failures[0].step_failure_data.error.message
        assert "invoices" in message and "No space left on device" in message
        assert query(path, "select * from invoiced.invoices order by id") == before
        written = {
            m.asset_key.path[-1] for m in result.asset_materializations_for_node("invoiced_tables")
        }
        assert "customers" in written and "invoices" not in written
    assert not any((tmp_path / "tmp").iterdir()), "a failed run removes its batch files too"


def test_the_step_allocator_settings_are_restored_after_it() -> None:
    import gc

    from invoiced_assets.sync.tuning import STEP_GC_THRESHOLD, tuned_for_sync

    threshold, pool = gc.get_threshold(), pa.default_memory_pool().backend_name
    with pytest.raises(RuntimeError), tuned_for_sync():
        assert gc.get_threshold()[0] == STEP_GC_THRESHOLD
        assert pa.default_memory_pool().backend_name == "system"
        raise RuntimeError("a failed step")
    assert gc.get_threshold() == threshold
    assert pa.default_memory_pool().backend_name == pool


def test_glibc_malloc_is_tuned_where_the_c_library_is_glibc() -> None:
    import platform

    from invoiced_assets.sync.tuning import tune_glibc_malloc

    is_glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert tune_glibc_malloc() is is_glibc
