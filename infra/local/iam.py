"""The local cloud's stand-in for IAM: each function's AWS calls held to its role's policies.

moto runs every call it is given, so without this a function could read a prefix, write a table
or send to a queue its role does not allow, and only AWS would say so. While a handler (or a
GPU worker thread) runs, in the cloud's process or in one of its worker processes
(infra/local/processes.py), each of its calls to S3, DynamoDB, SQS, Step Functions, EventBridge and
Secrets Manager (and the API Gateway Management API's execute-api:ManageConnections) becomes
the IAM requests AWS would authorize (action, resource ARN, condition
keys), checked against the identity policies the synthesized template gives its role. A call
that no statement allows fails as AWS fails it (AccessDenied) and is recorded, so that a test
sees it even where the code catches the error.

Evaluated: Allow and Deny statements, `*`/`?` wildcards in actions and resources, and the
StringLike/StringEquals conditions the template uses (s3:prefix). Not evaluated: calls from
threads a handler starts itself (they carry no principal), KMS (moto's S3 and SQS do not call
it), and services the functions reach only through Powertools' stdout (CloudWatch metrics).
"""

from __future__ import annotations

import fnmatch
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any
from unittest import mock
from urllib.parse import urlparse

from botocore.client import BaseClient
from botocore.exceptions import ClientError

from infra.local.deploy import ACCOUNT_ID, REGION

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """One IAM authorization: what is done, to what, with which condition keys."""

    action: str
    resource: str
    context: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Denial:
    principal: str
    operation: str
    request: Request

    def __str__(self) -> str:
        return f"{self.principal} may not {self.request.action} on {self.request.resource} ({self.operation})"


# -- what a call asks of IAM ---------------------------------------------------------------------


def _s3(operation: str, params: Mapping[str, Any]) -> list[Request]:
    bucket = f"arn:aws:s3:::{params.get('Bucket', '')}"

    def on_object(action: str, key: str, versioned: bool = False) -> Request:
        return Request(f"{action}Version" if versioned else action, f"{bucket}/{key}")

    if operation in {"GetObject", "HeadObject"}:
        return [on_object("s3:GetObject", params["Key"], "VersionId" in params)]
    if operation in {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}:
        return [on_object("s3:PutObject", params["Key"])]
    if operation == "AbortMultipartUpload":
        return [on_object("s3:AbortMultipartUpload", params["Key"])]
    if operation == "CopyObject":
        source = params["CopySource"]
        if isinstance(source, str):
            source_bucket, _, source_key = source.lstrip("/").partition("/")
            source = {"Bucket": source_bucket, "Key": source_key}
        read = Request(
            "s3:GetObjectVersion" if "VersionId" in source else "s3:GetObject",
            f"arn:aws:s3:::{source['Bucket']}/{source['Key']}",
        )
        return [read, on_object("s3:PutObject", params["Key"])]
    if operation == "DeleteObject":
        return [on_object("s3:DeleteObject", params["Key"], "VersionId" in params)]
    if operation == "DeleteObjects":
        return [
            on_object("s3:DeleteObject", item["Key"], "VersionId" in item)
            for item in params["Delete"]["Objects"]
        ]
    if operation in {"ListObjectsV2", "ListObjects"}:
        return [Request("s3:ListBucket", bucket, {"s3:prefix": params.get("Prefix", "")})]
    if operation == "ListObjectVersions":
        return [Request("s3:ListBucketVersions", bucket, {"s3:prefix": params.get("Prefix", "")})]
    return [Request(f"s3:{operation}", bucket)]  # bucket-level: anything else the template grants


def _table_arn(name: str, index: str | None = None) -> str:
    arn = f"arn:aws:dynamodb:{REGION}:{ACCOUNT_ID}:table/{name}"
    return f"{arn}/index/{index}" if index else arn


# A transaction's items are authorized as the single-item calls they stand for.
_TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
    "Get": "GetItem",
}


