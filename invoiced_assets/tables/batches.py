"""Where a shaped table's rows live until a destination writes them: in memory, or in batches
on local disk.

A long listing (79,000 events at scale 5, each carrying its object as JSON) is not held whole:
`shaping.TableBuilder` turns every `BATCH_ROWS` records into one Arrow record batch of wire
values (see `conversions`) and writes it to a file under the step's `BatchDirectory`, so memory holds
one batch per table being read, whatever the listing's length. Destinations then stream the
batches into one atomic replacement of the table, and the checks read only the columns they test.

Every batch of a table ends with the same schema: when a later batch widens a column's type
(a field that held integers receives a fraction) or brings a new field, the earlier batches are
rewritten to the final types at the end of the read, each value spelled as if the listing had
been one batch (rare: it is schema drift within one read; see `conversions.rewire`).
"""

import itertools
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads

from invoiced_assets.catalogue import FieldType
from invoiced_assets.tables.conversions import WIRE_ARROW_TYPES, rewire, wire_schema

# Records per batch written to disk. A batch of events (the widest records) is 2 to 6 MB of
# Arrow at 5,000. Measured on a full load of every object at scale 5: at 0 ms latency, peak RSS
# 639 MB with batches of 2,000, 695 MB with 5,000, 772 MB with 20,000; at 100 ms (every object
# read side by side), 764 MB with 2,000 against 930 MB with 5,000; wall times within run-to-run
# noise.
BATCH_ROWS = 2_000


class TableData(Protocol):
    """A table's rows in wire form (see `conversions`), however they are stored."""

    @property
    def row_count(self) -> int: ...

    def to_frame(self) -> pd.DataFrame:
        """Every row at once (small tables, merges and tests)."""
        ...

    def arrow_source(self) -> Any:
        """What DuckDB scans: a DataFrame, or a stream of the batches read from disk."""
        ...

    def frames(self, rows_per_frame: int = 0) -> Iterator[pd.DataFrame]:
        """The rows, a batch (or as many batches as make `rows_per_frame` rows) at a time."""
        ...

    def columns(self, names: Sequence[str]) -> pd.DataFrame:
        """Only these columns, every row (what a check reads)."""
        ...

    def head(self, rows: int) -> pd.DataFrame: ...

    def release(self) -> None:
        """Free what holds the rows, once the table is written (its batch files)."""
        ...


@dataclass
class FrameData:
    """Rows held in memory: a listing shorter than a batch, a merged or a read-back table."""

    frame: pd.DataFrame

    @property
    def row_count(self) -> int:
        return len(self.frame)

    def to_frame(self) -> pd.DataFrame:
        return self.frame

    def arrow_source(self) -> pd.DataFrame:
        return self.frame

    def frames(self, rows_per_frame: int = 0) -> Iterator[pd.DataFrame]:
        yield self.frame

    def columns(self, names: Sequence[str]) -> pd.DataFrame:
        return self.frame[list(names)]

    def head(self, rows: int) -> pd.DataFrame:
        return self.frame.head(rows)

    def release(self) -> None:
        """Nothing to free: the frame goes when the table does."""


@dataclass
class BatchFiles:
    """Rows in Arrow IPC files on local disk, one record batch each, all of one schema."""

    schema: pa.Schema
    paths: list[Path]
    rows: int

    @property
    def row_count(self) -> int:
        return self.rows

    def _dataset(self) -> pads.Dataset:
        return pads.dataset([str(p) for p in self.paths], schema=self.schema, format="arrow")

    def to_frame(self) -> pd.DataFrame:
        return _to_frame(self._dataset().to_table())

    def arrow_source(self) -> pa.RecordBatchReader:
        # A stream read one file at a time. DuckDB scanning the files as a pyarrow dataset
        # instead read ahead so far that it held most of the table (measured: 1.6 GB of RSS
        # for a 1.4 GB table, against 0.5 GB as a stream).
        def batches() -> Iterator[pa.RecordBatch]:
            for path in self.paths:
                yield from _read_batch_file(path).to_batches()

        return pa.RecordBatchReader.from_batches(self.schema, batches())

    def frames(self, rows_per_frame: int = 0) -> Iterator[pd.DataFrame]:
        group: list[pa.Table] = []
        for path in self.paths:
            group.append(_read_batch_file(path))
            if sum(table.num_rows for table in group) >= rows_per_frame:
                yield _to_frame(pa.concat_tables(group))
                group = []
        if group:
            yield _to_frame(pa.concat_tables(group))

    def columns(self, names: Sequence[str]) -> pd.DataFrame:
        return _to_frame(self._dataset().to_table(columns=list(names)))

    def head(self, rows: int) -> pd.DataFrame:
        return _to_frame(self._dataset().head(rows))

    def release(self) -> None:
        for path in self.paths:
            path.unlink(missing_ok=True)


def _to_frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper=pd.ArrowDtype)


def _read_batch_file(path: Path) -> pa.Table:
    with pa.OSFile(str(path), "rb") as source:  # read, not memory-mapped: freed when dropped
        return pa.ipc.open_file(source).read_all()


class BatchDirectory:
    """A private temporary directory for one step's batch files, removed when the step ends."""

    def __init__(self, parent: str | None = None, *, rows_per_batch: int | None = None) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="invoiced-batches-", dir=parent))
        self.rows_per_batch = rows_per_batch or BATCH_ROWS
        self._numbers = itertools.count()
        self._lock = threading.Lock()

    def new_file(self, table: str) -> Path:
        with self._lock:
            number = next(self._numbers)
        return self.path / f"{table}-{number:06d}.arrow"

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "BatchDirectory":
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


@dataclass
class WrittenBatch:
    """One batch on disk, with the types its columns had when it was written."""

    path: Path
    types: dict[str, FieldType]
    rows: int


def write_batch(path: Path, columns: Mapping[str, tuple[FieldType, pa.Array]]) -> WrittenBatch:
    schema = wire_schema([(name, field_type) for name, (field_type, _) in columns.items()])
    batch = pa.RecordBatch.from_arrays([array for _, array in columns.values()], schema=schema)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        writer.write_batch(batch)
    types = {name: field_type for name, (field_type, _) in columns.items()}
    return WrittenBatch(path, types, batch.num_rows)


def batch_files(batches: Sequence[WrittenBatch], final: Mapping[str, FieldType]) -> BatchFiles:
    """The batches as one table of the `final` columns, rewriting those that differ from it."""
    schema = wire_schema(list(final.items()))
    for batch in batches:
        if batch.types != dict(final) or list(batch.types) != list(final):
            _rewrite(batch, final, schema)
    return BatchFiles(schema, [b.path for b in batches], sum(b.rows for b in batches))


def _rewrite(batch: WrittenBatch, final: Mapping[str, FieldType], schema: pa.Schema) -> None:
    table = _read_batch_file(batch.path)
    arrays = []
    for name, target in final.items():
        source = batch.types.get(name)
        if source is None:
            arrays.append(pa.nulls(batch.rows, WIRE_ARROW_TYPES[target]))
        else:
            arrays.append(rewire(table.column(name).combine_chunks(), source, target))
    rewritten = pa.RecordBatch.from_arrays(arrays, schema=schema)
    with pa.OSFile(str(batch.path), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        writer.write_batch(rewritten)
    batch.types = dict(final)
