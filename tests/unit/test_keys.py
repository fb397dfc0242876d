import pytest

from voxelpipe.keys import (
    InvalidKey,
    UploadKey,
    derived_key,
    new_study_id,
    parse_study_prefix,
    parse_upload_key,
    quarantine_key,
    work_key,
)


def test_upload_key_round_trip():
    study_id = new_study_id()
    key = UploadKey("lab-1", study_id, "t1w.nii.gz").key
    assert key == f"uploads/lab-1/{study_id}/t1w.nii.gz"
    assert parse_upload_key(key) == UploadKey("lab-1", study_id, "t1w.nii.gz")


def test_the_file_name_is_everything_after_the_study_id():
    # Whether the name is acceptable is validation's call (check_upload_name), but the study
    # is known either way, so the uploader can be told why.
    key = f"uploads/lab/{'a' * 32}/../escape.nii"
    assert parse_upload_key(key).filename == "../escape.nii"
    assert parse_study_prefix(key) == ("lab", "a" * 32)


@pytest.mark.parametrize(
    "key",
    [
        "uploads/lab/short/x.nii",
        "other/lab/" + "a" * 32 + "/x.nii",
        "uploads/LAB/" + "a" * 32 + "/x.nii",
        "uploads/x.nii",
    ],
)
def test_keys_outside_the_layout_name_no_study(key):
    assert parse_study_prefix(key) is None
    with pytest.raises(InvalidKey):
        parse_upload_key(key)


def test_derived_work_and_quarantine_keys():
    assert quarantine_key("uploads/lab/s/x.nii") == "quarantine/lab/s/x.nii"
    assert derived_key("s1", "qc", "a.png") == "derived/s1/qc/a.png"
    assert work_key("s1", 2, "canonical.nii") == "work/s1/2/canonical.nii"
