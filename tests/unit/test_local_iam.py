"""The local cloud's IAM stand-in: which requests a call makes, and a policy's verdict on them."""

from __future__ import annotations

import pytest

from infra.local.iam import REQUESTS, TOKEN_OWNER, Request, is_allowed

BUCKET = "arn:aws:s3:::bucket"


def _requests(service: str, operation: str, **params: object) -> list[Request]:
    return REQUESTS[service](operation, params)


def test_s3_calls_become_the_requests_iam_authorizes():
    assert _requests("s3", "HeadObject", Bucket="bucket", Key="uploads/a") == [
        Request("s3:GetObject", f"{BUCKET}/uploads/a")
    ]
    assert _requests("s3", "DeleteObject", Bucket="bucket", Key="k", VersionId="v") == [
        Request("s3:DeleteObjectVersion", f"{BUCKET}/k")
    ]
    # A copy reads its source and writes its destination.
    assert _requests(
        "s3",
        "CopyObject",
        Bucket="bucket",
        Key="quarantine/a",
        CopySource={"Bucket": "bucket", "Key": "uploads/a"},
    ) == [Request("s3:GetObject", f"{BUCKET}/uploads/a"), Request("s3:PutObject", f"{BUCKET}/quarantine/a")]
    assert _requests("s3", "ListObjectsV2", Bucket="bucket", Prefix="derived/x/") == [
        Request("s3:ListBucket", BUCKET, {"s3:prefix": "derived/x/"})
    ]
    deleted = _requests(
        "s3",
        "DeleteObjects",
        Bucket="bucket",
        Delete={"Objects": [{"Key": "a"}, {"Key": "b", "VersionId": "1"}]},
    )
    assert [r.action for r in deleted] == ["s3:DeleteObject", "s3:DeleteObjectVersion"]


def test_dynamodb_sqs_and_states_calls_name_their_resource():
    table = "arn:aws:dynamodb:us-east-1:123456789012:table/T"
    assert _requests("dynamodb", "Query", TableName="T", IndexName="by-tenant") == [
        Request("dynamodb:Query", f"{table}/index/by-tenant")
    ]
    transaction = _requests(
        "dynamodb",
        "TransactWriteItems",
        TransactItems=[{"Put": {"TableName": "T"}}, {"Update": {"TableName": "U"}}],
    )
    assert [(r.action, r.resource.rsplit("/", 1)[-1]) for r in transaction] == [
        ("dynamodb:PutItem", "T"),
        ("dynamodb:UpdateItem", "U"),
    ]
    assert _requests(
        "sqs", "DeleteMessageBatch", QueueUrl="https://sqs.us-east-1.amazonaws.com/123456789012/q", Entries=[]
    ) == [Request("sqs:DeleteMessage", "arn:aws:sqs:us-east-1:123456789012:q")]
    assert _requests("stepfunctions", "SendTaskSuccess", taskToken="t", output="{}") == [
        Request("states:SendTaskSuccess", TOKEN_OWNER)
    ]


ALLOW_READ = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": [f"{BUCKET}/uploads/*"]}
ALLOW_LIST = {
    "Effect": "Allow",
    "Action": "s3:ListBucket",
    "Resource": BUCKET,
    "Condition": {"StringLike": {"s3:prefix": ["uploads/*"]}},
}


@pytest.mark.parametrize(
    ("request_", "allowed"),
    [
        (Request("s3:GetObject", f"{BUCKET}/uploads/t/s/a.nii"), True),
        (Request("S3:getobject", f"{BUCKET}/uploads/a"), True),  # actions are case-insensitive
        (Request("s3:GetObject", f"{BUCKET}/derived/a"), False),  # another prefix
        (Request("s3:PutObject", f"{BUCKET}/uploads/a"), False),  # another action
        (Request("s3:ListBucket", BUCKET, {"s3:prefix": "uploads/t/"}), True),
        (Request("s3:ListBucket", BUCKET, {"s3:prefix": "derived/t/"}), False),  # condition unmet
        (Request("s3:ListBucket", BUCKET), False),  # no prefix given: the condition cannot hold
    ],
)
def test_an_allow_must_match_action_resource_and_conditions(request_: Request, allowed: bool):
    assert is_allowed([ALLOW_READ, ALLOW_LIST], request_) is allowed


def test_an_explicit_deny_wins_and_unknown_conditions_are_refused():
    deny = {"Effect": "Deny", "Action": "s3:*", "Resource": f"{BUCKET}/uploads/secret*"}
    assert not is_allowed([ALLOW_READ, deny], Request("s3:GetObject", f"{BUCKET}/uploads/secret.nii"))
    assert is_allowed([ALLOW_READ, deny], Request("s3:GetObject", f"{BUCKET}/uploads/open.nii"))
    odd = {**ALLOW_LIST, "Condition": {"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}}
    with pytest.raises(NotImplementedError, match="IpAddress"):
        is_allowed([odd], Request("s3:ListBucket", BUCKET, {"s3:prefix": "uploads/"}))
