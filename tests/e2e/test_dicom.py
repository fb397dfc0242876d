"""DICOM through the whole local cloud: series, .zip, duplicates, bad series, de-identification."""

from __future__ import annotations

import io
import json
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import nibabel as nib
import numpy as np
import pydicom
import pytest

from infra.local.cloud import LocalCloud
from infra.local.studies import report, submit_files, upload_name, wait_for_terminal
from tests.fixtures.cloud import checked_cloud
from tests.fixtures.dicom import dicom_cases, make_series
from tests.fixtures.dicom_corpus import corpus
from tests.fixtures.phi_scan import sightings
from voxelpipe.adapters.identity_maps import DynamoIdentityMaps
from voxelpipe.adapters.queues import SqsWorkQueues
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.dicom import BASIC_PROFILE, assemble_series, read_instance_header
from voxelpipe.dicom.reidentify import reidentify
from voxelpipe.function_specs import EGRESS
from voxelpipe.keys import derived_key
from voxelpipe.pipeline import manage
from voxelpipe.records import StudyRecord
from voxelpipe.rejections import Rejected
from voxelpipe.status import StudyStatus
from voxelpipe.wiring import EnvVar

STORE = DynamoStudyStore()


def _files(instances: list[bytes]) -> list[tuple[str, bytes]]:
    return [(f"im{number:04d}.dcm", data) for number, data in enumerate(instances)]


def _keys(cloud: LocalCloud, prefix: str) -> list[str]:
    listing = boto3.client("s3").list_objects_v2(Bucket=cloud.bucket, Prefix=prefix)
    return [item["Key"] for item in listing.get("Contents", [])]


def _holding(cloud: LocalCloud, values: list[str], *, but: str) -> list[str]:
    """Where in the local cloud any of `values` is: every object version, every item of every table
    except `but`."""
    found = sightings(values, buckets=[cloud.bucket], except_tables=[but] if but else [])
    return [f"{hit.where.removeprefix('dynamodb:')}: {hit.marker}" for hit in found]


