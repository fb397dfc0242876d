"""What every route needs of a request: who calls, whether they may, from where, and the study it
names (if theirs)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Depends, Request

from voxelpipe import queries
from voxelpipe.adapters.batches import DynamoBatchStore
from voxelpipe.adapters.cognito_clients import CognitoClientIssuer
from voxelpipe.adapters.deliveries import DynamoDeliveries, SqsDeliveryQueue
from voxelpipe.adapters.destination_secrets import SecretsManagerDestinationSecrets
from voxelpipe.adapters.destinations import DynamoDestinations
from voxelpipe.adapters.executions import StepFunctionsExecutions
from voxelpipe.adapters.identity_maps import DynamoIdentityMaps
from voxelpipe.adapters.queues import SqsWorkQueues
from voxelpipe.adapters.quotas import DynamoQuotas
from voxelpipe.adapters.rule_sets import DynamoRuleSets
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.adapters.transfers import DynamoTransferStore
from voxelpipe.api.audit import (
    ACCESS_EXTENSION,
    AUDIT_EXTENSION,
    MACHINE_ROLE,
    audit_dependency,
    note,
    record_caller,
)
from voxelpipe.api.auth import Action, Principal, machine_client_store, principal
from voxelpipe.api.dev_clients import DevClientIssuer
from voxelpipe.api.problems import Problem, not_found, problem_responses
from voxelpipe.limits import Limits
from voxelpipe.pipeline.lifecycle import ExamAdapters
from voxelpipe.ports import (
    BatchStore,
    ClientIssuer,
    Deliveries,
    DeliveryQueue,
    Destinations,
    DestinationSecrets,
    Executions,
    IdentityMaps,
    MachineClients,
    QuotaStore,
    RuleSets,
    StudyStore,
    WorkQueues,
)
from voxelpipe.quotas import QuotaExceeded
from voxelpipe.records import StudyRecord
from voxelpipe.wiring import EnvVar


def batch_store() -> BatchStore:
    return DynamoBatchStore()


def study_store() -> StudyStore:
    return DynamoStudyStore()


def storage() -> Storage:
    return Storage.from_environment()


def work_queues() -> WorkQueues:
    return SqsWorkQueues()


def executions() -> Executions:
    return StepFunctionsExecutions()


def rule_sets() -> RuleSets:
    return DynamoRuleSets()


def destinations() -> Destinations:
    return DynamoDestinations()


def destination_secrets() -> DestinationSecrets:
    return SecretsManagerDestinationSecrets()


def deliveries() -> Deliveries:
    return DynamoDeliveries()


def delivery_queue() -> DeliveryQueue:
    return SqsDeliveryQueue()


def identity_maps() -> IdentityMaps:
    return DynamoIdentityMaps()


def client_issuer() -> ClientIssuer:
    """Cognito app clients behind API Gateway; the development issuer under `voxelpipe serve`."""
    if os.environ.get(EnvVar.AUTH_MODE, "cognito") == "dev":
        return DevClientIssuer()
    return CognitoClientIssuer()


def quotas() -> QuotaStore:
    return DynamoQuotas()


# What routes are given: FastAPI builds each per request (tests may override them).
Caller = Annotated[Principal, Depends(principal)]
Store = Annotated[StudyStore, Depends(study_store)]
Batches = Annotated[BatchStore, Depends(batch_store)]
Bucket = Annotated[Storage, Depends(storage)]
Queues = Annotated[WorkQueues, Depends(work_queues)]
StateMachine = Annotated[Executions, Depends(executions)]
Rules = Annotated[RuleSets, Depends(rule_sets)]
DestinationTable = Annotated[Destinations, Depends(destinations)]
Secrets = Annotated[DestinationSecrets, Depends(destination_secrets)]
DeliveryTable = Annotated[Deliveries, Depends(deliveries)]
DeliveryQueueDep = Annotated[DeliveryQueue, Depends(delivery_queue)]
Identities = Annotated[IdentityMaps, Depends(identity_maps)]  # deleting a study deletes its map
ClientTable = Annotated[MachineClients, Depends(machine_client_store)]
Issuer = Annotated[ClientIssuer, Depends(client_issuer)]
Quotas = Annotated[QuotaStore, Depends(quotas)]


def exam_adapters(store: Store, bucket: Bucket, queues: Queues) -> ExamAdapters:
    """What completing a DICOM exam needs (POST /studies/{id}/complete, STOW-RS)."""
    return ExamAdapters(
        store=store,
        storage=bucket,
        queues=queues,
        transfers=DynamoTransferStore(),
        rule_sets=DynamoRuleSets(),
        limits=Limits.from_environment(),
    )


Exam = Annotated[ExamAdapters, Depends(exam_adapters)]

# The OpenAPI extension naming the action a route's caller must be allowed ("public": no token).
# (Defined with the audit, which refuses an app with a route that declares none.)
ACTION_EXTENSION = ACCESS_EXTENSION
PUBLIC = "public"


def _allowed(action: Action) -> Any:
    def check(caller: Caller) -> None:
        caller.require(action)

    return Depends(check)


@audit_dependency
def audited(request: Request, caller: Caller) -> None:
    """The call's audit row names this caller (api/audit.py writes it as the answer starts): a
    person's subject and role, or a machine client's id with the role MACHINE_ROLE."""
    role = caller.role.value if caller.role is not None else MACHINE_ROLE
    record_caller(request, caller.tenant, caller.subject, role)
    if caller.client is not None:
        note(request, client=caller.client)  # the client's name beside its id


def quota_problem(exceeded: QuotaExceeded, now: datetime) -> Problem:
    """The 429 of a quota reached: the limit named, its value, what is used, when it resets."""
    retry_after = exceeded.retry_after_s(now)
    return Problem(
        429,
        "quota_exceeded",
        "A tenant quota is reached",
        str(exceeded),
        headers={"Retry-After": str(retry_after)} if retry_after is not None else None,
        limit=exceeded.quota.value,
        limit_value=exceeded.limit,
        used=exceeded.used,
        resets_at=exceeded.resets_at.isoformat().replace("+00:00", "Z") if exceeded.resets_at else None,
        retry_after_s=retry_after,
    )


def within_rate(caller: Caller, table: Quotas) -> None:
    """Count the call against the tenant's requests per minute (429 past it)."""
    now = datetime.now(UTC)
    try:
        table.take_request(caller.tenant, now)
    except QuotaExceeded as exceeded:
        raise quota_problem(exceeded, now) from exceeded


