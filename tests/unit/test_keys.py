import pytest

from voxelpipe.keys import (
    DEPLOYMENT_OWNER,
    InvalidKey,
    UploadKey,
    derived_key,
    is_tenant,
    model_key,
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
        "uploads/lab\n/" + "a" * 32 + "/x.nii",
        "uploads/lab/" + "a" * 32 + "\n/x.nii",
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


@pytest.mark.parametrize(
    ("tenant", "valid"),
    [
        ("lab-a", True),
        ("0", True),
        ("a" * 63, True),
        ("a" * 64, False),
        ("", False),
        ("-lab", False),
        ("Lab", False),
        ("lab_a", False),
        ("lab.a", False),
        ("lab/a", False),
        ("lab a", False),
        ("lab\n", False),  # a regex's $ would let the newline through
        ("l\u0430b", False),  # a Cyrillic a
        (DEPLOYMENT_OWNER, False),  # the deployment's models are no tenant's
    ],
)
def test_tenants_are_the_names_bucket_keys_take(tenant: str, valid: bool):
    assert is_tenant(tenant) is valid


def test_model_keys_belong_to_a_tenant_or_the_deployment():
    assert model_key("lab-a", "seg", "2", "model.pt") == "models/lab-a/seg/2/model.pt"
    assert model_key(DEPLOYMENT_OWNER, "seg", "1", "model.json") == "models/_deployment/seg/1/model.json"
    for owner in ("../lab-a", "", "Lab", "lab/a"):
        with pytest.raises(InvalidKey):
            model_key(owner, "seg", "1", "model.pt")
