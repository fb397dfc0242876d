"""Norms tables (normative equations): parsing and its line-numbered errors, the choice of row,
z-scores and percentiles against hand-computed values, and normative's use of a registered table."""

from __future__ import annotations

import pytest

from voxelpipe.analyses.normative import normative_result, normed_values
from voxelpipe.analyses.norms import (
    NORMED_MEASURES,
    NormsError,
    NormsTable,
    normal_cdf,
    parse_norms_table,
    score_measures,
)
from voxelpipe.analyses.volumetrics import MEASURES
from voxelpipe.atlases import REGIONS

HEADER = "measure,sex,age_min,age_max,b0,b_age,b_age2,b_sex,b_tiv,b_field,age_center,tiv_center,sd,source"
# Made-up equations for the tests: the numbers are arbitrary, and the source says so.
TABLE = f"""\
# test norms: arbitrary numbers, not norms
{HEADER}
hippocampus_left,any,40,90,4.0,-0.02,-0.0002,0.1,0.001,0.05,50,1500,0.4,"test, arbitrary"
gm_ml,F,20,60,700,-2,,,0.3,,40,1400,40,test F
gm_ml,F,30,35,690,0,0,0,0,,0,0,20,test F narrow
gm_ml,M,20,60,760,-2,,,0.3,,40,1500,50,test M
wm_ml,any,20,60,500,0,0,0,0,,0,0,25,test wm
bpf,any,20,60,0.8,0,0,0,0,0.01,0,0,0.02,test field
"""


def test_measures_are_volumetrics_and_every_region():
    assert (*MEASURES, *REGIONS) == NORMED_MEASURES


def test_the_equation_against_hand_computed_values():
    table = parse_norms_table(TABLE)
    # Male, 70 years, TIV 1600 mL, 3 T: A = 20, expected = 4.0 - 0.4 - 0.08 + 0.1 + 0.1 + 0.05 = 3.77;
    # observed 2.97 is 0.8 below: z = -2, percentile = 100 * Phi(-2) = 2.275.
    scores = score_measures(
        table, {"hippocampus_left": 2.97}, age=70, sex="M", tiv_ml=1600.0, field_strength_t=3.0
    )
    hippocampus = scores["hippocampus_left"]
    assert hippocampus["status"] == "ok"
    assert hippocampus["expected"] == pytest.approx(3.77)
    assert hippocampus["z"] == pytest.approx(-2.0)
    assert hippocampus["percentile"] == pytest.approx(2.275, abs=1e-3)
    assert hippocampus["equation"] == {
        "line": 3,
        "sex": "any",
        "age_range": [40.0, 90.0],
        "source": "test, arbitrary",
    }
    # Female at 1.5 T: no sex or field term, expected 3.62; z = (2.97 - 3.62) / 0.4 = -1.625.
    female = score_measures(
        table, {"hippocampus_left": 2.97}, age=70, sex="F", tiv_ml=1600.0, field_strength_t=1.5
    )["hippocampus_left"]
    assert female["expected"] == pytest.approx(3.62) and female["z"] == pytest.approx(-1.625)
    assert female["percentile"] == pytest.approx(100 * normal_cdf(-1.625), abs=1e-3)
    assert normal_cdf(-1.0) == pytest.approx(0.158655, abs=1e-6)


def test_the_row_of_the_subjects_sex_and_the_narrowest_age_range_is_used():
    table = parse_norms_table(TABLE)
    values = {"gm_ml": 650.0, "wm_ml": 550.0}
    female = score_measures(table, values, age=32, sex="F", tiv_ml=1400.0, field_strength_t=None)
    # 32 falls in both F rows: the 30-35 one wins. z = (650 - 690) / 20 = -2.
    assert female["gm_ml"]["equation"]["line"] == 5 and female["gm_ml"]["z"] == pytest.approx(-2.0)
    male = score_measures(table, values, age=50, sex="M", tiv_ml=1600.0, field_strength_t=None)
    # 760 - 2 * 10 + 0.3 * 100 = 770: z = (650 - 770) / 50 = -2.4.
    assert male["gm_ml"]["expected"] == pytest.approx(770.0) and male["gm_ml"]["z"] == pytest.approx(-2.4)
    assert male["wm_ml"]["z"] == pytest.approx(2.0) and male["wm_ml"]["equation"]["sex"] == "any"


def test_what_cannot_be_scored_says_why_and_gives_no_score():
    table = parse_norms_table(TABLE)
    values = {"gm_ml": 650.0, "bpf": 0.8, "hippocampus_left": 3.5}
    scores = score_measures(table, values, age=85, sex="F", tiv_ml=None, field_strength_t=None)
    # Outside every F range: not extrapolated.
    assert scores["gm_ml"] == {
        "status": "out_of_age_range",
        "value": 650.0,
        "age_ranges": [[20.0, 60.0], [30.0, 35.0]],
    }
    assert "z" not in scores["gm_ml"]
    assert scores["bpf"]["status"] == "out_of_age_range"
    assert scores["hippocampus_left"]["status"] == "no_tiv"  # its equation has a TIV term
    assert scores["wm_ml"] == {"status": "no_value", "value": None}
    at_50 = score_measures(table, values, age=50, sex="F", tiv_ml=1400.0, field_strength_t=None)
    assert at_50["bpf"]["status"] == "no_field_strength"
    only_f = parse_norms_table(f"{HEADER}\ngm_ml,F,20,60,700,0,0,0,0,0,0,0,40,x\n")
    assert (
        score_measures(only_f, {"gm_ml": 1.0}, age=30, sex="M", tiv_ml=1.0, field_strength_t=None)["gm_ml"][
            "status"
        ]
        == "no_norm"
    )


