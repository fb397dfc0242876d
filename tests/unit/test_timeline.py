"""A subject's timeline document (voxelpipe.timeline) and healthy-ageing rates tables
(voxelpipe.ageing_rates): consecutive changes, the chained first-to-last change, rate z-scores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from voxelpipe.ageing_rates import RatesError, parse_rates_table
from voxelpipe.reference_kinds import ReferenceInvalid, ReferenceKind, verify_files
from voxelpipe.timeline import TimelineStudy, build_timeline

# Made-up numbers for the test only (never a deployment's reference): a source says so.
RATES = """measure,age_min,age_max,mean_pct_per_year,sd_pct_per_year,source
# test rows
brain,50,90,-0.5,0.25,"test table, not a reference"
brain,60,70,-0.6,0.2,"test table, narrower band"
hippocampus_left,50,90,-1.0,0.5,"test table, not a reference"
"""
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _link(prior: str, interval: float, brain_pct: float, hippo_pct: float) -> dict[str, Any]:
    def region(pct: float, baseline: float) -> dict[str, Any]:
        return {
            "baseline_ml": baseline,
            "followup_ml": baseline * (1 + pct / 100),
            "paired_change_pct": pct,
            "paired_rate_pct_per_year": pct / interval,
            "subtraction_change_pct": pct * 2,
            "subtraction_rate_pct_per_year": pct * 2 / interval,
        }

    return {
        "prior_study_id": prior,
        "interval_years": interval,
        "method": "jacobian-integration",
        "regions": {"brain": region(brain_pct, 1000.0), "hippocampus_left": region(hippo_pct, 3.0)},
    }


def _study(study_id: str, day: int, scan_date: str | None, age: float, **summary: Any) -> TimelineStudy:
    return TimelineStudy(
        study_id=study_id,
        status="COMPLETED",
        created_at=T0 + timedelta(days=day),
        scan_date=scan_date,
        age=age,
        summary={"tissue-seg": {}, **summary},
    )


def _three() -> list[TimelineStudy]:
    return [
        _study(
            "s1",
            0,
            "2020-01-01",
            64.0,
            volumetrics={"gm_ml": 600.0, "wm_ml": 450.0, "csf_ml": 200.0, "tiv_ml": 1250.0, "bpf": 0.84},
            regional={"regions": {"hippocampus_left": {"volume_ml": 3.0, "number": 1}}},
            normative={"scores": {"gm_ml": {"z": -0.4}, "wm_ml": {"status": "no_norm"}}},
        ),
        _study("s2", 1, "2021-01-01", 65.0, longitudinal=_link("s1", 1.0, -1.0, -2.0)),
        _study("s3", 2, "2023-01-01", 67.0, longitudinal=_link("s2", 2.0, -2.0, -4.0)),
    ]


def test_studies_carry_dates_years_since_first_and_headline_measures():
    document = build_timeline("sub-1", _three())
    first, second, third = document["studies"]
    assert [s["years_since_first"] for s in document["studies"]] == [
        0.0,
        pytest.approx(366 / 365.25),  # 2020 is a leap year
        pytest.approx(1096 / 365.25),
    ]
    assert first["measures"]["volumetrics"]["gm_ml"] == 600.0
    assert first["measures"]["regions_ml"] == {"hippocampus_left": 3.0}
    assert first["measures"]["normative_z"] == {"gm_ml": -0.4}  # no z, no entry
    assert first["change_from_prior"] is None
    assert second["change_from_prior"]["prior_study_id"] == "s1"
    assert third["change_from_prior"]["regions"]["brain"]["paired_rate_pct_per_year"] == -1.0
    assert document["rates_reference"] is None
    assert "rate_z" not in third["change_from_prior"]["regions"]["brain"]


def test_first_to_last_chains_the_consecutive_paired_ratios():
    document = build_timeline("sub-1", _three())
    span = document["first_to_last"]
    assert (span["first_study_id"], span["last_study_id"], span["pairs"]) == ("s1", "s3", 2)
    assert span["interval_years"] == 3.0
    brain = span["regions"]["brain"]
    expected = 100 * (0.99 * 0.98 - 1)  # V3/V1 = V2/V1 * V3/V2
    assert brain["paired_change_pct"] == pytest.approx(expected)
    assert brain["paired_rate_pct_per_year"] == pytest.approx(expected / 3)
    assert brain["subtraction_change_pct"] == pytest.approx(100 * (0.98 * 0.96 - 1))
    assert brain["baseline_ml"] == 1000.0
    path = [(step["study_id"], step["regions"]["brain"]["paired_change_pct"]) for step in span["path"]]
    assert path == [("s1", 0.0), ("s2", pytest.approx(-1.0)), ("s3", pytest.approx(expected))]


def test_rates_are_scored_at_the_middle_of_their_interval_against_the_narrowest_band():
    rates = parse_rates_table(RATES)
    document = build_timeline("sub-1", _three(), rates)
    second, third = document["studies"][1:]
    # s2: age 65 at the scan, 64.5 over the interval: the 60-70 band (narrowest).
    z = second["change_from_prior"]["regions"]["brain"]["rate_z"]
    assert z["status"] == "ok" and z["z"] == pytest.approx((-1.0 + 0.6) / 0.2) and z["line"] == 4
    hippo = third["change_from_prior"]["regions"]["hippocampus_left"]["rate_z"]
    assert hippo["z"] == pytest.approx((-2.0 + 1.0) / 0.5)
    # First to last: age 67 - 1.5 = 65.5; the chained rate.
    span = document["first_to_last"]["regions"]["brain"]
    assert span["rate_z"]["z"] == pytest.approx((span["paired_rate_pct_per_year"] + 0.6) / 0.2)


def test_rates_say_why_there_is_no_score():
    rates = parse_rates_table(RATES)
    assert rates.score("brain", -1.0, 30.0) == {"status": "out_of_age_range"}
    assert rates.score("thalamus_left", -1.0, 65.0) == {"status": "no_reference"}
    assert rates.score("brain", None, 65.0) == {"status": "no_rate"}
    assert rates.score("brain", -1.0, None) == {"status": "no_age"}


def test_a_timeline_without_links_or_dates_has_no_span_and_no_years():
    studies = [_study("a", 0, None, 60.0), _study("b", 1, None, 61.0)]
    document = build_timeline("sub-2", studies)
    assert document["first_to_last"] is None
    assert [s["years_since_first"] for s in document["studies"]] == [None, None]


def test_a_link_without_an_interval_has_changes_but_no_rates():
    link = _link("a", 1.0, -1.0, -2.0)
    link["interval_years"] = None
    studies = [_study("a", 0, None, 60.0), _study("b", 1, None, 61.0, longitudinal=link)]
    span = build_timeline("sub-2", studies)["first_to_last"]
    assert span["interval_years"] is None
    assert span["regions"]["brain"]["paired_change_pct"] == pytest.approx(-1.0)
    assert span["regions"]["brain"]["paired_rate_pct_per_year"] is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("measure,age_min,age_max,mean_pct_per_year,source\n", "header lacks column(s) sd_pct_per_year"),
        (RATES.replace("hippocampus_left", "hippocampus"), "line 5: measure 'hippocampus'"),
        (RATES.replace("-0.5,0.25", "-0.5,0"), "line 3: sd_pct_per_year must be > 0"),
        (RATES.replace(',"test table, narrower band"', ","), "line 4: source is empty"),
        (RATES.replace("60,70", "50,90"), "line 4: brain, ages 50-90, is on line 3"),
        (RATES.replace("50,90,-0.5", "90,50,-0.5"), "line 3: need 0 <= age_min < age_max"),
    ],
)
def test_a_rates_table_that_cannot_be_used_is_refused_naming_the_line(text: str, message: str):
    with pytest.raises(RatesError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_rates_table(text)
    with pytest.raises(ReferenceInvalid):
        verify_files(ReferenceKind.RATES, {"table": text.encode()})


def test_a_valid_rates_table_registers_with_its_summary():
    summary = verify_files(ReferenceKind.RATES, {"table": RATES.encode()})
    assert summary["rows"] == 3 and summary["measures"] == ["brain", "hippocampus_left"]