def requires(action: Action | None, *problems: int, audit: str | None = None) -> dict[str, Any]:
    """A route's access, for its decorator: the action the caller's role must allow (None: public),
    checked before the route runs (401 without a valid token, 403 without the action), and written
    into the OpenAPI document (ACTION_EXTENSION) with the error statuses the route may answer.

    A route that is not public also writes one access audit row per call (api/audit.py), its
    action `audit` (e.g. "study.read"; default `{METHOD} {path}`, AUDIT_EXTENSION in the document),
    and counts against its tenant's requests per minute (a 429 past it).

    Every route declares it: tests/integration/test_security.py walks the OpenAPI document and
    holds each route to what it declares, tests/integration/test_access_audit.py to its audit row.
    """
    if action is None:
        return {"openapi_extra": {ACTION_EXTENSION: PUBLIC}}
    extra: dict[str, Any] = {ACTION_EXTENSION: action.value}
    if audit is not None:
        extra[AUDIT_EXTENSION] = audit
    return {
        # The audit first: a call refused by its role or its rate is recorded too.
        "dependencies": [Depends(audited), _allowed(action), Depends(within_rate)],
        "openapi_extra": extra,
        "responses": problem_responses(401, 403, 429, *problems),
    }


def request_source(request: Request) -> str:
    """Where the call came from, for the (per-study) audit trail."""
    event = request.scope.get("aws.event") or {}
    ip = (event.get("requestContext") or {}).get("identity", {}).get("sourceIp")
    return str(ip or (request.client.host if request.client else "unknown"))


def owned_study(store: StudyStore, caller: Principal, study_id: str) -> StudyRecord:
    """The caller's tenant's study; another tenant's (or a deleted one) is a 404, as a missing one."""
    study = queries.study_for_tenant(store, caller.tenant, study_id)
    if study is None:
        raise not_found()
    return study
