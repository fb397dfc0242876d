"""A study's measures as rows: nested measures flattened to dotted names, each with its unit.

An analysis's measures are nested JSON (results.json's `analyses.{name}.measures`, copied to the
study record's `summary`). A cohort export (GET /measures, docs/api.md) wants one row per number:
`regions.hippocampus_left.volume_ml` = 3.9 mL. The rules, in one place:

- Dict keys join with "."; a list's items are numbered from 0 (`header.voxel_size_mm.0`).
- Numbers are values; booleans are 1 or 0 (unit `boolean`); strings, nulls, NaN and infinities are
  no measure and give no row (a method's name, an atlas's citation, a rate without an interval).
- Subtrees that describe a picture or a table row, not the subject (`NOT_MEASURES`), are left out.
- The unit comes from the measure's name (the convention of every analysis: a name ends in its
  unit, `_ml`, `_pct_per_year`, ...; `UNIT_SUFFIXES`), else from a name that is its own unit
  (`bpf`, `z`, `percentile`: `UNIT_NAMES`). A list item, or an entry of a dict, without a unit of
  its own takes its container's (`voxel_size_mm.0`, `fractions_of_tiv.gm`); a statistic of a named
  measure (`scores.gm_ml.value`, `reference.mean`: `STATISTICS`) takes the unit of the nearest name
  above it that has one. Anything else has no unit (empty), rather than a guessed one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, NamedTuple

# Name suffixes and their units, longest first so `_pct_per_year` wins over `_year`-less `_pct`.
UNIT_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("_pct_per_year", "%/year"),
    ("_per_year", "1/year"),
    ("_years", "year"),
    ("_mm3", "mm3"),
    ("_ml", "mL"),
    ("_pct", "%"),
    ("_deg", "deg"),
    ("_mm", "mm"),
    ("_ms", "ms"),
    ("_px", "px"),
    ("_z", "z-score"),
    ("_s", "s"),
    ("_t", "T"),
)
# Names that are a unit in themselves (measures that predate or sit beside the suffix convention).
UNIT_NAMES: dict[str, str] = {
    "bpf": "fraction",  # brain parenchymal fraction: (GM + WM) / TIV
    "fraction": "fraction",
    "fraction_of_tiv": "fraction",
    "fractions_of_tiv": "fraction",
    "zero_fraction": "fraction",
    "nonfinite_fraction": "fraction",
    "z": "z-score",
    "percentile": "percentile",
    "age": "year",
    "age_range": "year",
}
# Statistics of a measure: in the unit of the measure they describe.
STATISTICS = frozenset({"value", "mean", "sd", "std", "min", "max", "median"})
# Subtrees and keys that are not measures of the subject: how a preview was drawn, a reference
# table's line number, an atlas label's number.
NOT_MEASURES = frozenset({"preview", "line", "number"})
BOOLEAN_UNIT = "boolean"


class MeasureRow(NamedTuple):
    """One measure of one analysis of one study, with what a cohort is grouped by."""

    study_id: str
    subject_ref: str | None
    scan_date: str | None  # ISO date, shifted (docs/subjects.md); None when unknown
    age: float | None
    sex: str | None
    status: str
    attempt: int
    completed_at: str | None  # ISO 8601, UTC; None unless COMPLETED
    analysis: str
    analysis_version: str | None  # None for studies finalized before versions were kept
    measure: str
    value: float
    unit: str


COLUMNS: tuple[str, ...] = MeasureRow._fields


def _own_unit(name: str) -> str | None:
    if name in UNIT_NAMES:
        return UNIT_NAMES[name]
    for suffix, unit in UNIT_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return unit
    return None


def unit_of(path: tuple[str, ...]) -> str:
    """The unit of the measure at `path` (its names, list indices as digits), or "" if unknown."""
    names = list(path)
    while names and names[-1].isdigit():  # a list's items: the list's unit
        names.pop()
    if not names:
        return ""
    unit = _own_unit(names[-1])
    if unit is not None:
        return unit
    # A statistic takes the unit of the nearest name above it that has one; any other entry, its
    # container's (`fractions_of_tiv.gm`), and no further.
    above = reversed(names[:-1]) if names[-1] in STATISTICS else iter(names[-2:-1])
    for name in above:
        found = _own_unit(name)
        if found is not None:
            return found
    return ""


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def flatten_measures(measures: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every leaf of `measures` that is a number or a boolean, with its path, in the document's
    order (see the module's docstring)."""
    if isinstance(measures, Mapping):
        for key, value in measures.items():
            if str(key) not in NOT_MEASURES:
                yield from flatten_measures(value, (*path, str(key)))
    elif isinstance(measures, list | tuple):
        for index, value in enumerate(measures):
            yield from flatten_measures(value, (*path, str(index)))
    elif path and _number(measures) is not None:
        yield path, measures


def measure_rows(measures: Any) -> Iterator[tuple[str, float, str]]:
    """(dotted measure name, value, unit) for every numeric leaf of one analysis's measures."""
    for path, leaf in flatten_measures(measures):
        value = _number(leaf)
        if value is not None:  # always, for what flatten_measures yields
            yield ".".join(path), value, BOOLEAN_UNIT if isinstance(leaf, bool) else unit_of(path)
