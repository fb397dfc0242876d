"""Norms tables: normative equations for brain volumes, and the scores of a subject against them.

The form neuroradiology uses (e.g. Potvin et al., NeuroImage 2016, for subcortical volumes): per
measure, and optionally per sex, the volume a healthy subject is expected to have,

    expected = b0 + b_age*A + b_age2*A^2 + b_sex*S + b_tiv*T + b_field*F
    A = age - age_center          (years)
    T = tiv_ml - tiv_center       (mL)
    S = 1 for male, 0 for female
    F = 1 at 3 T, 0 at 1.5 T

with the residual standard deviation `sd` of the fit and the age range the equation was fitted
on; then z = (observed - expected) / sd and percentile = 100 * Phi(z). No table is bundled: a
deployment's operator registers one (docs/reference-data.md), every row citing its source.

Table format (CSV, UTF-8, header row required, `#` starts a comment line, one record a line):

    measure,sex,age_min,age_max,b0,b_age,b_age2,b_sex,b_tiv,b_field,age_center,tiv_center,sd,source
    hippocampus_left,any,20,80,3.9,-0.012,-0.0001,0.05,0.0012,0,50,1450,0.35,"Author, Journal Year; t3"

* measure (required): a volumetrics measure (gm_ml, wm_ml, csf_ml, tiv_ml, bpf) or a region key of
  `regional` (voxelpipe.atlases.REGIONS, e.g. hippocampus_left), in mL (bpf: a fraction);
* sex (required): F, M or any; an F or M row applies to that sex only and has no sex term;
* age_min, age_max (required): the ages (years, inclusive) the equation is valid for;
* b0 (required) and b_age, b_age2, b_sex, b_tiv (required columns; an empty cell is 0);
* b_field, age_center, tiv_center (optional columns; absent or empty: 0);
* sd (required, > 0): the residual standard deviation, in the measure's unit;
* source (required, non-empty): where the row's numbers come from.

Several rows may serve one measure: for a subject, the rows of its sex are used when the table has
any for that measure, else the `any` rows; among those, the one whose age range holds the subject's
age (the narrowest, then the first). A subject outside every range gets no score for that measure
(`out_of_age_range`, with the ranges): a quadratic in age is not extrapolated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from voxelpipe.analyses.catalogue import VOLUMETRICS_MEASURES
from voxelpipe.atlases.atlas import REGIONS
from voxelpipe.csv_tables import read_table, table_number

__all__ = [
    "NORMED_MEASURES",
    "NormRow",
    "NormsError",
    "NormsTable",
    "normal_cdf",
    "parse_norms_table",
    "score_measures",
]

MAX_TABLE_BYTES: Final = 1 << 20
# Every measure a norms table may give: the whole-brain volumes, then the regions.
NORMED_MEASURES: Final[tuple[str, ...]] = (*VOLUMETRICS_MEASURES, *REGIONS)
REQUIRED_COLUMNS: Final = (
    "measure",
    "sex",
    "age_min",
    "age_max",
    "b0",
    "b_age",
    "b_age2",
    "b_sex",
    "b_tiv",
    "sd",
    "source",
)
OPTIONAL_COLUMNS: Final = ("b_field", "age_center", "tiv_center")
_COEFFICIENTS: Final = ("b_age", "b_age2", "b_sex", "b_tiv", *OPTIONAL_COLUMNS)
_SEXES: Final = {"f": "F", "female": "F", "m": "M", "male": "M", "any": "any"}
FIELD_STRENGTHS_T: Final = (1.5, 3.0)
METHOD: Final = (
    "expected = b0 + b_age*(age - age_center) + b_age2*(age - age_center)^2 + b_sex*[male] "
    "+ b_tiv*(tiv_ml - tiv_center) + b_field*[3 T]; z = (value - expected) / sd; "
    "percentile = 100 * Phi(z)"
)


class NormsError(ValueError):
    """A norms table not in the documented form; the message names the line."""


@dataclass(frozen=True)
class NormRow:
    measure: str
    sex: str  # "F", "M" or "any"
    age_min: float
    age_max: float
    b0: float
    b_age: float
    b_age2: float
    b_sex: float
    b_tiv: float
    b_field: float
    age_center: float
    tiv_center: float
    sd: float
    source: str
    line: int

    def expected(self, age: float, sex: str, tiv_ml: float, field_3t: bool) -> float:
        a = age - self.age_center
        return (
            self.b0
            + self.b_age * a
            + self.b_age2 * a * a
            + self.b_sex * (1.0 if sex == "M" else 0.0)
            + self.b_tiv * (tiv_ml - self.tiv_center)
            + self.b_field * (1.0 if field_3t else 0.0)
        )


@dataclass(frozen=True)
class NormsTable:
    """A parsed norms table, with where it comes from when it is a registered one."""

    rows: tuple[NormRow, ...]
    provenance: Mapping[str, Any] = field(default_factory=dict)

    @property
    def measures(self) -> tuple[str, ...]:
        """The measures the table has rows for, in NORMED_MEASURES' order."""
        present = {row.measure for row in self.rows}
        return tuple(m for m in NORMED_MEASURES if m in present)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(sorted({row.source for row in self.rows}))


def _number(text: str, column: str, line: int, *, empty: float | None = None) -> float:
    if not text and empty is not None:
        return empty
    return table_number(text, column, line, NormsError)


