"""What every route needs of a request: who calls, whether they may, from where, and the study it
names (if theirs)."""

from __future__ import annotations

import os
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
from voxelpipe.adapters.rule_sets import DynamoRuleSets
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.adapters.transfers import DynamoTransferStore
from voxelpipe.api.auth import Action, Principal, machine_client_store, principal
from voxelpipe.api.dev_clients import DevClientIssuer
from voxelpipe.api.problems import not_found, problem_responses
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
    RuleSets,
    StudyStore,
    WorkQueues,
)
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
ACTION_EXTENSION = "x-voxelpipe-action"
PUBLIC = "public"


def _allowed(action: Action) -> Any:
    def check(caller: Caller) -> None:
        caller.require(action)

    return Depends(check)


def requires(action: Action | None, *problems: int) -> dict[str, Any]:
    """A route's access, for its decorator: the action the caller's role must allow (None: public),
    checked before the route runs (401 without a valid token, 403 without the action), and written
    into the OpenAPI document (ACTION_EXTENSION) with the error statuses the route may answer.

    Every route declares it: tests/integration/test_security.py walks the OpenAPI document and
    holds each route to what it declares.
    """
    if action is None:
        return {"openapi_extra": {ACTION_EXTENSION: PUBLIC}}
    return {
        "dependencies": [_allowed(action)],
        "openapi_extra": {ACTION_EXTENSION: action.value},
        "responses": problem_responses(401, 403, *problems),
    }


def request_source(request: Request) -> str:
    """Where the call came from, for the audit trail."""
    event = request.scope.get("aws.event") or {}
    ip = (event.get("requestContext") or {}).get("identity", {}).get("sourceIp")
    return str(ip or (request.client.host if request.client else "unknown"))


def owned_study(store: StudyStore, caller: Principal, study_id: str) -> StudyRecord:
    """The caller's tenant's study; another tenant's (or a deleted one) is a 404, as a missing one."""
    study = queries.study_for_tenant(store, caller.tenant, study_id)
    if study is None:
        raise not_found()
    return study
