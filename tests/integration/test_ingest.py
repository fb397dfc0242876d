"""The ingest function against moto, fed the events AWS sends."""

from __future__ import annotations

import boto3

from infra.local.cloud import LocalCloud
from tests.fixtures.bad_nifti import make_good_nifti
from tests.fixtures.events import load_event
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
