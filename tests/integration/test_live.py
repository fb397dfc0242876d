"""Live progress against moto: who may connect, what a connection may follow, and the push."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import boto3
import jwt
import pytest
import uvicorn
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from moto.backends import get_backend
from moto.core import DEFAULT_ACCOUNT_ID

from infra.local.cloud import LocalCloud
from infra.local.deploy import REGION
from infra.local.live import LiveConnections, ManagementEndpoint
from infra.local.serve import websocket_api
from tests.fixtures.serve import free_port
from voxelpipe.adapters import event_bus
from voxelpipe.adapters.connections import DynamoConnectionStore, ManagementApiConnections
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.api.auth import (
    DEV_ALGORITHM,
    DEV_ISSUER,
    DEV_SECRET_FILE_ENV,
    GROUPS_CLAIM,
    TENANT_CLAIM,
    Role,
    dev_secret,
    dev_token_claims,
    mint_dev_token,
)
from voxelpipe.live import LiveCaller
from voxelpipe.live_auth import MAX_CONNECTION_S, LiveRefused, authorize
from voxelpipe.pipeline import live
from voxelpipe.pipeline.register import register_study
from voxelpipe.records import ConnectionRecord
from voxelpipe.status_events import StudyStatusChanged, StudyStepChanged
from voxelpipe.viewer_grants import grant_key, issue_grant
from voxelpipe.wiring import EVENT_SOURCE, STATUS_CHANGED, STEP_CHANGED, EnvVar

KEY = grant_key(b"a deployment secret")
STUDIES = DynamoStudyStore()
CONNECTIONS = DynamoConnectionStore()
# A stage's callback URL as API Gateway has it: moto answers PostToConnection there.
CALLBACK_URL = "https://abc123defg.execute-api.us-east-1.amazonaws.com/v1"


@pytest.fixture(autouse=True)
def dev_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DEV_SECRET_FILE_ENV, str(tmp_path / "dev-token-secret"))


def _admit(token: str | None, now: float | None = None) -> LiveCaller:
    return authorize(token, user_claims=dev_token_claims, grant_key=lambda: KEY, now=now or time.time())


def _dev_token(**claims: object) -> str:
    mint_dev_token("lab-a", Role.VIEWER)  # creates the secret
    now = int(time.time())
    base = {"iss": DEV_ISSUER, "sub": "u", "iat": now, "exp": now + 600, TENANT_CLAIM: "lab-a"}
    base[GROUPS_CLAIM] = ["viewer"]
    return jwt.encode({**base, **claims}, dev_secret(), algorithm=DEV_ALGORITHM)


# -- $connect --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "status", "says"),
    [
        (None, 401, "no token"),
        ("", 401, "no token"),
        ("not-a-jwt", 401, "not a JWT"),
        (
            jwt.encode(
                {"iss": DEV_ISSUER, "sub": "u"},
                "another secret, not this machine's: 32 bytes+",
                algorithm="HS256",
            ),
            401,
            "not valid",
        ),
    ],
)
def test_connect_refuses_a_missing_or_malformed_token(token: str | None, status: int, says: str):
    mint_dev_token("lab-a", Role.VIEWER)
    with pytest.raises(LiveRefused) as refused:
        _admit(token)
    assert refused.value.status == status and says in refused.value.detail


def test_connect_refuses_an_expired_token_and_one_without_tenant_or_role():
    with pytest.raises(LiveRefused) as expired:
        _admit(_dev_token(exp=int(time.time()) - 5))
    assert expired.value.status == 401 and "expired" in expired.value.detail.lower()
    with pytest.raises(LiveRefused) as no_tenant:
        _admit(_dev_token(**{TENANT_CLAIM: "Not A Tenant"}))
    assert no_tenant.value.status == 403 and TENANT_CLAIM in no_tenant.value.detail
    with pytest.raises(LiveRefused) as no_role:
        _admit(_dev_token(**{GROUPS_CLAIM: ["staff"]}))
    assert no_role.value.status == 403 and GROUPS_CLAIM in no_role.value.detail


def test_connect_admits_a_user_until_the_token_expires_at_most_two_hours():
    now = time.time()
    caller = _admit(mint_dev_token("lab-a", Role.UPLOADER, subject="ana"), now)
    assert (caller.tenant, caller.subject, caller.role, caller.grant_study_id) == (
        "lab-a",
        "ana",
        "uploader",
        None,
    )
    assert caller.expires_at == int(now) + MAX_CONNECTION_S  # the token lives 12 hours
    short = _admit(_dev_token(exp=int(now) + 60), now)
    assert short.expires_at == int(now) + 60
    # What the authorizer passes to $connect comes back whole (API Gateway makes numbers strings).
    context = {key: str(value) for key, value in caller.as_context().items()}
    assert LiveCaller.from_context(context) == caller


def test_connect_admits_a_viewer_grant_and_refuses_an_expired_or_forged_one():
    now = time.time()
    token, grant = issue_grant(KEY, tenant="lab-a", issued_to="ana", study_id="a" * 32, ttl_s=300, now=now)
    caller = _admit(token, now)
    assert (caller.tenant, caller.role, caller.grant_study_id, caller.expires_at) == (
        "lab-a",
        None,
        grant.study_id,
        grant.expires_at,
    )
    assert LiveCaller.from_context(caller.as_context()) == caller
    with pytest.raises(LiveRefused) as expired:
        _admit(token, now + 301)
    assert expired.value.status == 401 and "expired" in expired.value.detail
    forged, _ = issue_grant(grant_key(b"another"), tenant="lab-a", issued_to="ana", study_id="a" * 32)
    with pytest.raises(LiveRefused) as refused:
        _admit(forged)
    assert refused.value.status == 401


# -- subscriptions ---------------------------------------------------------------------------------


def _connected(caller: LiveCaller) -> str:
    connection_id = uuid.uuid4().hex
    live.connect(CONNECTIONS, connection_id, caller, time.time())
    return connection_id


def _subscribe(connection_id: str, study_id: str | None = None, action: str = "subscribe") -> dict:
    body = {"action": action, **({"study_id": study_id} if study_id else {})}
    return live.handle_message(CONNECTIONS, STUDIES, connection_id, json.dumps(body))


def _user(tenant: str) -> LiveCaller:
    return LiveCaller(tenant, "ana", int(time.time()) + 600, role="viewer")


def test_a_user_follows_studies_of_its_tenant_only_and_another_tenants_is_a_missing_one(cloud: LocalCloud):
    own = register_study(STUDIES, "lab-a", actor="t", source="t").study_id
    other = register_study(STUDIES, "lab-b", actor="t", source="t").study_id
    connection = _connected(_user("lab-a"))
    assert _subscribe(connection, own) == {"type": "subscribed", "study_id": own, "studies": [own]}
    refused, missing = _subscribe(connection, other), _subscribe(connection, "f" * 32)
    assert refused["type"] == "error" and refused["code"] == missing["code"] == "study_not_found"
    assert _subscribe(connection)["studies"] == [own, "*"]
    assert _subscribe(connection, own, "unsubscribe")["studies"] == ["*"]
    assert CONNECTIONS.get_connection(connection).studies == ["*"]  # type: ignore[union-attr]
    bad = live.handle_message(CONNECTIONS, STUDIES, connection, '{"action": "dance"}')
    assert bad["type"] == "error" and bad["code"] == "invalid_message"


def test_a_viewer_grant_follows_only_what_it_covers(cloud: LocalCloud):
    subject = {"subject_ref": "sub-7"}
    first = register_study(STUDIES, "lab-a", actor="t", source="t", subject=subject).study_id
    second = register_study(STUDIES, "lab-a", actor="t", source="t", subject=subject).study_id
    stranger = register_study(
        STUDIES, "lab-a", actor="t", source="t", subject={"subject_ref": "sub-8"}
    ).study_id
    _, study_grant = issue_grant(KEY, tenant="lab-a", issued_to="ana", study_id=first)
    by_study = _connected(LiveCaller("lab-a", "ana", study_grant.expires_at, grant_study_id=first))
    assert _subscribe(by_study, first)["type"] == "subscribed"
    assert _subscribe(by_study, second)["code"] == "study_not_found"
    assert _subscribe(by_study)["code"] == "forbidden"  # a grant never follows a whole tenant
    _, subject_grant = issue_grant(KEY, tenant="lab-a", issued_to="ana", subject_ref="sub-7")
    by_subject = _connected(LiveCaller("lab-a", "ana", subject_grant.expires_at, grant_subject_ref="sub-7"))
    assert _subscribe(by_subject, first)["type"] == _subscribe(by_subject, second)["type"] == "subscribed"
    assert _subscribe(by_subject, stranger)["code"] == "study_not_found"
    _, other_tenant = issue_grant(KEY, tenant="lab-b", issued_to="bo", subject_ref="sub-7")
    foreign = _connected(LiveCaller("lab-b", "bo", other_tenant.expires_at, grant_subject_ref="sub-7"))
    assert _subscribe(foreign, first)["code"] == "study_not_found"


# -- the push --------------------------------------------------------------------------------------


def _sqs_event(bodies: list[dict]) -> dict:
    now = str(int(time.time() * 1000))
    return {
        "Records": [
            {
                "messageId": str(index),
                "receiptHandle": f"handle-{index}",
                "body": json.dumps(body),
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": now,
                    "SenderId": "events.amazonaws.com",
                    "ApproximateFirstReceiveTimestamp": now,
                },
                "messageAttributes": {},
                "md5OfBody": "0" * 32,
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:live",
                "awsRegion": "us-east-1",
            }
            for index, body in enumerate(bodies)
        ]
    }


def _event(detail: StudyStatusChanged | StudyStepChanged) -> dict:
    kind = STATUS_CHANGED if isinstance(detail, StudyStatusChanged) else STEP_CHANGED
    return {
        "id": str(uuid.uuid4()),
        "source": EVENT_SOURCE,
        "detail-type": kind,
        "detail": detail.model_dump(mode="json"),
    }


def _following(tenant: str, studies: list[str], expires_in_s: int = 600) -> str:
    connection_id = _connected(LiveCaller(tenant, "ana", int(time.time()) + expires_in_s, role="viewer"))
    CONNECTIONS.set_studies(connection_id, studies)
    return connection_id


def _use_callback_url(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    """Point the push at `url`, which the local IAM knows as the stack's WebSocket API."""
    monkeypatch.setenv(EnvVar.LIVE_CALLBACK_URL, url)
    host = url.split("://", 1)[1].split("/", 1)[0]
    cloud.iam.local_apis[host] = cloud.deployment.physical_ids[websocket_api(cloud.template)]


