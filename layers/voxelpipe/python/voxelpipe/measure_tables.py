"""Measure rows as a file, produced as it is read: CSV text or Parquet (one row group per page).

Each encoder takes the rows page by page (`voxelpipe.cohort.measure_pages`) and yields the bytes of
each page as soon as it is encoded, so a reader (a streamed HTTP answer, an upload to S3) holds one
page at a time. pyarrow is imported only for Parquet: it is the `export` extra, installed in the
export function's image and not in the API's layers (function_specs.EXPORT says why).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from voxelpipe.measure_rows import COLUMNS, MeasureRow

if TYPE_CHECKING:
    import pyarrow as pa


class TableFormat(StrEnum):
    CSV = "csv"
    PARQUET = "parquet"

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self]


MEDIA_TYPES = {
    TableFormat.CSV: "text/csv; charset=utf-8",
    # Registered with IANA in 2024.
    TableFormat.PARQUET: "application/vnd.apache.parquet",
}


def csv_chunks(pages: Iterable[list[MeasureRow]]) -> Iterator[bytes]:
    """RFC 4180 CSV: a header line, then each page's rows (empty fields for nulls)."""
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    yield text.getvalue().encode()
    for rows in pages:
        text.seek(0)
        text.truncate()
        # repr-exact floats (Python's shortest round-trip form), as the summary holds them.
        writer.writerows(rows)
        yield text.getvalue().encode()


def parquet_available() -> bool:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return False
    return True


def parquet_schema() -> pa.Schema:
    import pyarrow as pa

    types: dict[str, Any] = {
        "age": pa.float64(),
        "attempt": pa.int32(),
        "value": pa.float64(),
    }
    return pa.schema([pa.field(name, types.get(name, pa.string())) for name in COLUMNS])


class _Chunks:
    """A write-only file for pyarrow that keeps what was written until it is taken."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.closed = False

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        return len(chunk)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        return data


def parquet_chunks(pages: Iterable[list[MeasureRow]]) -> Iterator[bytes]:
    """A Parquet file (zstd-compressed, dictionary-encoded strings), one row group per page;
    with no rows, a valid file of the schema alone."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema()
    sink = _Chunks()
    writer = pq.ParquetWriter(pa.PythonFile(sink, mode="w"), schema, compression="zstd")
    try:
        for rows in pages:
            columns = list(zip(*rows, strict=True))
            table = pa.Table.from_arrays(
                [pa.array(column, type=field.type) for column, field in zip(columns, schema, strict=True)],
                schema=schema,
            )
            writer.write_table(table, row_group_size=len(rows))
            yield sink.take()
    finally:
        writer.close()
    yield sink.take()


def table_chunks(table_format: TableFormat, pages: Iterable[list[MeasureRow]]) -> Iterator[bytes]:
    return csv_chunks(pages) if table_format is TableFormat.CSV else parquet_chunks(pages)
