"""The ingest function against moto, fed the events AWS sends."""

from __future__ import annotations

import hashlib

import boto3
import numpy as np
import pytest

from infra.local.cloud import LocalCloud
from tests.fixtures.bad_nifti import make_good_nifti
from tests.fixtures.events import load_event
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.keys import new_study_id
from voxelpipe.status import StudyStatus

STORE = DynamoStudyStore()


def test_an_aws_shaped_notification_with_an_encoded_key_is_ingested(cloud: LocalCloud):
    study_id = new_study_id()
    _, content = make_good_nifti()
    # Put the object without triggering anything, then deliver AWS's own event shape by hand.
    notification = boto3.client("s3").get_bucket_notification_configuration(Bucket=cloud.bucket)
    boto3.client("s3").put_bucket_notification_configuration(
        Bucket=cloud.bucket, NotificationConfiguration={}
    )
    boto3.client("s3").put_object(
        Bucket=cloud.bucket, Key=f"uploads/demo/{study_id}/t1w scan.nii.gz", Body=content
    )
    notification.pop("ResponseMetadata")
    boto3.client("s3").put_bucket_notification_configuration(
        Bucket=cloud.bucket, NotificationConfiguration=notification
    )
    event = load_event("s3_object_created.json", BUCKET=cloud.bucket, STUDY_ID=study_id)

    payload, error = cloud.invoke("ingest", event)
    assert error is None
    (outcome,) = payload["outcomes"]
    assert outcome["key"] == f"uploads/demo/{study_id}/t1w scan.nii.gz"  # `+` decoded to a space
    assert outcome["status"] == StudyStatus.QUEUED


def test_the_same_object_version_is_ingested_once(cloud: LocalCloud):
    study_id = new_study_id()
    _, content = make_good_nifti()
    boto3.client("s3").put_bucket_notification_configuration(
        Bucket=cloud.bucket, NotificationConfiguration={}
    )
    boto3.client("s3").put_object(
        Bucket=cloud.bucket, Key=f"uploads/demo/{study_id}/t1w scan.nii.gz", Body=content
    )
    event = load_event("s3_object_created.json", BUCKET=cloud.bucket, STUDY_ID=study_id)

    sent = []
    # Dispatch records the work messages instead of starting executions: the study stays QUEUED.
    with cloud.override("dispatch", lambda event, context: sent.extend(event["Records"])):
        first, _ = cloud.invoke("ingest", event)
        second, _ = cloud.invoke("ingest", event)
        assert first == second  # the idempotency record answers the duplicate
        assert len(sent) == 1
        assert [row.action for row in STORE.audit_trail(study_id)] == ["queued"]
        # A new version of the object is a new event: the study is QUEUED already, so the work
        # message is sent again (a retry after a failed send looks the same) and dispatch dedups.
        event["Records"][0]["s3"]["object"]["versionId"] = "another-version"
        third, _ = cloud.invoke("ingest", event)
    assert third["outcomes"][0]["detail"] == "re-sent"
    assert len(sent) == 2 and sent[0]["body"] == sent[1]["body"]


def test_the_s3_test_event_is_acknowledged(cloud: LocalCloud):
    payload, error = cloud.invoke(
        "ingest", {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": cloud.bucket}
    )
    assert error is None and payload == {"outcomes": []}


def test_storage_streams_an_object_in_bounded_chunks(cloud: LocalCloud):
    content = np.random.default_rng(1).integers(0, 256, 3 * 1024 * 1024 + 123, dtype=np.uint8).tobytes()
    boto3.client("s3").put_object(Bucket=cloud.bucket, Key="work/stream-me.bin", Body=content)
    storage = Storage(cloud.bucket)
    chunks = list(storage.iter_chunks("work/stream-me.bin", chunk_bytes=1 << 20))
    assert b"".join(chunks) == content
    assert max(len(chunk) for chunk in chunks) <= 1 << 20 and len(chunks) >= 4
    assert storage.sha256("work/stream-me.bin") == hashlib.sha256(content).hexdigest()


def test_ingest_validates_the_object_as_it_streams_never_reading_it_whole(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
):
    study_id = new_study_id()
    # 3 MiB uncompressed: several 1 MiB chunks, scaled float64 voxels split across them.
    _, content = make_good_nifti(False, shape=(128, 64, 48), dtype=np.float64, slope=0.5, inter=2.0)
    whole_reads: list[str] = []
    read = Storage.read

    def counting_read(self: Storage, key: str, first_bytes: int | None = None) -> bytes:
        if first_bytes is None:
            whole_reads.append(key)
        return read(self, key, first_bytes)

    monkeypatch.setattr(Storage, "read", counting_read)
    boto3.client("s3").put_bucket_notification_configuration(
        Bucket=cloud.bucket, NotificationConfiguration={}
    )
    key = f"uploads/demo/{study_id}/t1w scan.nii.gz"
    boto3.client("s3").put_object(Bucket=cloud.bucket, Key=key, Body=content)
    event = load_event("s3_object_created.json", BUCKET=cloud.bucket, STUDY_ID=study_id)
    with cloud.override("dispatch", lambda event, context: None):
        payload, error = cloud.invoke("ingest", event)
    assert error is None and payload["outcomes"][0]["status"] == StudyStatus.QUEUED
    assert whole_reads == []
    study = STORE.get_study(study_id)
    assert study is not None and study.input is not None
    assert study.input["sha256"] == hashlib.sha256(content).hexdigest()
    assert study.input["datatype"] == "float64" and study.input["shape"] == [128, 64, 48]