def test_optional_columns_may_be_left_out_and_empty_coefficients_are_zero():
    text = (
        "Measure,Sex,Age_Min,Age_Max,B0,B_Age,B_Age2,B_Sex,B_TIV,SD,Source\ncsf_ml,any,0,100,250,,,,,30,x\n"
    )
    (row,) = parse_norms_table("\ufeff" + text).rows
    assert (row.b_age, row.b_field, row.age_center, row.tiv_center) == (0.0, 0.0, 0.0, 0.0)
    assert row.expected(40, "F", 1500.0, True) == 250.0


ROW = "gm_ml,any,20,60,700,0,0,0,0,0,0,0,40,src"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        (f"{HEADER}\n", "no rows"),
        ("measure,sex,age_min,age_max,b0,sd,source\n" + "gm_ml,F,0,1,1,1,x\n", "line 1: header lacks column"),
        (f"{HEADER},weight\n{ROW},1\n", "line 1: unknown or repeated column"),
        (f"{HEADER}\n{ROW.replace('gm_ml', 'brain_ml')}\n", "line 2: measure 'brain_ml'"),
        (f"{HEADER}\n{ROW.replace(',any,', ',X,')}\n", "line 2: sex 'X'"),
        (f"{HEADER}\n{ROW.replace(',20,60,', ',60,20,')}\n", "line 2: need 0 <= age_min < age_max"),
        (f"{HEADER}\n{ROW.replace(',40,src', ',0,src')}\n", "line 2: sd must be > 0"),
        (f"{HEADER}\n{ROW.replace(',700,', ',abc,')}\n", "line 2: b0 'abc' is not a number"),
        (f"{HEADER}\n{ROW.replace(',src', ',')}\n", "line 2: source is empty"),
        (
            f"{HEADER}\n{ROW.replace(',any,20,60,700,0,0,0,', ',F,20,60,700,0,0,0.5,')}\n",
            "line 2: a row for sex F",
        ),
        (
            f"{HEADER}\n{ROW.replace('gm_ml', 'tiv_ml').replace(',0,0,0,0,0,0,0,40', ',0,0,0,1,0,0,0,40')}\n",
            "b_tiv",
        ),
        (f"{HEADER}\n# a comment\n{ROW}\n{ROW}\n", "line 4: gm_ml for sex any, ages 20-60, is on line 3"),
        (f"{HEADER}\n{ROW},extra\n", "line 2: 15 fields"),
        (f"{HEADER}\n{ROW.replace(',700,', ',inf,')}\n", "line 2: b0 must be finite"),
    ],
)
def test_invalid_tables_are_refused_naming_the_line(text: str, message: str):
    with pytest.raises(NormsError, match=message):
        parse_norms_table(text)


def test_normative_scores_against_a_registered_table():
    table = NormsTable(rows=parse_norms_table(TABLE).rows, provenance={"name": "test-norms", "version": 2})
    volumetrics = {"gm_ml": 650.0, "wm_ml": 550.0, "csf_ml": 300.0, "tiv_ml": 1600.0, "bpf": 0.76}
    regional = {"regions": {"hippocampus_left": {"volume_ml": 2.97}, "not_a_region": {"volume_ml": 1}}}
    values = normed_values(volumetrics, regional)
    assert values["hippocampus_left"] == 2.97 and "not_a_region" not in values
    params = {"norms": "test-norms", "age": 70, "sex": "M", "field_strength_t": 3}
    result = normative_result(values, params, table)
    assert result["status"] == "ok" and result["form"] == "equations"
    assert result["norms"] == {"name": "test-norms", "version": 2}
    assert result["subject"] == {"age": 70, "sex": "M", "tiv_ml": 1600.0, "field_strength_t": 3.0}
    assert result["scores"]["hippocampus_left"]["z"] == pytest.approx(-2.0)  # TIV from volumetrics
    assert result["scores"]["gm_ml"]["status"] == "out_of_age_range"
    assert result["sources"] == ["test, arbitrary"]
    # Whole-brain only (no regional): the region has no value, the rest is scored alike.
    alone = normative_result(normed_values(volumetrics, None), params, table)
    assert alone["scores"]["hippocampus_left"]["status"] == "no_value"
    assert (
        normative_result(values, {**params, "field_strength_t": 7}, table)["status"] == "invalid_parameters"
    )
    assert normative_result(values, {**params, "sex": None}, table)["status"] == "missing_subject_info"
    both = normative_result(values, {**params, "reference_table": "x"}, table)
    assert both["status"] == "invalid_parameters" and "not both" in both["message"]
    assert normative_result(values, params, None)["status"] == "no_reference_table"