def test_the_push_reaches_the_followers_of_the_study_in_its_tenant_only(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch
):
    _use_callback_url(cloud, monkeypatch, CALLBACK_URL)
    study, other = "a" * 32, "b" * 32
    one, every, elsewhere = (
        _following("lab-a", [study]),
        _following("lab-a", ["*"]),
        _following("lab-a", [other]),
    )
    foreign, lapsed = _following("lab-b", ["*"]), _following("lab-a", ["*"], expires_in_s=-1)
    at = datetime.now(UTC)
    status = StudyStatusChanged(
        study_id=study, tenant="lab-a", attempt=1, status="RUNNING", previous="QUEUED", at=at
    )
    step = StudyStepChanged(
        study_id=study, tenant="lab-a", attempt=1, step="prepare", status="RUNNING", progress=60, at=at
    )
    payload, error = cloud.invoke("live_push", _sqs_event([_event(status), _event(step)]))
    assert error is None and payload == {"batchItemFailures": []}
    posted = get_backend("apigatewaymanagementapi")[DEFAULT_ACCOUNT_ID][REGION].connections
    assert set(posted) == {one, every}  # moto keeps what was posted to each connection
    received = posted[one].data.decode()
    messages = [json.loads(part) for part in received.replace("}{", "}\n{").splitlines()]
    assert [m["type"] for m in messages] == ["status", "step"]
    assert messages[0] == {"type": "status", **status.model_dump(mode="json", exclude={"tenant"})}
    assert messages[1]["progress"] == 60 and "tenant" not in messages[1]
    assert {elsewhere, foreign, lapsed}.isdisjoint(posted)


