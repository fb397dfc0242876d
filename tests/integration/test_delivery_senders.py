"""The S3 sender against moto: PutObject with the credentials of the assumed delivery role.

(The local cloud holds every call to the acting function's role, which an assumed role's session is
not, so this runs in plain moto.)"""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from voxelpipe.adapters.senders import S3Sender, sender_for
from voxelpipe.deliveries import OutputObject
from voxelpipe.destinations import S3Destination
from voxelpipe.ports import SendFailed

ROLE = "arn:aws:iam::123456789012:role/voxelpipe-delivery-lab"


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        yield


def test_objects_go_under_the_prefix_and_study_with_the_assumed_roles_credentials(aws: None):
    boto3.client("s3").create_bucket(Bucket="lab-bucket")
    destination = S3Destination(name="research", bucket="lab-bucket", prefix="voxelpipe/", role_arn=ROLE)
    sender = sender_for(destination, None, "study-1")
    assert isinstance(sender, S3Sender)
    item = OutputObject(
        key="derived/study-1/dicom/2.25.7.dcm", sop_class_uid="1.2", sop_instance_uid="2.25.7"
    )
    sender.send(b"DICM", item)
    body = (
        boto3.client("s3").get_object(Bucket="lab-bucket", Key="voxelpipe/study-1/2.25.7.dcm")["Body"].read()
    )
    assert body == b"DICM"
    missing = S3Destination(name="gone", bucket="no-such-bucket", role_arn=ROLE)
    with pytest.raises(SendFailed, match="S3"):
        sender_for(missing, None, "study-1").send(b"DICM", item)
