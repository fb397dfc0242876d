"""No accepted upload fails, or is silently wrong, for its values.

Every supported stored type x every kind of scaling x extreme values: validation either rejects
the upload with the right reason, or accepts it and then Prepare's canonical conversion and the
qc analysis succeed with finite measures that describe the values the upload holds.  The
expected outcome is computed here independently of nibabel: the stored values times the header's
float32 slope plus its intercept, in float64, then in float32 (what the analyses compute in).
"""

from __future__ import annotations

import json
import math
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from isal import igzip

from tests.fixtures.bad_nifti import GOOD_AFFINE, blob_volume, edit_header
from voxelpipe.analyses.catalogue import AnalysisInput
from voxelpipe.analyses.qc import QC
from voxelpipe.limits import Limits
from voxelpipe.nifti import load_nifti, to_nifti_bytes
from voxelpipe.pipeline.prepare import canonical_volume
from voxelpipe.rejections import ReasonCode, Rejected
from voxelpipe.validation import check_volume
from voxelpipe.volume import orientation

SHAPE = (20, 18, 16)
DATATYPES = ("uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64")
# (name, scl_slope, scl_inter); slope 0 means "no scaling" in NIfTI.
SCALINGS = (
    ("none", 0.0, 0.0),
    ("integer", 2.0, -100.0),
    ("float", 0.37, 12.5),
    ("huge", 1e30, 0.0),  # finite in float32 for small stored values, past it for large ones
    ("overflowing", 3e38, 0.0),  # past float32 for any stored magnitude above ~1.1
    ("tiny", 1e-45, 0.0),  # a float32 subnormal: every value tiny, the range too
)
EXTREMES = ("typical", "type_limits")


def _stored_values(dtype: np.dtype[Any], extremes: str) -> np.ndarray:
    """A head-like blob in the type's range, with the type's own extremes written in when asked."""
    blob = blob_volume(SHAPE, np.float64)  # 0 .. ~1050
    if dtype.kind == "f":
        data = blob.astype(dtype)
        if extremes == "type_limits":
            top = float(np.finfo(np.float32).max) * 0.99 if dtype == np.float32 else 1e308
            data[0, 0, 0], data[1, 0, 0] = top, -top
            data[2, 0, 0] = np.finfo(dtype).smallest_subnormal
        return data
    info = np.iinfo(dtype)
    scale = min(1.0, (int(info.max) - max(int(info.min), 0)) / 1100.0)
    data = (blob * scale + max(int(info.min), 0) + (0 if info.min >= 0 else -50 * scale)).astype(dtype)
    if extremes == "type_limits":
        data[0, 0, 0], data[1, 0, 0] = info.max, info.min
    return data


def _upload(data: np.ndarray, slope: float, inter: float) -> bytes:
    raw = nib.Nifti1Image(data, GOOD_AFFINE, dtype=data.dtype).to_bytes()

    def scale(header: nib.Nifti1Header) -> None:
        header["scl_slope"] = slope
        header["scl_inter"] = inter

    return igzip.compress(edit_header(raw, scale))


def _expected_float32(data: np.ndarray, slope: float, inter: float) -> np.ndarray:
    """The values the analyses should see, computed without nibabel."""
    slope32, inter32 = float(np.float32(slope)), float(np.float32(inter))
    values = data.astype(np.float64)
    with np.errstate(over="ignore"):
        if slope32 != 0.0 and (slope32, inter32) != (1.0, 0.0):
            values = values * slope32 + inter32
        return values.astype(np.float32)


def _assert_finite_numbers(value: Any, where: str = "measures") -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _assert_finite_numbers(item, f"{where}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _assert_finite_numbers(item, f"{where}[{index}]")
    elif isinstance(value, float):
        assert math.isfinite(value), where


@pytest.mark.parametrize("extremes", EXTREMES)
@pytest.mark.parametrize(("scaling", "slope", "inter"), SCALINGS, ids=[s[0] for s in SCALINGS])
@pytest.mark.parametrize("dtype_name", DATATYPES)
def test_rejected_with_its_reason_or_analysed_with_finite_measures(
    dtype_name: str, scaling: str, slope: float, inter: float, extremes: str
) -> None:
    data = _stored_values(np.dtype(dtype_name), extremes)
    content = _upload(data, slope, inter)
    expected = _expected_float32(data, slope, inter)

    try:
        summary = check_volume(content, Limits())
    except Rejected as rejected:
        assert rejected.reason == ReasonCode.NON_FINITE_DATA, rejected.detail
        assert not np.isfinite(expected).all(), "rejected, but every value is finite in float32"
        assert "float32" in rejected.detail
        return
    assert np.isfinite(expected).all(), "accepted, but some values are not finite in float32"
    assert (summary.data_min, summary.data_max) == (float(expected.min()), float(expected.max()))

    # Prepare: the canonical volume nibabel can write, holding the values the analyses expect.
    canonical = canonical_volume(load_nifti(content))
    assert canonical.get_data_dtype() not in (np.int64, np.uint64)
    prepared = load_nifti(to_nifti_bytes(canonical, compress=False))
    seen = prepared.get_fdata(dtype=np.float32)
    np.testing.assert_array_equal(seen, expected)  # GOOD_AFFINE is RAS: no reordering

    # qc on it: finite measures, all plain JSON.
    output = QC.run(
        AnalysisInput(image=prepared, original_orientation=orientation(GOOD_AFFINE), parameters={})
    )
    json.dumps(output.measures, allow_nan=False)
    _assert_finite_numbers(output.measures)
    intensity = output.measures["intensity"]
    assert intensity["min"] == pytest.approx(float(expected.min()), rel=1e-5)
    assert intensity["max"] == pytest.approx(float(expected.max()), rel=1e-5)
    assert intensity["nonfinite_fraction"] == 0.0
    assert not any("non-finite" in warning for warning in output.measures["warnings"])
    assert len(output.artifacts) == 3


def test_the_matrix_covers_both_outcomes() -> None:
    """The matrix above is not all rejections or all acceptances: both paths are exercised."""
    outcomes = set()
    for dtype_name in ("int16", "float64"):
        for _, slope, inter in SCALINGS:
            data = _stored_values(np.dtype(dtype_name), "type_limits")
            try:
                check_volume(_upload(data, slope, inter), Limits())
                outcomes.add("accepted")
            except Rejected:
                outcomes.add("rejected")
    assert outcomes == {"accepted", "rejected"}