@pytest.fixture
def local_management_api(cloud: LocalCloud) -> Iterator[str]:
    """`voxelpipe serve`'s Management API, with no open WebSocket: every connection is gone."""
    credentials = Credentials("AKIALIVETEST", "secret-live-test")
    port = free_port()
    app = ManagementEndpoint(LiveConnections(), {credentials.access_key: credentials}, REGION)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    session = boto3.DEFAULT_SESSION
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AWS_ACCESS_KEY_ID", credentials.access_key)
        patch.setenv("AWS_SECRET_ACCESS_KEY", credentials.secret_key)
        patch.delenv("AWS_SESSION_TOKEN", raising=False)
        boto3.setup_default_session()  # signs with the keys above, as `voxelpipe serve`'s session does
        yield f"http://127.0.0.1:{port}/v1"
    boto3.DEFAULT_SESSION = session
    server.should_exit = True
    thread.join(5)


def test_a_gone_connection_is_deleted_and_a_tenant_without_connections_costs_one_query(
    cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch, local_management_api: str
):
    _use_callback_url(cloud, monkeypatch, local_management_api)
    study = "c" * 32
    gone = _following("lab-a", [study])
    status = StudyStatusChanged(
        study_id=study, tenant="lab-a", attempt=1, status="QUEUED", at=datetime.now(UTC)
    )
    payload, error = cloud.invoke("live_push", _sqs_event([_event(status)]))
    assert error is None and payload == {"batchItemFailures": []}
    assert CONNECTIONS.get_connection(gone) is None
    quiet = StudyStatusChanged(
        study_id=study, tenant="lab-q", attempt=1, status="QUEUED", at=datetime.now(UTC)
    )
    assert live.push(quiet, CONNECTIONS, ManagementApiConnections(), time.time()) == 0


