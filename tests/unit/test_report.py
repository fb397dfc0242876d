"""The study report's HTML: self-contained, its numbers those of results.json, no PHI, flags in words."""

from __future__ import annotations

import re

import pytest

from tests.fixtures.pdf_pages import hooked_numbers, value_at
from tests.fixtures.report_document import SUBJECT, UPLOADED_NAME, report_arrays, report_document
from voxelpipe.report import build_report
from voxelpipe.report.flags import study_flags


@pytest.fixture(scope="module")
def page() -> str:
    return build_report(report_document(), SUBJECT, report_arrays())


def test_the_page_is_self_contained(page: str):
    hooks = hooked_numbers(page)
    assert hooks.resources, "the figures are images"
    assert all(value.startswith("data:image/png;base64,") for _, value in hooks.resources), hooks.resources
    assert not re.search(r"<(script|link|iframe|object|embed)\b", page, re.IGNORECASE)
    assert "url(" not in page and "@import" not in page


def test_every_number_printed_is_results_json(page: str):
    document = report_document()
    numbers = hooked_numbers(page).numbers
    expected = {
        "measure:volumetrics.gm_ml",
        "measure:volumetrics.bpf",
        "measure:volumetrics.fractions_of_tiv.csf",
        "measure:regional.regions.hippocampus_left.volume_ml",
        "measure:regional.structures.hippocampus.asymmetry",
        "measure:normative.scores.gm_ml.z",
        "measure:normative.scores.gm_ml.percentile",
        "measure:normative.scores.wm_ml.reference.mean",
        "measure:qc.snr",
        "doc:timings_ms.analysis:qc",
        "doc:provenance.cost.estimated_usd",
    }
    assert expected <= set(numbers), expected - set(numbers)
    for hook, text in numbers.items():
        assert float(text) == value_at(document, hook), hook


def test_no_file_name_or_identifier_beyond_the_study(page: str):
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", page)  # base64 may spell anything
    assert UPLOADED_NAME not in text and "Doe_John" not in text
    assert "00000.nii.gz" not in text and "uploads/" not in text
    assert "sub-042" in page and "0123456789abcdef0123456789abcdef" in page


def test_qc_flags_in_words(page: str):
    assert "Unknown spatial orientation" in page
    assert "left and right may be swapped" in page
    assert "Non-commercial atlas" in page
    assert "gm ml outside the 2.5th-97.5th centiles" in page


def test_figures_are_drawn_for_what_ran(page: str):
    alts = re.findall(r'<img alt="([^"]+)"', page)
    assert alts == ["centile charts", "z-scores", "tissue segmentation", "regions"]


def test_a_study_without_arrays_or_normative_still_reports():
    document = report_document()
    del document["analyses"]["normative"]
    page = build_report(document, None, None)
    assert "<img" not in page and "could not be read" in page
    assert "not given" in page  # no subject declared


def test_an_unreadable_normative_result_is_said_not_scored():
    document = report_document()
    document["analyses"]["normative"]["measures"] = {"status": "no_reference_table", "message": "no table"}
    page = build_report(document, SUBJECT, None)
    assert "No normative scores: no_reference_table" in page
    assert any(flag.title == "No normative comparison" for flag in study_flags(document))


def _timeline() -> dict:
    """Three studies of the report's subject, the last this one, with made-up paired changes."""
    from datetime import UTC, datetime

    from voxelpipe.ageing_rates import parse_rates_table
    from voxelpipe.timeline import TimelineStudy, build_timeline

    def link(prior: str, interval: float, pct: float) -> dict:
        region = {
            "baseline_ml": 1000.0,
            "followup_ml": 1000.0 * (1 + pct / 100),
            "paired_change_pct": pct,
            "paired_rate_pct_per_year": pct / interval,
            "subtraction_change_pct": 3 * pct,
            "subtraction_rate_pct_per_year": 3 * pct / interval,
        }
        return {"prior_study_id": prior, "interval_years": interval, "regions": {"brain": region}}

    def study(study_id: str, day: int, when: str, **summary: object) -> TimelineStudy:
        created = datetime(2026, 1, 1 + day, tzinfo=UTC)
        return TimelineStudy(study_id, "COMPLETED", created, when, 70.0, {"tissue-seg": {}, **summary})

    rates = parse_rates_table(
        "measure,age_min,age_max,mean_pct_per_year,sd_pct_per_year,source\nbrain,60,80,-0.5,0.3,test only\n"
    )
    studies = [
        study("a" * 32, 0, "2021-02-01"),
        study("b" * 32, 1, "2022-02-01", longitudinal=link("a" * 32, 1.0, -0.8)),
        study("0123456789abcdef0123456789abcdef", 2, "2024-02-01", longitudinal=link("b" * 32, 2.0, -1.5)),
    ]
    return build_timeline("sub-042", studies, rates)


def test_a_subject_with_earlier_studies_gets_a_timeline_chart_and_table():
    timeline = _timeline()
    page = build_report(report_document(), SUBJECT, None, timeline)
    assert "Over time (subject sub-042)" in page
    assert "timeline chart" in re.findall(r'<img alt="([^"]+)"', page)
    hooks = dict(re.findall(r'data-timeline="([^"]+)" data-value="([^"]+)"', page))
    expected = {
        "studies.1.change_from_prior.regions.brain.paired_change_pct",
        "studies.2.change_from_prior.regions.brain.paired_rate_pct_per_year",
        "studies.2.change_from_prior.regions.brain.rate_z.z",
        "studies.2.years_since_first",
        "first_to_last.regions.brain.paired_change_pct",
    }
    assert expected <= set(hooks), expected - set(hooks)
    for hook, text in hooks.items():
        value: object = timeline
        for part in hook.split("."):
            value = value[int(part)] if isinstance(value, list) else value[part]  # type: ignore[index]
        assert float(text) == value, hook
    # One study alone (or none): no timeline section.
    alone = {**timeline, "studies": timeline["studies"][:1], "first_to_last": None}
    assert "Over time" not in build_report(report_document(), SUBJECT, None, alone)