def test_a_series_converts_is_deidentified_and_completes(cloud: LocalCloud):
    series = make_series(n_slices=8, rows=32, cols=28)
    study_id = submit_files(cloud, _files(series.instances), input_format="dicom")
    record = wait_for_terminal([study_id], timeout_s=120)[study_id]
    assert record.status == StudyStatus.COMPLETED, (record.reason_detail, record.error)
    assert record.input["format"] == "dicom" and record.input["instances"] == 8

    # The converted volume is an artifact, with the series' voxels and geometry.
    s3 = boto3.client("s3")
    volume_key = derived_key(study_id, "input/volume.nii.gz")
    volume = nib.Nifti1Image.from_bytes(
        __import__("gzip").decompress(s3.get_object(Bucket=cloud.bucket, Key=volume_key)["Body"].read())
    )
    assert volume.shape == (28, 32, 8) or sorted(volume.shape) == sorted((28, 32, 8))
    assert np.isclose(float(np.asanyarray(volume.dataobj).sum()), float(series.values.sum()))

    # Only de-identified objects remain: originals are gone, every copy is de-identified.
    assert _keys(cloud, f"uploads/demo/{study_id}/") == []
    # (Finalize files its DICOM outputs beside the copies: docs/dicom-outputs.md.)
    objects = {
        key: pydicom.dcmread(io.BytesIO(s3.get_object(Bucket=cloud.bucket, Key=key)["Body"].read()))
        for key in _keys(cloud, derived_key(study_id, "dicom/"))
    }
    copies = {key: ds for key, ds in objects.items() if ds.Manufacturer != "voxelpipe"}
    assert len(copies) == 8
    for key, ds in copies.items():
        assert ds.PatientIdentityRemoved == "YES"
        assert ds.SeriesInstanceUID != series.series_uid and ds.StudyInstanceUID != series.study_uid
        for tag, action in BASIC_PROFILE.items():
            # (Dates a subject's offset shifts stay, shifted: PS3.15's modified-dates option.)
            if action == "X" and tag in ds and ds[tag].VR not in ("DA", "DT"):
                pytest.fail(f"{pydicom.tag.Tag(tag)} survives de-identification in {key}")
        assert not [element for element in ds if element.tag.is_private]

    # The honest broker: Prepare kept the originals' identifiers in the identity map (which only
    # egress may read), and they are nowhere else: no object version, no other table's item.
    with cloud.acting_as(EGRESS.name):
        identities = DynamoIdentityMaps().get(study_id)
    assert identities is not None
    original = pydicom.dcmread(io.BytesIO(series.instances[0]))
    copy = next(iter(copies.values()))
    restored = reidentify(copy, identities)
    assert (restored.StudyInstanceUID, restored.SeriesInstanceUID) == (series.study_uid, series.series_uid)
    assert (restored.PatientID, restored.AccessionNumber) == (original.PatientID, original.AccessionNumber)
    phi = [original.PatientID, str(original.PatientName), original.AccessionNumber, series.study_uid]
    identity_table = cloud.env(EnvVar.IDENTITY_MAP_TABLE)
    assert not _holding(cloud, [*phi, series.series_uid], but=identity_table)
    assert {hit.split(": ")[0] for hit in _holding(cloud, phi, but="")} == {identity_table}  # seen there

    # Reprocess reads the de-identified copies, since the originals are gone (and Prepare's role
    # may read them: the local cloud holds each function to its role's policies).
    reopened = manage.reprocess(
        record, STORE, Storage(cloud.bucket), SqsWorkQueues(), actor="test", source="test"
    )
    assert reopened.input_key == derived_key(study_id, "dicom/")
    again = wait_for_terminal([study_id], timeout_s=120)[study_id]
    assert (again.status, again.attempt) == (StudyStatus.COMPLETED, 2), again.error
    # Attempt 1's DICOM outputs were kept under attempts/1/; the de-identified copies stayed.
    outputs = {key for key in objects if key not in copies}
    assert outputs and set(copies) <= set(_keys(cloud, derived_key(study_id, "dicom/")))
    archived = set(_keys(cloud, derived_key(study_id, "attempts", "1") + "/"))
    assert {key.replace(f"{study_id}/", f"{study_id}/attempts/1/") for key in outputs} <= archived


def test_a_zip_of_a_series_with_a_duplicate_instance_completes(cloud: LocalCloud):
    series = make_series(n_slices=5, rows=16, cols=16)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        for name, data in _files(series.instances):
            bundle.writestr(f"series/{name}", data)
        bundle.writestr("series/again.dcm", series.instances[0])  # the same SOP instance twice
    study_id = submit_files(cloud, [("series.zip", archive.getvalue())], input_format="dicom")
    record = wait_for_terminal([study_id], timeout_s=120)[study_id]
    assert record.status == StudyStatus.COMPLETED, record.reason_detail
    assert record.input["instances"] == 5
    assert "duplicate_instances" in [row.action for row in STORE.audit_trail(study_id)]


# Every broken series the fixtures make (a study always declares at least one file).
CASES = {case.id: case for case in dicom_cases() if case.instances}


@dataclass(frozen=True)
class BadSeriesOutcome:
    record: StudyRecord
    uploads_left: list[str]  # the study's objects still under uploads/
    reported_reason: str | None  # what `voxelpipe demo` reports
    errors: list[str]  # "function: error" of the study's invocations, Prepare's excepted


