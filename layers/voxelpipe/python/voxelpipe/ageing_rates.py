"""Healthy-ageing rates tables: the annual percent change of a measure in healthy people of an age
range, for z-scores of a subject's measured rates (the timeline, docs/subjects.md). Registered as
reference data of kind `rates` (docs/reference-data.md); none is bundled — every number must cite
its source, and published rates (e.g. whole-brain atrophy by SIENA in ADNI controls) could not be
transcribed and checked here.

CSV, as the other hand-written tables (voxelpipe.csv_tables):

    measure,age_min,age_max,mean_pct_per_year,sd_pct_per_year,source
    brain,60,90,-0.65,0.45,"Author et al., Journal Year; table 2"
    hippocampus_left,60,90,-1.4,1.0,"Author et al., Journal Year; table 3"

`measure` is `brain` (the longitudinal analysis's whole-brain change) or a region key of regional
(voxelpipe.atlases.REGIONS); z = (rate - mean_pct_per_year) / sd_pct_per_year.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from voxelpipe.atlases.atlas import REGIONS
from voxelpipe.csv_tables import read_table, table_number

MAX_TABLE_BYTES: Final = 1024 * 1024
WHOLE_BRAIN: Final = "brain"
RATED_MEASURES: Final[tuple[str, ...]] = (WHOLE_BRAIN, *REGIONS)
REQUIRED_COLUMNS: Final = ("measure", "age_min", "age_max", "mean_pct_per_year", "sd_pct_per_year", "source")


class RatesError(ValueError):
    """A rates table that cannot be used; the message names the line at fault."""


@dataclass(frozen=True)
class RateRow:
    measure: str
    age_min: float
    age_max: float
    mean_pct_per_year: float
    sd_pct_per_year: float
    source: str
    line: int


@dataclass(frozen=True)
class RatesTable:
    rows: tuple[RateRow, ...]
    provenance: Mapping[str, Any] = field(default_factory=dict)

    @property
    def measures(self) -> tuple[str, ...]:
        present = {row.measure for row in self.rows}
        return tuple(m for m in RATED_MEASURES if m in present)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(sorted({row.source for row in self.rows}))

    def score(self, measure: str, rate: float | None, age: float | None) -> dict[str, Any]:
        """The z-score of `rate` (%/year) for `measure` at `age`: {"z", "mean_pct_per_year",
        "sd_pct_per_year", "line", "source", "status": "ok"}, or {"status": why not} —
        `no_rate` (nothing measured), `no_age`, `no_reference` (no row for the measure),
        `out_of_age_range` (no row's range holds the age: no extrapolation)."""
        if rate is None:
            return {"status": "no_rate"}
        rows = [row for row in self.rows if row.measure == measure]
        if not rows:
            return {"status": "no_reference"}
        if age is None:
            return {"status": "no_age"}
        holding = [row for row in rows if row.age_min <= age <= row.age_max]
        if not holding:
            return {"status": "out_of_age_range"}
        row = min(holding, key=lambda r: (r.age_max - r.age_min, r.line))
        return {
            "z": (rate - row.mean_pct_per_year) / row.sd_pct_per_year,
            "mean_pct_per_year": row.mean_pct_per_year,
            "sd_pct_per_year": row.sd_pct_per_year,
            "line": row.line,
            "source": row.source,
            "status": "ok",
        }


def parse_rates_table(text: str) -> RatesTable:
    """The rows of a rates table in the documented CSV form; RatesError names the line at fault."""
    header_line, header, records = read_table(text, "rates table", MAX_TABLE_BYTES, RatesError)
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise RatesError(f"line {header_line}: header lacks column(s) {', '.join(missing)}")
    unknown = [c for c in header if c not in REQUIRED_COLUMNS]
    if unknown or len(set(header)) != len(header):
        raise RatesError(
            f"line {header_line}: unknown or repeated column(s) {', '.join(unknown) or 'repeated'}; "
            f"the columns are {', '.join(REQUIRED_COLUMNS)}"
        )
    rows: list[RateRow] = []
    seen: dict[tuple[str, float, float], int] = {}
    for number, cells in records:
        cell = dict(zip(header, cells, strict=True))
        measure = cell["measure"]
        if measure not in RATED_MEASURES:
            raise RatesError(f"line {number}: measure {measure!r} is not brain or a region of regional")
        age_min, age_max, mean, sd = (
            table_number(cell[c], c, number, RatesError)
            for c in ("age_min", "age_max", "mean_pct_per_year", "sd_pct_per_year")
        )
        if not 0 <= age_min < age_max <= 130:
            raise RatesError(f"line {number}: need 0 <= age_min < age_max <= 130 (years)")
        if sd <= 0:
            raise RatesError(f"line {number}: sd_pct_per_year must be > 0")
        if not cell["source"]:
            raise RatesError(f"line {number}: source is empty (every row must cite its source)")
        key = (measure, age_min, age_max)
        if key in seen:
            raise RatesError(
                f"line {number}: {measure}, ages {age_min:g}-{age_max:g}, is on line {seen[key]} already"
            )
        seen[key] = number
        rows.append(RateRow(measure, age_min, age_max, mean, sd, cell["source"], number))
    if not rows:
        raise RatesError("rates table has a header but no rows")
    return RatesTable(rows=tuple(rows))
