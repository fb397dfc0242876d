"""The reference data registry against moto (S3 + DynamoDB via mock_aws): an atlas and a norms table
registered, uploaded, completed, listed, pinned and retired; what it refuses."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import boto3
import numpy as np
import pytest
from moto import mock_aws

from tests.fixtures.reference_data import LABELS, METADATA, NORMS, label_map, tiny_map
from voxelpipe import references
from voxelpipe.adapters.storage import Storage
from voxelpipe.analyses import CATALOGUE
from voxelpipe.analyses.catalogue import ATLAS_REFERENCE, Analysis
from voxelpipe.atlases import Atlas
from voxelpipe.keys import DEPLOYMENT_OWNER
from voxelpipe.records import ReferenceRecord
from voxelpipe.reference_kinds import ReferenceInvalid, ReferenceKind
from voxelpipe.references import ReferenceStatus
from voxelpipe.wiring import EnvVar, Runtime

BUCKET = "references-test-bucket"
TENANT = "lab-a"
ATLAS, NORMS_KIND = ReferenceKind.ATLAS, ReferenceKind.NORMS
NORMS_METADATA = METADATA.model_copy(update={"space": None, "commercial_use": False})


@pytest.fixture
def storage(monkeypatch: pytest.MonkeyPatch) -> Iterator[Storage]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv(EnvVar.BUCKET, BUCKET)
    monkeypatch.setenv(EnvVar.REFERENCES_TABLE, "references")
    with mock_aws():
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        ReferenceRecord.create_table(billing_mode="PAY_PER_REQUEST", wait=True)
        yield Storage(BUCKET)


def _declare(files: dict[str, bytes]) -> dict[str, tuple[int, str | None]]:
    return {role: (len(data), hashlib.sha256(data).hexdigest()) for role, data in files.items()}


def _upload(storage: Storage, record: ReferenceRecord, files: dict[str, bytes]) -> None:
    for role, entry in references.record_files(record).items():
        storage.write(entry.key, files[role])


def _keys(storage: Storage, prefix: str) -> list[str]:
    return storage.list_keys(prefix)


def test_an_atlas_is_registered_uploaded_completed_listed_and_retired(storage: Storage):
    files = {"label_map": label_map(tiny_map()), "labels": LABELS.encode()}
    record = references.register_reference(
        ATLAS, TENANT, "my-atlas", METADATA, _declare(files), actor="admin"
    )
    assert (int(record.version), record.status) == (1, "PENDING")
    key = references.record_files(record)["label_map"].key
    assert key == "references/atlas/lab-a/my-atlas/1/label_map.nii.gz"
    with pytest.raises(references.ReferenceUploadMismatch, match="nothing was uploaded"):
        references.complete_reference(ATLAS, TENANT, "my-atlas", storage)
    _upload(storage, record, files)
    ready = references.complete_reference(ATLAS, TENANT, "my-atlas", storage)
    assert ready.status == "READY" and ready.summary["regions"] == ["hippocampus_left", "hippocampus_right"]
    assert "references/atlas/lab-a/my-atlas/1/manifest.json" in _keys(storage, "references/atlas/lab-a/")
    # A second version; the tenant sees both, another tenant neither.
    second = references.publish_reference(ATLAS, TENANT, "my-atlas", METADATA, files, storage)
    assert int(second.version) == 2
    listed = references.list_references(TENANT, ATLAS)
    assert [(r.name, int(r.version), r.status) for r in listed] == [
        ("my-atlas", 2, "READY"),
        ("my-atlas", 1, "READY"),
    ]
    assert references.list_references("lab-b") == []

    # Dispatch pins the newest READY version (or the one named); RunAnalysis loads it.
    regional = Analysis(
        name="regional", version="0", runtime=Runtime.LAMBDA, description="", run=CATALOGUE["qc"].run,
        references=(ATLAS_REFERENCE,),
    )  # fmt: skip
    pins = references.pin_references(regional, {"atlas": "my-atlas"}, TENANT)
    assert (pins["atlas"].owner, pins["atlas"].version, pins["atlas"].problem) == (TENANT, 2, None)
    assert (
        references.pin_references(regional, {"atlas": "my-atlas", "atlas_version": 1}, TENANT)[
            "atlas"
        ].version
        == 1
    )
    assert references.pin_references(regional, {}, TENANT) == {}  # the default: the bundled atlas
    atlas = references.load_references(pins, storage)["atlas"]
    assert (
        isinstance(atlas, Atlas)
        and atlas.provenance()["version"] == "2"
        and atlas.label_map == files["label_map"]
    )
    references.check_references([regional], {"regional": {"atlas": "my-atlas"}}, TENANT)
    with pytest.raises(references.ReferenceRefused, match="no atlas my-atlas") as refused:
        references.check_references([regional], {"regional": {"atlas": "my-atlas"}}, "lab-b")
    assert refused.value.field == "parameters.regional.atlas"

    # Retiring version 2 rolls the name back to 1, deletes its files (every S3 version), keeps its record.
    (retired,) = references.retire_reference(ATLAS, TENANT, "my-atlas", storage, 2, actor="admin")
    assert retired.status == "RETIRED" and retired.retired_by == "admin"
    assert _keys(storage, "references/atlas/lab-a/my-atlas/2/") == []
    versions = boto3.client("s3").list_object_versions(
        Bucket=BUCKET, Prefix="references/atlas/lab-a/my-atlas/2/"
    )
    assert versions.get("Versions", []) == [] and versions.get("DeleteMarkers", []) == []
    assert references.pin_references(regional, {"atlas": "my-atlas"}, TENANT)["atlas"].version == 1
    # A study dispatched to version 2 before it was retired fails with the reason.
    with pytest.raises(references.ReferenceUnavailable, match="version 2: no longer stored"):
        references.load_references(pins, storage)
    with pytest.raises(references.ReferenceRetired):
        references.complete_reference(ATLAS, TENANT, "my-atlas", storage, 2)
    gone = references.pin_references(regional, {"atlas": "my-atlas", "atlas_version": 2}, TENANT)["atlas"]
    assert gone.version == 2 and "no READY version of atlas my-atlas version 2" in (gone.problem or "")
    references.retire_reference(ATLAS, TENANT, "my-atlas", storage)
    assert {r.status for r in references.list_references(TENANT)} == {"RETIRED"}
    with pytest.raises(references.ReferenceRefused):
        references.check_references([regional], {"regional": {"atlas": "my-atlas"}}, TENANT)
    with pytest.raises(references.ReferenceNotFound):
        references.retire_reference(ATLAS, TENANT, "none-such", storage)


def test_an_atlas_whose_map_has_labels_its_table_lacks_stays_pending_until_corrected(storage: Storage):
    values = tiny_map()
    values[3, 3, 3] = 7
    files = {"label_map": label_map(values), "labels": LABELS.encode()}
    record = references.register_reference(ATLAS, TENANT, "gappy", METADATA, _declare(files))
    _upload(storage, record, files)
    with pytest.raises(ReferenceInvalid, match="label_map: values not in the label table: 7"):
        references.complete_reference(ATLAS, TENANT, "gappy", storage)
    assert references.get_reference(ATLAS, TENANT, "gappy").status == ReferenceStatus.PENDING
    assert not any(key.endswith("manifest.json") for key in _keys(storage, "references/"))
    # The same-sized corrected table (declared without a digest) completes it.
    fixed = LABELS.replace("3,Other,", "7,Other,").encode()
    assert len(fixed) == len(LABELS.encode())
    files = {"label_map": label_map(values), "labels": fixed}
    record = references.register_reference(
        ATLAS, TENANT, "gappy", METADATA, {role: (len(data), None) for role, data in files.items()}
    )
    _upload(storage, record, files)
    assert references.complete_reference(ATLAS, TENANT, "gappy", storage).status == "READY"
    # A file of another size, or other bytes than declared, is refused.
    other = references.register_reference(ATLAS, TENANT, "gappy", METADATA, _declare(files))
    _upload(storage, other, {**files, "labels": fixed + b"\n"})
    with pytest.raises(references.ReferenceUploadMismatch, match="bytes were uploaded"):
        references.complete_reference(ATLAS, TENANT, "gappy", storage)
    _upload(storage, other, {**files, "labels": fixed.replace(b"Other", b"Otter")})
    with pytest.raises(references.ReferenceUploadMismatch, match="sha256"):
        references.complete_reference(ATLAS, TENANT, "gappy", storage)


def test_norms_tables_are_deployment_wide_verified_and_refused_with_their_line(storage: Storage):
    files = {"table": NORMS.encode()}
    with pytest.raises(ReferenceInvalid, match="deployment-wide data"):
        references.register_reference(NORMS_KIND, TENANT, "norms", NORMS_METADATA, _declare(files))
    with pytest.raises(ReferenceInvalid, match="has no space"):
        references.register_reference(NORMS_KIND, DEPLOYMENT_OWNER, "norms", METADATA, _declare(files))
    with pytest.raises(ReferenceInvalid, match="the files table"):
        references.register_reference(
            NORMS_KIND, DEPLOYMENT_OWNER, "norms", NORMS_METADATA, {"csv": (1, None)}
        )
    with pytest.raises(ValueError, match="not a name"):
        references.register_reference(NORMS_KIND, DEPLOYMENT_OWNER, "Norms!", NORMS_METADATA, _declare(files))
    bad = {"table": NORMS.replace("gm_ml", "brain_ml").encode()}
    record = references.register_reference(
        NORMS_KIND, DEPLOYMENT_OWNER, "adult", NORMS_METADATA, _declare(bad)
    )
    _upload(storage, record, bad)
    with pytest.raises(ReferenceInvalid, match="table: line 2: measure 'brain_ml'"):
        references.complete_reference(NORMS_KIND, DEPLOYMENT_OWNER, "adult", storage)
    good = references.publish_reference(NORMS_KIND, DEPLOYMENT_OWNER, "adult", NORMS_METADATA, files, storage)
    assert (int(good.version), good.status, good.summary["measures"]) == (2, "READY", ["gm_ml"])
    # Every tenant sees and uses the deployment's table.
    for tenant in ("lab-a", "lab-b"):
        assert [(r.kind, r.name, int(r.version)) for r in references.list_references(tenant, NORMS_KIND)] == [
            ("norms", "adult", 2),
            ("norms", "adult", 1),
        ]
    pins = references.pin_references(CATALOGUE["normative"], {"norms": "adult"}, "lab-b")
    assert (pins["norms"].owner, pins["norms"].version) == (DEPLOYMENT_OWNER, 2)
    table = references.load_references(pins, storage)["norms"]
    assert table.provenance["name"] == "adult" and table.provenance["commercial_use"] is False
    # Kinds do not mix: an atlas of the same name is another thing.
    assert references.ready_reference(ATLAS, "lab-b", "adult") is None
    assert np.isclose(table.rows[0].b0, 700.0)