@pytest.fixture(scope="module")
def bad_series(template: dict[str, Any]) -> dict[str, BadSeriesOutcome]:
    """Every case sent at once through one local cloud (a cloud each cost more than its study), what
    became of each read before the cloud closes: the tests below compare it with the case's own."""
    with checked_cloud(template) as cloud:
        studies = {
            submit_files(cloud, _files(case.instances), input_format="dicom"): case_id
            for case_id, case in CASES.items()
        }
        records = wait_for_terminal(list(studies), timeout_s=300)
        # Each error is its study's; one whose event names no study is every case's.
        errors: dict[str | None, list[str]] = {}
        for call in cloud.invocations:
            if call.error and call.function != "prepare":
                event = json.dumps(call.event)
                owner = next((study_id for study_id in studies if study_id in event), None)
                errors.setdefault(owner, []).append(f"{call.function}: {call.error}")
        outcomes = {}
        for study_id, case_id in studies.items():
            record = records[study_id]
            assert record is not None, f"{case_id}: never ingested"
            outcomes[case_id] = BadSeriesOutcome(
                record,
                _keys(cloud, f"uploads/demo/{study_id}/"),
                report(cloud, study_id, case_id).as_json().get("reason"),
                [*errors.get(study_id, []), *errors.get(None, [])],
            )
    return outcomes


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_a_bad_series_is_rejected_with_its_reason(bad_series: dict[str, BadSeriesOutcome], case_id: str):
    case, outcome = CASES[case_id], bad_series[case_id]
    record = outcome.record
    assert (record.status, record.reason) == (StudyStatus.REJECTED, case.upload_reason.value), (
        record.reason_detail
    )
    assert outcome.uploads_left == []  # quarantined, or deleted once decoded
    assert outcome.reported_reason == case.upload_reason.value
    assert outcome.errors == []


def _verdict(data: bytes) -> tuple[str, str, str | None]:
    """What the domain makes of a file alone: (the header check's verdict, the series', the
    transfer syntax). tests/unit/test_dicom_corpus.py holds every file to these."""
    try:
        syntax: str | None = read_instance_header(data).transfer_syntax
        header = "ok"
    except Rejected as rejected:
        header, syntax = rejected.reason.value, None
    try:
        assemble_series([data])
    except Rejected as rejected:
        return header, rejected.reason.value, syntax
    return header, "converted", syntax


def _one_file_of_each_kind() -> dict[str, tuple[bytes, str]]:
    """One corpus file per (header verdict, series verdict, transfer syntax), and every file that
    converts (those run Prepare and an analysis): name -> (content, expected outcome)."""
    kinds: dict[tuple[str, str, str | None], str] = {}
    picked: dict[str, tuple[bytes, str]] = {}
    for name, data in corpus():
        header, series, syntax = _verdict(data)
        kind = (header, series, syntax if series != "converted" else name)
        if kind not in kinds:
            kinds[kind] = name
            picked[name] = (data, "COMPLETED" if series == "converted" else f"REJECTED:{series}")
    return picked


def test_each_kind_of_corpus_file_uploaded_alone_ends_as_the_domain_decides(cloud: LocalCloud):
    """Every kind of file pydicom and nibabel ship, each alone as a study, all at once: the
    pipeline ends each as the domain's verdict says (the unit tier checks all ~200 files there)."""
    picked = _one_file_of_each_kind()
    studies = {}
    for name, (data, _) in picked.items():
        filename = upload_name(Path(name.replace("/", "_").replace("[gunzip]", "")))
        # qc, the cheapest analysis: these files are about getting in, not about measuring.
        studies[submit_files(cloud, [(filename, data)], input_format="dicom", analyses=["qc"])] = name
    records = wait_for_terminal(list(studies), timeout_s=600)
    outcomes = {
        studies[sid]: "NOT_INGESTED" if r is None else (f"{r.status}:{r.reason}" if r.reason else r.status)
        for sid, r in records.items()
    }
    assert outcomes == {name: expected for name, (_, expected) in picked.items()}
    crashes = [i for i in cloud.invocations if i.error and i.error != "StudyRejected"]
    assert crashes == [], [(c.function, c.error) for c in crashes]
    kinds = Counter(outcomes.values())
    assert kinds["COMPLETED"] >= 3 and len(kinds) >= 5, kinds  # RT dose grids, the Philips MPRAGE