def _dynamodb(operation: str, params: Mapping[str, Any]) -> list[Request]:
    if operation in {"BatchGetItem", "BatchWriteItem"}:
        return [Request(f"dynamodb:{operation}", _table_arn(name)) for name in params["RequestItems"]]
    if operation in {"TransactWriteItems", "TransactGetItems"}:
        return [
            Request(f"dynamodb:{_TRANSACT_ACTIONS[kind]}", _table_arn(body["TableName"]))
            for item in params["TransactItems"]
            for kind, body in item.items()
        ]
    return [Request(f"dynamodb:{operation}", _table_arn(params["TableName"], params.get("IndexName")))]


def _queue_arn(url: str) -> str:
    _, account, name = urlparse(url).path.split("/")
    return f"arn:aws:sqs:{REGION}:{account}:{name}"


_SQS_BATCH_ACTIONS = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}


def _sqs(operation: str, params: Mapping[str, Any]) -> list[Request]:
    action = f"sqs:{_SQS_BATCH_ACTIONS.get(operation, operation)}"
    if operation == "GetQueueUrl":
        return [Request(action, f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{params['QueueName']}")]
    return [Request(action, _queue_arn(params["QueueUrl"]))]


# A task token's calls are authorized on the state machine whose execution issued the token.
TOKEN_OPERATIONS = frozenset({"SendTaskSuccess", "SendTaskFailure", "SendTaskHeartbeat"})
TOKEN_OWNER = "(the state machine that issued the token)"


def _states(operation: str, params: Mapping[str, Any]) -> list[Request]:
    if operation in TOKEN_OPERATIONS:
        return [Request(f"states:{operation}", TOKEN_OWNER)]
    resource = params.get("executionArn") or params.get("stateMachineArn") or "*"
    return [Request(f"states:{operation}", resource)]


def _events(operation: str, params: Mapping[str, Any]) -> list[Request]:
    if operation != "PutEvents":
        return [Request(f"events:{operation}", "*")]
    buses = {entry.get("EventBusName", "default") for entry in params["Entries"]}
    return [
        Request(
            "events:PutEvents",
            bus if bus.startswith("arn:") else f"arn:aws:events:{REGION}:{ACCOUNT_ID}:event-bus/{bus}",
        )
        for bus in sorted(buses)
    ]


def _secretsmanager(operation: str, params: Mapping[str, Any]) -> list[Request]:
    # CreateSecret names its secret with Name; IAM authorizes it against the new secret's ARN.
    secret = params.get("SecretId") or params.get("Name") or "*"
    if not secret.startswith("arn:"):  # a name: IAM sees the ARN, whose suffix it cannot know
        secret = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT_ID}:secret:{secret}-??????"
    return [Request(f"secretsmanager:{operation}", secret)]


_CONNECTION_METHODS = {"PostToConnection": "POST", "GetConnection": "GET", "DeleteConnection": "DELETE"}


def execute_api_request(api_id: str, endpoint_url: str, operation: str, params: Mapping[str, Any]) -> Request:
    """A Management API call (a WebSocket stage's callback URL, `{api}.execute-api…/{stage}`) as IAM
    sees it: execute-api:ManageConnections on `{api}/{stage}/{METHOD}/@connections/{id}`."""
    stage = urlparse(endpoint_url).path.strip("/")
    method = _CONNECTION_METHODS.get(operation, operation)
    return Request(
        "execute-api:ManageConnections",
        f"arn:aws:execute-api:{REGION}:{ACCOUNT_ID}:{api_id}/{stage}/{method}/@connections/"
        f"{params.get('ConnectionId', '')}",
    )


def _api_of(endpoint_url: str, local_apis: Mapping[str, str]) -> str:
    """The API an endpoint is: `{api}.execute-api.{region}.amazonaws.com`, or a local one's id."""
    host = urlparse(endpoint_url).netloc
    return local_apis.get(host) or host.split(".", 1)[0]


# botocore's service names (client.meta.service_model.service_name) -> the requests of a call.
REQUESTS: dict[str, Callable[[str, Mapping[str, Any]], list[Request]]] = {
    "s3": _s3,
    "dynamodb": _dynamodb,
    "sqs": _sqs,
    "stepfunctions": _states,
    "events": _events,
    "secretsmanager": _secretsmanager,
}


# -- what a policy allows ------------------------------------------------------------------------


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _matches(patterns: Any, value: str, *, case_sensitive: bool = True) -> bool:
    if case_sensitive:
        return any(fnmatch.fnmatchcase(value, pattern) for pattern in _as_list(patterns))
    return any(fnmatch.fnmatchcase(value.lower(), pattern.lower()) for pattern in _as_list(patterns))


_CONDITIONS: dict[str, Callable[[Any, str], bool]] = {
    "StringLike": lambda expected, actual: _matches(expected, actual),
    "StringEquals": lambda expected, actual: actual in _as_list(expected),
}


def _conditions_hold(conditions: Mapping[str, Mapping[str, Any]], context: Mapping[str, str]) -> bool:
    for operator, keys in conditions.items():
        if operator not in _CONDITIONS:
            raise NotImplementedError(f"the local IAM cannot evaluate the condition operator {operator}")
        for key, expected in keys.items():
            if key not in context or not _CONDITIONS[operator](expected, context[key]):
                return False
    return True


def _applies(statement: Mapping[str, Any], request: Request) -> bool:
    return (
        _matches(statement.get("Action", []), request.action, case_sensitive=False)
        and _matches(statement.get("Resource", []), request.resource)
        and _conditions_hold(statement.get("Condition", {}), request.context)
    )


def is_allowed(statements: Sequence[Mapping[str, Any]], request: Request) -> bool:
    """IAM's verdict on one request: an explicit Deny wins, else some Allow must apply."""
    applicable = [s for s in statements if _applies(s, request)]
    return bool(applicable) and all(s["Effect"] == "Allow" for s in applicable)


# -- holding the running code to it --------------------------------------------------------------

_acting: ContextVar[tuple[str, Sequence[Mapping[str, Any]]] | None] = ContextVar(
    "voxelpipe_local_principal", default=None
)


class LocalIam:
    """`with LocalIam() as iam:` checks every call made `with iam.acting_as(name, statements):`."""

    def __init__(self) -> None:
        self.denials: list[Denial] = []
        # The local cloud has one state machine: every task token is its (set once deployed).
        self.token_owner = TOKEN_OWNER
        # Local stand-ins for API Gateway Management API endpoints: host:port -> the API's id.
        self.local_apis: dict[str, str] = {}
        self._lock = threading.Lock()
        # Every botocore client funnels its operations through this one (private) method.
        original = getattr(BaseClient, "_make_api_call")  # noqa: B009 - botocore's stubs omit it
        self._patch = mock.patch.object(BaseClient, "_make_api_call", self._checked(original))

    def __enter__(self) -> LocalIam:
        self._patch.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._patch.stop()

    @staticmethod
    @contextmanager
    def acting_as(principal: str, statements: Sequence[Mapping[str, Any]]) -> Iterator[None]:
        token = _acting.set((principal, statements))
        try:
            yield
        finally:
            _acting.reset(token)

    def _checked(self, call: Callable[..., Any]) -> Callable[..., Any]:
        iam = self

        def checked(client: BaseClient, operation: str, params: Mapping[str, Any]) -> Any:
            acting = _acting.get()
            service = client.meta.service_model.service_name
            if acting is not None and service == "apigatewaymanagementapi":
                principal, statements = acting
                endpoint = client.meta.endpoint_url
                request = execute_api_request(_api_of(endpoint, iam.local_apis), endpoint, operation, params)
                if not is_allowed(statements, request):
                    iam._deny(Denial(principal, operation, request))
            elif acting is not None and service in REQUESTS:
                principal, statements = acting
                for request in REQUESTS[service](operation, params):
                    if request.resource == TOKEN_OWNER:
                        request = replace(request, resource=iam.token_owner)
                    if not is_allowed(statements, request):
                        iam._deny(Denial(principal, operation, request))
            return call(client, operation, params)

        return checked

    def record(self, denial: Denial) -> None:
        """Keep a denial (made here, or in a worker process of the local cloud) and log it."""
        with self._lock:
            self.denials.append(denial)
        log.error("access denied: %s", denial)

    def _deny(self, denial: Denial) -> None:
        self.record(denial)
        code = "AccessDeniedException" if denial.request.action.startswith("dynamodb:") else "AccessDenied"
        raise ClientError(
            {"Error": {"Code": code, "Message": f"User is not authorized: {denial}"}}, denial.operation
        )