def test_an_unsigned_call_to_the_local_management_api_is_refused(local_management_api: str):
    import httpx

    response = httpx.post(f"{local_management_api}/@connections/abc", content=b"{}")
    assert response.status_code == 403 and response.headers["x-amzn-errortype"] == "ForbiddenException"


def test_only_roles_granted_manage_connections_may_post(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch):
    _use_callback_url(cloud, monkeypatch, CALLBACK_URL)
    with cloud.acting_as("webhook"), pytest.raises(ClientError) as denied:
        ManagementApiConnections().post("abc", b"{}")
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
    (denial,) = cloud.iam.denials
    assert denial.request.action == "execute-api:ManageConnections" and denial.principal == "webhook"
    cloud.iam.denials.clear()  # expected here: the fixture asserts none on leaving
    with cloud.acting_as("live_push"):
        assert ManagementApiConnections().post("abc", b"{}")


def test_the_live_rule_takes_status_and_step_changes_and_the_webhook_rule_status_changes_only(
    cloud: LocalCloud,
):
    at = datetime.now(UTC)
    study = "d" * 32
    step = StudyStepChanged(
        study_id=study, tenant="lab-a", attempt=1, step="finalize", status="RUNNING", progress=0, at=at
    )
    with cloud.acting_as("finalize"):
        event_bus.publish(step)
        event_bus.publish(
            StudyStatusChanged(study_id=study, tenant="lab-a", attempt=1, status="COMPLETED", at=at)
        )

    def delivered(function: str) -> list[str]:
        """The detail-types of the events SQS gave `function` (moto runs the queues' event sources)."""
        return sorted(
            json.loads(record["body"])["detail-type"]
            for invocation in list(cloud.invocations)
            if invocation.function == function
            for record in invocation.event["Records"]
            if json.loads(record["body"])["detail"]["study_id"] == study
        )

    deadline = time.monotonic() + 30
    while len(delivered("live_push")) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert delivered("live_push") == [STATUS_CHANGED, STEP_CHANGED]
    assert delivered("webhook") == [STATUS_CHANGED]


def test_a_connection_record_expires_with_dynamodb_ttl(cloud: LocalCloud):
    table = boto3.client("dynamodb").describe_time_to_live(TableName=cloud.env(EnvVar.CONNECTIONS_TABLE))
    assert table["TimeToLiveDescription"]["AttributeName"] == "expires_at"
    assert ConnectionRecord.expires_at.attr_name == "expires_at"
