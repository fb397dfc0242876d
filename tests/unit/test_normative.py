"""normative: no bundled table (a clear result says so), a small user table, z-scores and
percentiles, row matching by age and sex, and table validation."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest

from voxelpipe.analyses.catalogue import AnalysisInput, AnalysisOutput
from voxelpipe.analyses.normative import (
    COLUMNS,
    NORMATIVE,
    ReferenceTableError,
    normal_cdf,
    normative_output,
    normative_result,
    parse_reference_table,
    reference_row,
)
from voxelpipe.volume import canonical, orientation
from voxelpipe.wiring import Runtime

# A made-up table for the tests: the numbers are arbitrary, and the source column says so.
TABLE = """\
# test table: arbitrary numbers, not norms
measure,sex,age_min,age_max,mean,sd,source
gm_ml,F,20,40,700,50,"test, arbitrary"
gm_ml,F,30,35,690,40,"test, narrow band"
gm_ml,M,20,40,760,60,test
gm_ml,any,0,120,720,80,test any
wm_ml,any,20,60,500,40,test
bpf,F,20,40,0.80,0.02,test
"""

VOLUMES = {"gm_ml": 650.0, "wm_ml": 540.0, "csf_ml": 260.0, "tiv_ml": 1450.0, "bpf": 0.82069}


def _input(**parameters) -> AnalysisInput:
    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    return AnalysisInput(
        image=canonical(img), original_orientation=orientation(img.affine), parameters=parameters
    )


def _upstream() -> dict[str, AnalysisOutput]:
    return {"volumetrics": AnalysisOutput(measures=dict(VOLUMES))}


def test_catalogue_entry():
    assert NORMATIVE.name == "normative"
    assert NORMATIVE.version == "2.0.0"
    assert NORMATIVE.runtime is Runtime.LAMBDA
    # Whole-brain norms stay cheap: regional is used when the study runs it, never required.
    assert NORMATIVE.requires == ("volumetrics",) and NORMATIVE.uses == ("regional",)
    assert [(r.parameter, r.kind, r.version_parameter) for r in NORMATIVE.references] == [
        ("norms", "norms", "norms_version")
    ]
    assert "reference_table_key" not in NORMATIVE.parameters
    assert COLUMNS == ("measure", "sex", "age_min", "age_max", "mean", "sd", "source")


def test_no_table_is_bundled_and_says_so():
    out = normative_output(_input(age=30, sex="F"), _upstream())
    assert out.measures["status"] == "no_reference_table"
    assert "reference_table" in out.measures["message"] and "bundles none" in out.measures["message"]
    assert "scores" not in out.measures


def test_scores_against_a_user_table():
    out = normative_output(_input(reference_table=TABLE, age=32, sex="female"), _upstream())
    m = out.measures
    assert m["status"] == "ok" and m["subject"] == {"age": 32, "sex": "F"}
    gm = m["scores"]["gm_ml"]
    # Age 32 falls in both F rows: the narrower 30-35 band wins.
    assert gm["reference"]["mean"] == 690 and gm["reference"]["line"] == 4
    assert gm["z"] == pytest.approx((650 - 690) / 40)
    assert gm["percentile"] == pytest.approx(100 * normal_cdf(-1.0), abs=1e-3)
    assert gm["percentile"] == pytest.approx(15.866, abs=1e-3)
    wm = m["scores"]["wm_ml"]
    assert wm["z"] == pytest.approx(1.0) and wm["percentile"] == pytest.approx(84.134, abs=1e-3)
    assert m["scores"]["bpf"]["z"] == pytest.approx((0.82069 - 0.80) / 0.02, abs=1e-4)
    assert m["scores"]["csf_ml"]["status"] == "no_reference_row"
    assert set(m["sources"]) == {"test, narrow band", "test"}


def test_row_matching_by_sex_and_age():
    rows = parse_reference_table(TABLE)
    assert reference_row(rows, "gm_ml", 25, "M").mean == 760
    assert reference_row(rows, "gm_ml", 50, "M").sex == "any"  # no M row at 50: the "any" row
    assert reference_row(rows, "gm_ml", 40, "F").sex == "any"  # age_max is exclusive
    assert reference_row(rows, "wm_ml", 10, "F") is None


def test_normal_cdf():
    assert normal_cdf(0.0) == pytest.approx(0.5)
    assert normal_cdf(1.959964) == pytest.approx(0.975, abs=1e-6)
    assert normal_cdf(-3.0) == pytest.approx(0.0013499, abs=1e-6)
    assert math.isclose(normal_cdf(2.0) + normal_cdf(-2.0), 1.0)


def test_missing_subject_information():
    for params in (
        {"reference_table": TABLE},
        {"reference_table": TABLE, "age": 30},
        {"reference_table": TABLE, "age": 30, "sex": "x"},
    ):
        assert normative_result(VOLUMES, params)["status"] == "missing_subject_info"


def test_the_removed_reference_table_key_is_an_unknown_parameter():
    # Nothing ever passed a loader for it: a registered norms table (parameters.norms) replaces it.
    with pytest.raises(ValueError, match="unknown normative parameters: reference_table_key"):
        normative_result(VOLUMES, {"reference_table_key": "tables/norms.csv", "age": 25, "sex": "M"})


def test_a_per_study_table_scores_regions_when_regional_ran():
    table = TABLE + "hippocampus_left,any,20,80,4.0,0.5,test regions\n"
    regional = AnalysisOutput(measures={"regions": {"hippocampus_left": {"volume_ml": 3.5}}})
    out = normative_output(
        _input(reference_table=table, age=32, sex="F"), {**_upstream(), "regional": regional}
    )
    hippocampus = out.measures["scores"]["hippocampus_left"]
    assert hippocampus["status"] == "ok" and hippocampus["z"] == pytest.approx(-1.0)
    # Without regional's output the region has no value; the whole-brain scores are unchanged.
    alone = normative_output(_input(reference_table=table, age=32, sex="F"), _upstream())
    assert alone.measures["scores"]["hippocampus_left"]["status"] == "no_value"
    assert alone.measures["scores"]["gm_ml"] == out.measures["scores"]["gm_ml"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("measure,sex,age_min,age_max,mean,sd\ngm_ml,F,0,1,1,1\n", "lacks column"),
        ("measure,sex,age_min,age_max,mean,sd,source\n", "no rows"),
        ("measure,sex,age_min,age_max,mean,sd,source\nbrain_ml,F,0,10,1,1,x\n", "measure"),
        ("measure,sex,age_min,age_max,mean,sd,source\ngm_ml,X,0,10,1,1,x\n", "sex"),
        ("measure,sex,age_min,age_max,mean,sd,source\ngm_ml,F,10,10,1,1,x\n", "age_min < age_max"),
        ("measure,sex,age_min,age_max,mean,sd,source\ngm_ml,F,0,10,1,0,x\n", "sd must be > 0"),
        ("measure,sex,age_min,age_max,mean,sd,source\ngm_ml,F,0,10,abc,1,x\n", "not a number"),
        ("measure,sex,age_min,age_max,mean,sd,source\ngm_ml,F,0,10,1,1,\n", "source is empty"),
        ("measure,sex,age_min,age_max,mean,sd,source\ngm_ml,F,0,10,1\n", "fields"),
    ],
)
def test_invalid_tables(text, message):
    with pytest.raises(ReferenceTableError, match=message):
        parse_reference_table(text)
    result = normative_result(VOLUMES, {"reference_table": text, "age": 5, "sex": "F"})
    assert result["status"] == "invalid_reference_table" and message.split()[0] in result["message"]


def test_table_tolerates_bom_case_and_column_order():
    text = '\ufeffSource,Measure,Sex,Age_Min,Age_Max,Mean,SD\n"a, b",gm_ml,f,0,100,600,50\n'
    (row,) = parse_reference_table(text)
    assert (row.measure, row.sex, row.mean, row.sd, row.source) == ("gm_ml", "F", 600.0, 50.0, "a, b")


def test_unknown_parameters_are_refused():
    with pytest.raises(ValueError, match="unknown normative parameters"):
        normative_result(VOLUMES, {"table": TABLE})
