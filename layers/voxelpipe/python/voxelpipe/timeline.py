"""A subject's timeline: its studies oldest first with their headline measures, the paired change
between consecutive studies (the later study's `longitudinal` measures), the change from the first
to the last study, and z-scores of the annual rates against a healthy-ageing rates table
(voxelpipe.ageing_rates) when one is given. Plain data in, plain data out (docs/subjects.md,
"Timeline"): the API's route, Finalize's report and the viewer read the same document.

First to last: the consecutive paired ratios are chained, V_n / V_1 = Π V_i / V_(i-1) (each
study's longitudinal measures name the prior it was compared with; the chain follows those links
back from the last study), so the first-to-last change is what the paired method measured step by
step, not a subtraction of the two end volumes. Rates are percent of the earlier volume per year:
change_pct / interval_years (not compounded), as the longitudinal analysis reports them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Final

from voxelpipe.ageing_rates import RatesTable

DAYS_PER_YEAR: Final = 365.25
VOLUMETRICS_HEADLINE: Final = ("gm_ml", "wm_ml", "csf_ml", "tiv_ml", "bpf")


@dataclass(frozen=True)
class TimelineStudy:
    """One study of the subject as the timeline needs it (from its StudyRecord)."""

    study_id: str
    status: str
    created_at: datetime
    scan_date: str | None  # ISO, shifted
    age: float | None  # the subject's age at this study, as declared
    summary: Mapping[str, Any]  # each analysis's measures (results.json's, copied to the record)


def _date(text: str | None) -> date | None:
    try:
        return date.fromisoformat(text) if text else None
    except ValueError:
        return None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def headline_measures(summary: Mapping[str, Any]) -> dict[str, Any]:
    """volumetrics' tissue volumes, regional's region volumes, normative's z-scores (where the
    study ran them)."""
    headline: dict[str, Any] = {}
    volumetrics = summary.get("volumetrics")
    if isinstance(volumetrics, Mapping):
        headline["volumetrics"] = {k: volumetrics[k] for k in VOLUMETRICS_HEADLINE if k in volumetrics}
    regions = (summary.get("regional") or {}).get("regions")
    if isinstance(regions, Mapping):
        headline["regions_ml"] = {
            name: entry.get("volume_ml") for name, entry in regions.items() if isinstance(entry, Mapping)
        }
    scores = (summary.get("normative") or {}).get("scores")
    if isinstance(scores, Mapping):
        z = {
            m: s.get("z")
            for m, s in scores.items()
            if isinstance(s, Mapping) and _number(s.get("z")) is not None
        }
        if z:
            headline["normative_z"] = z
    return headline


def _rate_age(age: float | None, interval: float | None) -> float | None:
    """The age a rate is scored at: the middle of the interval it was measured over."""
    if age is None:
        return None
    return age - interval / 2 if interval is not None else age


def _scored(
    regions: Mapping[str, Mapping[str, Any]], rates: RatesTable | None, age: float | None
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, entry in regions.items():
        row = dict(entry)  # every field the longitudinal analysis reports of the region
        if rates is not None:
            row["rate_z"] = rates.score(name, _number(entry.get("paired_rate_pct_per_year")), age)
        out[name] = row
    return out


def _longitudinal(study: TimelineStudy) -> Mapping[str, Any] | None:
    measures = study.summary.get("longitudinal")
    return measures if isinstance(measures, Mapping) else None


def _change(study: TimelineStudy, rates: RatesTable | None) -> dict[str, Any] | None:
    measures = _longitudinal(study)
    if measures is None:
        return None
    interval = _number(measures.get("interval_years"))
    given = measures.get("regions")
    regions: Mapping[str, Mapping[str, Any]] = given if isinstance(given, Mapping) else {}
    change: dict[str, Any] = {
        "prior_study_id": measures.get("prior_study_id"),
        "interval_years": interval,
        "method": measures.get("method"),
        "regions": _scored(regions, rates, _rate_age(study.age, interval)),
    }
    for extra in ("status", "reason"):
        if extra in measures:
            change[extra] = measures[extra]
    return change


def _chained(links: Sequence[Mapping[str, Any]], field: str) -> float | None:
    ratio = 1.0
    for link in links:
        pct = _number(link.get(field))
        if pct is None:
            return None
        ratio *= 1.0 + pct / 100.0
    return 100.0 * (ratio - 1.0)


def first_to_last(studies: Sequence[TimelineStudy], rates: RatesTable | None) -> dict[str, Any] | None:
    """The change from the first to the last study along the longitudinal links (the last study
    compared with a prior, that prior with its own, ...): each region's chained paired and
    subtraction change, the summed interval and the annual rate, and `path`: the cumulative change
    at each study of the chain; None without a link."""
    by_id = {study.study_id: study for study in studies}
    compared = [s for s in studies if (_longitudinal(s) or {}).get("prior_study_id") in by_id]
    if not compared:
        return None
    last = compared[-1]
    chain: list[Mapping[str, Any]] = []  # the links, last first
    ids = [last.study_id]  # the studies along it, last first
    current = last
    while True:
        measures = _longitudinal(current)
        prior_id = (measures or {}).get("prior_study_id")
        if measures is None or prior_id not in by_id or prior_id in ids:
            break
        chain.append(measures)
        current = by_id[prior_id]
        ids.append(prior_id)
    first = current
    ordered = list(reversed(chain))  # first link first
    ids.reverse()
    intervals = [_number(link.get("interval_years")) for link in ordered]
    interval = sum(i for i in intervals if i is not None) if all(i is not None for i in intervals) else None
    names = [
        name
        for name in (chain[0].get("regions") or {})
        if all(name in (link.get("regions") or {}) for link in chain)
    ]
    regions: dict[str, dict[str, Any]] = {}
    path: list[dict[str, Any]] = [
        {
            "study_id": ids[0],
            "regions": {n: {"paired_change_pct": 0.0, "subtraction_change_pct": 0.0} for n in names},
        }
    ]
    for step in range(1, len(ordered) + 1):
        path.append(
            {
                "study_id": ids[step],
                "regions": {
                    name: {
                        field: _chained([link["regions"][name] for link in ordered[:step]], field)
                        for field in ("paired_change_pct", "subtraction_change_pct")
                    }
                    for name in names
                },
            }
        )
    for name in names:
        links = [link["regions"][name] for link in ordered]
        paired = _chained(links, "paired_change_pct")
        subtraction = _chained(links, "subtraction_change_pct")
        regions[name] = {
            "baseline_ml": links[0].get("baseline_ml"),
            "followup_ml": links[-1].get("followup_ml"),
            "paired_change_pct": paired,
            "paired_rate_pct_per_year": paired / interval if paired is not None and interval else None,
            "subtraction_change_pct": subtraction,
            "subtraction_rate_pct_per_year": subtraction / interval
            if subtraction is not None and interval
            else None,
        }
    return {
        "first_study_id": first.study_id,
        "last_study_id": last.study_id,
        "pairs": len(chain),
        "interval_years": interval,
        "method": "chained consecutive paired ratios",
        "regions": _scored(regions, rates, _rate_age(last.age, interval)),
        # The cumulative change since the first study at each study of the chain (the charts').
        "path": path,
    }


def build_timeline(
    subject_ref: str, studies: Sequence[TimelineStudy], rates: RatesTable | None = None
) -> dict[str, Any]:
    """The subject's timeline document; `studies` oldest first."""
    dated = [d for d in (_date(s.scan_date) for s in studies) if d is not None]
    origin = min(dated) if dated else None
    entries = []
    for study in studies:
        scanned = _date(study.scan_date)
        since = (
            round((scanned - origin).days / DAYS_PER_YEAR, 6)
            if scanned is not None and origin is not None
            else None
        )
        entries.append(
            {
                "study_id": study.study_id,
                "status": study.status,
                "scan_date": study.scan_date,
                "created_at": study.created_at.isoformat(),
                "years_since_first": since,
                "age": study.age,
                "measures": headline_measures(study.summary),
                "change_from_prior": _change(study, rates),
            }
        )
    return {
        "subject_ref": subject_ref,
        "studies": entries,
        "first_to_last": first_to_last(studies, rates),
        "rates_reference": dict(rates.provenance) if rates is not None else None,
    }