def parse_norms_table(text: str) -> NormsTable:
    """The rows of a norms table in the documented CSV form; NormsError names the line at fault."""
    header_line, header, records = read_table(text, "norms table", MAX_TABLE_BYTES, NormsError)
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise NormsError(f"line {header_line}: header lacks column(s) {', '.join(missing)}")
    unknown = [c for c in header if c not in (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)]
    if unknown or len(set(header)) != len(header):
        raise NormsError(
            f"line {header_line}: unknown or repeated column(s) {', '.join(unknown) or 'repeated'}; "
            f"the columns are {', '.join((*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS))}"
        )
    rows: list[NormRow] = []
    seen: dict[tuple[str, str, float, float], int] = {}
    for number, cells in records:
        cell = dict(zip(header, cells, strict=True))
        measure = cell["measure"]
        if measure not in NORMED_MEASURES:
            raise NormsError(f"line {number}: measure {measure!r} is not one of {', '.join(NORMED_MEASURES)}")
        sex = _SEXES.get(cell["sex"].lower())
        if sex is None:
            raise NormsError(f"line {number}: sex {cell['sex']!r} is not F, M or any")
        age_min = _number(cell["age_min"], "age_min", number)
        age_max = _number(cell["age_max"], "age_max", number)
        if not 0 <= age_min < age_max <= 130:
            raise NormsError(f"line {number}: need 0 <= age_min < age_max <= 130 (years)")
        coefficients = {c: _number(cell.get(c, ""), c, number, empty=0.0) for c in _COEFFICIENTS}
        if sex != "any" and coefficients["b_sex"] != 0:
            raise NormsError(f"line {number}: a row for sex {sex} has no sex term (b_sex must be 0 or empty)")
        if measure == "tiv_ml" and coefficients["b_tiv"] != 0:
            raise NormsError(f"line {number}: tiv_ml cannot be predicted from itself (b_tiv must be 0)")
        sd = _number(cell["sd"], "sd", number)
        if sd <= 0:
            raise NormsError(f"line {number}: sd must be > 0")
        if not cell["source"]:
            raise NormsError(f"line {number}: source is empty (every row must cite its source)")
        key = (measure, sex, age_min, age_max)
        if key in seen:
            raise NormsError(
                f"line {number}: {measure} for sex {sex}, ages {age_min:g}-{age_max:g}, is on line "
                f"{seen[key]} already"
            )
        seen[key] = number
        rows.append(
            NormRow(
                measure=measure,
                sex=sex,
                age_min=age_min,
                age_max=age_max,
                b0=_number(cell["b0"], "b0", number),
                sd=sd,
                source=cell["source"],
                line=number,
                **coefficients,
            )
        )
    if not rows:
        raise NormsError("norms table has a header but no rows")
    return NormsTable(rows=tuple(rows))


def normal_cdf(z: float) -> float:
    """Phi(z), the standard normal CDF."""
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def score_measures(
    table: NormsTable,
    values: Mapping[str, Any],
    *,
    age: float,
    sex: str,
    tiv_ml: float | None,
    field_strength_t: float | None,
) -> dict[str, dict[str, Any]]:
    """Per measure the table has rows for: its value, expected value, z and percentile, and the
    row used; or, with no score, why (`status`):

    * `no_value`: the study did not measure it (a region needs the `regional` analysis);
    * `no_norm`: no row for the subject's sex;
    * `out_of_age_range`: no row whose age range holds the subject's age (`age_ranges`);
    * `no_tiv`, `no_field_strength`: the row's equation has a TIV or field-strength term and the
      study has no TIV or was given no field strength (parameter field_strength_t).

    `sex` is "F" or "M"; `field_strength_t` 1.5 or 3 (or None).
    """
    scores: dict[str, dict[str, Any]] = {}
    for measure in table.measures:
        value = _finite(values.get(measure))
        if value is None:
            scores[measure] = {"status": "no_value", "value": None}
            continue
        rows = [row for row in table.rows if row.measure == measure]
        own = [row for row in rows if row.sex == sex]
        candidates = own or [row for row in rows if row.sex == "any"]
        if not candidates:
            scores[measure] = {"status": "no_norm", "value": value}
            continue
        covering = [row for row in candidates if row.age_min <= age <= row.age_max]
        if not covering:
            scores[measure] = {
                "status": "out_of_age_range",
                "value": value,
                "age_ranges": sorted([row.age_min, row.age_max] for row in candidates),
            }
            continue
        row = min(covering, key=lambda r: (r.age_max - r.age_min, r.line))
        if row.b_tiv != 0 and tiv_ml is None:
            scores[measure] = {"status": "no_tiv", "value": value}
            continue
        if row.b_field != 0 and field_strength_t is None:
            scores[measure] = {"status": "no_field_strength", "value": value}
            continue
        expected = row.expected(age, sex, tiv_ml or 0.0, field_strength_t == 3.0)
        z = (value - expected) / row.sd
        scores[measure] = {
            "status": "ok",
            "value": value,
            "expected": round(expected, 4),
            "sd": row.sd,
            "z": round(z, 4),
            "percentile": round(100.0 * normal_cdf(z), 3),
            "equation": {
                "line": row.line,
                "sex": row.sex,
                "age_range": [row.age_min, row.age_max],
                "source": row.source,
            },
        }
    return scores
