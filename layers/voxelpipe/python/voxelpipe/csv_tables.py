"""The CSV tables people write by hand (per-study reference tables, norms tables, atlas label
tables): UTF-8, a header row, one record a line (quoted commas are fine, quoted newlines are not),
blank lines and `#` comment lines skipped, and errors that name the line at fault."""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterator

Error = Callable[[str], Exception]


def read_table(
    text: str, what: str, max_bytes: int, error: Error
) -> tuple[int, list[str], Iterator[tuple[int, list[str]]]]:
    """The header's line number, its column names (stripped, lower case) and the records as
    (line number, stripped cells). `what` names the table in messages ("norms table"); `error`
    makes the exception raised. The records are read as they are iterated, so that a caller's
    header checks come first; a record whose cell count is not the header's raises there."""
    if len(text.encode("utf-8", errors="replace")) > max_bytes:
        raise error(f"{what} larger than {max_bytes} bytes")
    lines = [
        (number, line)
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip() and not line.lstrip().startswith("#")
    ]
    if not lines:
        raise error(f"{what} is empty")
    header_line, header_text = lines[0]
    header = [name.strip().lstrip("\ufeff").lower() for name in next(csv.reader([header_text]))]

    def records() -> Iterator[tuple[int, list[str]]]:
        for number, line in lines[1:]:
            cells = [cell.strip() for cell in next(csv.reader([line]))]
            if len(cells) != len(header):
                raise error(f"line {number}: {len(cells)} fields, the header has {len(header)}")
            yield number, cells

    return header_line, header, records()


def table_number(text: str, column: str, line: int, error: Error) -> float:
    """A finite number from a cell; `error` names the line and column otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise error(f"line {line}: {column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise error(f"line {line}: {column} must be finite")
    return value
