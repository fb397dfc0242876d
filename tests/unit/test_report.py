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
