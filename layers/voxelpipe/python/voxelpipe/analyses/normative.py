"""The `normative` analysis: z-scores and percentiles of brain volumes for age, sex (and TIV).

No norms are bundled. Published norms exist (e.g. Potvin et al., NeuroImage 2016; Kruggel,
NeuroImage 2006), but their numbers could not be transcribed and checked against the papers here,
and norms measured by another segmentation method would bias every z-score by the methods'
difference anyway. So the analysis scores against one of two tables, and without either returns
`{"status": "no_reference_table", "message": ...}` and no scores:

* a registered norms table, named by `parameters["norms"]` (and optionally `norms_version`):
  normative equations in age, sex, TIV and field strength (voxelpipe.analyses.norms; an operator
  registers it, docs/reference-data.md). RunAnalysis loads the version dispatch fixed into
  `inp.references["norms"]`; the result names it (`norms`: name, version, licence, citation);
* a per-study table, given as CSV text in `parameters["reference_table"]`: a mean and SD per age
  band, the form below.

The measures scored are volumetrics' (gm_ml, wm_ml, csf_ml, tiv_ml, bpf) and, when the study also
runs `regional`, its region volumes (`regions[key].volume_ml`, keys voxelpipe.atlases.REGIONS):
normative uses regional (Analysis.uses) rather than requiring it, so whole-brain norms do not make
a study pay for registration.

Per-study table format (CSV, UTF-8, header row required, `#` starts a comment line):

    measure,sex,age_min,age_max,mean,sd,source
    gm_ml,F,20,30,650.0,55.0,"Author et al., Journal Year; table 2"

* measure: one of gm_ml, wm_ml, csf_ml, tiv_ml, bpf (the volumetrics measures), or a region key
  of `regional` (its volume in mL);
* sex: F, M, or "any" (matches both);
* age_min <= age < age_max, in years;
* mean and sd (> 0) in the measure's unit (mL, or a fraction for bpf);
* source: where the numbers come from (required, non-empty: a table is data with a citation).

For each measure, the row matching the subject's sex and age is used (the narrowest age band if
several match; a sex-specific row before an "any" row); z = (value - mean) / sd, percentile =
100 * Phi(z), the normal CDF through math.erf. Subject age (years) and sex come from
`parameters["age"]` and `parameters["sex"]`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from voxelpipe.analyses.catalogue import NORMATIVE as NORMATIVE
from voxelpipe.analyses.catalogue import (
    NORMATIVE_PARAMETERS,
    AnalysisInput,
    AnalysisOutput,
    merged_parameters,
)
from voxelpipe.analyses.norms import FIELD_STRENGTHS_T, METHOD, NORMED_MEASURES, NormsTable, score_measures
from voxelpipe.analyses.norms import normal_cdf as normal_cdf
from voxelpipe.analyses.volumetrics import MEASURES, volumetrics_output
from voxelpipe.csv_tables import read_table, table_number

COLUMNS: tuple[str, ...] = ("measure", "sex", "age_min", "age_max", "mean", "sd", "source")
MAX_TABLE_BYTES = 1 << 20  # a table is a few hundred rows; anything larger is a mistake
DEFAULT_PARAMETERS = NORMATIVE_PARAMETERS
_SEXES = {"f": "F", "female": "F", "m": "M", "male": "M"}


class ReferenceTableError(ValueError):
    """The reference table is not in the documented format; the message names the line."""


@dataclass(frozen=True)
class ReferenceRow:
    measure: str
    sex: str  # "F", "M" or "any"
    age_min: float
    age_max: float
    mean: float
    sd: float
    source: str
    line: int  # in the CSV text, for reports


def _number(text: str, column: str, line: int) -> float:
    return table_number(text, column, line, ReferenceTableError)


def parse_reference_table(text: str) -> list[ReferenceRow]:
    """Rows of a reference table in the documented CSV format; raises ReferenceTableError."""
    header_line, header, records = read_table(text, "reference table", MAX_TABLE_BYTES, ReferenceTableError)
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise ReferenceTableError(f"line {header_line}: header lacks column(s) {', '.join(missing)}")
    where = {c: header.index(c) for c in COLUMNS}
    rows: list[ReferenceRow] = []
    for number, fields in records:
        cell = {c: fields[where[c]] for c in COLUMNS}
        measure = cell["measure"]
        if measure not in NORMED_MEASURES:
            raise ReferenceTableError(
                f"line {number}: measure {measure!r} is not one of {', '.join(NORMED_MEASURES)}"
            )
        sex_text = cell["sex"].lower()
        sex = "any" if sex_text == "any" else _SEXES.get(sex_text)
        if sex is None:
            raise ReferenceTableError(f"line {number}: sex {cell['sex']!r} is not F, M or any")
        age_min = _number(cell["age_min"], "age_min", number)
        age_max = _number(cell["age_max"], "age_max", number)
        if not 0 <= age_min < age_max:
            raise ReferenceTableError(f"line {number}: need 0 <= age_min < age_max")
        sd = _number(cell["sd"], "sd", number)
        if sd <= 0:
            raise ReferenceTableError(f"line {number}: sd must be > 0")
        if not cell["source"]:
            raise ReferenceTableError(f"line {number}: source is empty (every row must cite its source)")
        rows.append(
            ReferenceRow(
                measure=measure,
                sex=sex,
                age_min=age_min,
                age_max=age_max,
                mean=_number(cell["mean"], "mean", number),
                sd=sd,
                source=cell["source"],
                line=number,
            )
        )
    if not rows:
        raise ReferenceTableError("reference table has a header but no rows")
    return rows


def parse_sex(value: Any) -> str | None:
    """ "F" or "M" from F/M/female/male (any case); None when not given or not one of those."""
    return _SEXES.get(value.strip().lower()) if isinstance(value, str) else None


def reference_row(rows: list[ReferenceRow], measure: str, age: float, sex: str) -> ReferenceRow | None:
    """The row for `measure` at `age` and `sex`: sex-specific before "any", then the narrowest
    age band, then the first in the table."""
    matches = [
        r for r in rows if r.measure == measure and r.sex in (sex, "any") and r.age_min <= age < r.age_max
    ]
    if not matches:
        return None
    return min(matches, key=lambda r: (r.sex == "any", r.age_max - r.age_min, r.line))


def normative_scores(
    measures: Mapping[str, Any], rows: list[ReferenceRow], age: float, sex: str
) -> dict[str, dict[str, Any]]:
    """Per measure (volumetrics', then the regions the table has rows for): value, z, percentile
    and the reference row used (or why there is none)."""
    scores: dict[str, dict[str, Any]] = {}
    tabled = {row.measure for row in rows}
    for measure in (*MEASURES, *(m for m in NORMED_MEASURES if m in tabled and m not in MEASURES)):
        value = measures.get(measure)
        if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
            scores[measure] = {"status": "no_value", "value": None}
            continue
        row = reference_row(rows, measure, age, sex)
        if row is None:
            scores[measure] = {"status": "no_reference_row", "value": value}
            continue
        z = (float(value) - row.mean) / row.sd
        scores[measure] = {
            "status": "ok",
            "value": value,
            "z": round(z, 4),
            "percentile": round(100.0 * normal_cdf(z), 3),
            "reference": {
                "mean": row.mean,
                "sd": row.sd,
                "sex": row.sex,
                "age_range": [row.age_min, row.age_max],
                "source": row.source,
                "line": row.line,
            },
        }
    return scores


def normed_values(volumetrics: Mapping[str, Any], regional: Mapping[str, Any] | None) -> dict[str, Any]:
    """The values a table may score, by measure: volumetrics' measures, and the volume (mL) of each
    region of regional's measures (`regions[key]["volume_ml"]`) when regional ran."""
    values = {measure: volumetrics.get(measure) for measure in MEASURES}
    regions = (regional or {}).get("regions")
    if isinstance(regions, Mapping):
        for key, region in regions.items():
            if key in NORMED_MEASURES and isinstance(region, Mapping):
                values[key] = region.get("volume_ml")
    return values


def _subject(parameters: Mapping[str, Any]) -> tuple[float, str] | None:
    age = parameters.get("age")
    sex = parse_sex(parameters.get("sex"))
    if isinstance(age, bool) or not isinstance(age, int | float) or not (math.isfinite(age) and age >= 0):
        return None
    return (float(age), sex) if sex is not None else None


_MISSING_SUBJECT = {
    "status": "missing_subject_info",
    "message": "normative scores need parameters.age (years, >= 0) and parameters.sex (F or M)",
}


def _field_strength(value: Any) -> float | None:
    """1.5 or 3.0 from the parameter; ValueError for anything else but None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or float(value) not in FIELD_STRENGTHS_T:
        raise ValueError(f"field_strength_t must be 1.5 or 3, not {value!r}")
    return float(value)


def _equation_result(
    values: Mapping[str, Any], parameters: Mapping[str, Any], norms: NormsTable
) -> dict[str, Any]:
    try:
        field = _field_strength(parameters.get("field_strength_t"))
    except ValueError as error:
        return {"status": "invalid_parameters", "message": str(error)}
    subject = _subject(parameters)
    if subject is None:
        return dict(_MISSING_SUBJECT)
    age, sex = subject
    tiv = values.get("tiv_ml")
    tiv_ml = float(tiv) if isinstance(tiv, int | float) and not isinstance(tiv, bool) and tiv > 0 else None
    scores = score_measures(norms, values, age=age, sex=sex, tiv_ml=tiv_ml, field_strength_t=field)
    used = [s["equation"]["source"] for s in scores.values() if s["status"] == "ok"]
    return {
        "status": "ok" if used else "no_scores",
        "form": "equations",
        "norms": dict(norms.provenance),
        "subject": {"age": parameters.get("age"), "sex": sex, "tiv_ml": tiv_ml, "field_strength_t": field},
        "scores": scores,
        "sources": sorted(set(used)),
        "method": METHOD,
    }


def normative_result(
    measures: Mapping[str, Any], parameters: Mapping[str, Any], norms: NormsTable | None = None
) -> dict[str, Any]:
    """The analysis' measures from the values to score (`normed_values`: volumetrics' measures and
    regional's region volumes), the analysis parameters, and the registered norms table the
    parameters name (`norms`, loaded), if any."""
    merged_parameters("normative", DEFAULT_PARAMETERS, parameters)  # refuses unknown names
    text = parameters.get("reference_table")
    named = parameters.get("norms")
    if text is not None and named is not None:
        return {
            "status": "invalid_parameters",
            "message": "give either reference_table (a per-study table) or norms (a registered one), "
            "not both",
        }
    if named is not None:
        if norms is None:
            return {
                "status": "no_reference_table",
                "message": f"norms table {named!r} was named but not loaded (it is loaded by RunAnalysis)",
            }
        return _equation_result(measures, parameters, norms)
    if text is None:
        return {
            "status": "no_reference_table",
            "message": (
                "no reference table: voxelpipe bundles none (no published norms whose values could "
                "be verified, and norms from another segmentation method would bias the scores). "
                "Name a registered norms table as parameters.norms (docs/reference-data.md), or "
                "supply a per-study one as parameters.reference_table (CSV text with columns "
                f"{','.join(COLUMNS)})"
            ),
        }
    if not isinstance(text, str):
        raise ValueError("reference_table must be CSV text")
    try:
        rows = parse_reference_table(text)
    except ReferenceTableError as error:
        return {"status": "invalid_reference_table", "message": str(error)}
    subject = _subject(parameters)
    if subject is None:
        return dict(_MISSING_SUBJECT)
    age, sex = subject
    scores = normative_scores(measures, rows, age, sex)
    scored = sum(1 for s in scores.values() if s["status"] == "ok")
    return {
        "status": "ok" if scored else "no_reference_row",
        "subject": {"age": parameters.get("age"), "sex": sex},
        "scores": scores,
        "sources": sorted({s["reference"]["source"] for s in scores.values() if s["status"] == "ok"}),
        "method": "z = (value - mean) / sd; percentile = 100 * Phi(z) (normal CDF)",
    }


# Results that say no scores can be given whatever the volumes: the volumes are not computed.
_NOTHING_TO_SCORE = (
    "no_reference_table",
    "invalid_reference_table",
    "missing_subject_info",
    "invalid_parameters",
)


def normative_output(
    inp: AnalysisInput,
    upstream: Mapping[str, AnalysisOutput] | None = None,
    norms: NormsTable | None = None,
) -> AnalysisOutput:
    """From volumetrics' output in `upstream["volumetrics"]` (else computing the volumes here) and
    regional's in `upstream["regional"]` when the study ran it.

    The volumes are only computed when a table and the subject's age and sex are there to score
    them against.
    """
    params = {**DEFAULT_PARAMETERS, **inp.parameters}
    probe = normative_result({}, params, norms)
    if probe["status"] in _NOTHING_TO_SCORE:
        return AnalysisOutput(measures=probe)
    volumetrics = (upstream or {}).get("volumetrics")
    if volumetrics is None:
        volumetrics = volumetrics_output(
            AnalysisInput(image=inp.image, original_orientation=inp.original_orientation, parameters={}),
            upstream,
        )
    regional = (upstream or {}).get("regional")
    values = normed_values(volumetrics.measures, regional.measures if regional is not None else None)
    return AnalysisOutput(measures=normative_result(values, params, norms))


def run_normative(inp: AnalysisInput) -> AnalysisOutput:
    # The subject's age and sex, as the uploader declared them, unless parameters say otherwise.
    subject = {key: inp.subject[key] for key in ("age", "sex") if inp.subject.get(key) is not None}
    given = {key: value for key, value in inp.parameters.items() if value is not None}
    norms = inp.references.get("norms")
    if norms is not None and not isinstance(norms, NormsTable):
        raise TypeError(f"references['norms'] is a {type(norms).__name__}, not a NormsTable")
    return normative_output(
        replace(inp, parameters={**inp.parameters, **subject, **given}), inp.requirements, norms
    )
