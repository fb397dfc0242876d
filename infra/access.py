"""What each function may do, read from its code: the least-privilege half of the wiring.

A function's environment (wiring.FunctionSpec.env) says which resources it is told of; this
module says what it may do with them. A function that is told of the bucket must be listed in
BUCKET_ACCESS (synthesis fails otherwise), so a new function starts with no S3 rights.
"""

from __future__ import annotations

from enum import Enum

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_stepfunctions as sfn

from infra import nag
from infra.security import BucketAccess, IdentityMapUse, logical_id
from voxelpipe.function_specs import (
    API,
    COMPLETE_TRANSFERS,
    DICOM_RECEIVER,
    DISPATCH,
    EGRESS,
    EXPORT,
    FINALIZE,
    INGEST,
    LIVE,
    MARK_FAILED,
    PREPARE,
    REAPER,
    REPROCESS_BATCHES,
    RUN_ANALYSIS,
    WEBHOOK,
)
from voxelpipe.wiring import Prefix, Resource

UPLOADS, QUARANTINE, DERIVED, WORK, MODELS, REFERENCES = (
    Prefix.UPLOADS,
    Prefix.QUARANTINE,
    Prefix.DERIVED,
    Prefix.WORK,
    Prefix.MODELS,
    Prefix.REFERENCES,
)
ALL_PREFIXES = (UPLOADS, QUARANTINE, DERIVED, WORK)

# Every step that writes a study's objects removes what it wrote (every version) when it finds the
# study deleted as it ends (voxelpipe.study_data.writing_for): it may delete and list the versions
# of what it may write, and no more.
_EXAM_COMPLETION = BucketAccess(
    read=[UPLOADS],
    write=[UPLOADS, QUARANTINE],
    delete=[UPLOADS, QUARANTINE],
    list=[UPLOADS],
    list_versions=[UPLOADS, QUARANTINE],
)
BUCKET_ACCESS: dict[str, BucketAccess] = {
    # Reads each upload (HEAD and range reads are s3:GetObject), lists a DICOM study's uploads,
    # and moves rejected ones to quarantine/ (copy = read + write, then delete); an upload that
    # arrives for a deleted study is deleted, every version. Completing a DICOM exam copies each
    # further selected series to the uploads of the study it is routed to.
    INGEST.name: _EXAM_COMPLETION,
    # The scheduled completion of network exams: what ingest does when it completes one.
    COMPLETE_TRANSFERS.name: _EXAM_COMPLETION,
    # Reads the upload (a reprocessed DICOM study: its de-identified copies under derived/), writes
    # the canonical volume (work/) and converted volume (derived/), keeps DICOM originals under
    # work/ if so configured, then removes every version of the upload. A series that does not
    # decode is moved to quarantine/, as ingest does. Before writing, it moves the attempt before's
    # outputs under derived/{id}/attempts/{n}/ if nobody did yet (pipeline/attempts.py).
    PREPARE.name: BucketAccess(
        read=[UPLOADS, DERIVED],
        write=[DERIVED, WORK, QUARANTINE],
        delete=[UPLOADS, DERIVED, WORK, QUARANTINE],
        list=[UPLOADS, DERIVED],
        list_versions=[UPLOADS, DERIVED, WORK, QUARANTINE],
    ),
    # Reads the prepared volume, earlier analyses' outputs, the reference data the study names (an
    # atlas, a norms table) and the registered models (those whose spec says runtime lambda run
    # here); writes artifacts and outputs. `longitudinal` reads the subject's earlier study: its
    # input volume and label maps (derived/). Never the uploads: they are what the uploader sent.
    RUN_ANALYSIS.name: BucketAccess(
        read=[WORK, DERIVED, REFERENCES, MODELS],
        write=[WORK, DERIVED],
        delete=[WORK, DERIVED],
        list_versions=[WORK, DERIVED],
    ),
    # Reads the prepared volume and the label maps the report draws over it; writes the report
    # (report.html, report.pdf) and results.json. A DICOM study: lists and reads the de-identified
    # source copies under derived/{id}/dicom/ and files its SEG, SR and PDF beside them, replacing
    # an earlier attempt's (docs/dicom-outputs.md).
    FINALIZE.name: BucketAccess(
        read=[WORK, DERIVED], write=[DERIVED], delete=[DERIVED], list=[DERIVED], list_versions=[DERIVED]
    ),
    # Reprocessing a study of a batch moves its ended attempt's outputs under
    # derived/{id}/attempts/{n}/ (list, copy = read + write, then delete), as the API's reprocess does.
    REPROCESS_BATCHES.name: BucketAccess(read=[DERIVED], write=[DERIVED], delete=[DERIVED], list=[DERIVED]),
    # Purges recently deleted studies again: every version of every object a study has.
    REAPER.name: BucketAccess(delete=[*ALL_PREFIXES], list_versions=[*ALL_PREFIXES]),
    # Reads results.json and the DICOM outputs it lists (derived/{id}/dicom/); writes nothing.
    EGRESS.name: BucketAccess(read=[DERIVED]),
    # Writes a cohort export too large for a response (a multipart upload) and presigns its GET.
    EXPORT.name: BucketAccess(read=[Prefix.EXPORTS], write=[Prefix.EXPORTS]),
    # Presigns uploads (POST and multipart, signed by this role: s3:PutObject) and artifact
    # downloads; completing a rejected DICOM study quarantines it; deleting a study removes every
    # version of every object it has. Registering a model presigns its upload under models/,
    # completing it checks the file's digest and writes its manifest, and retiring it removes every
    # version of its files. Reference data (atlases, norms tables) likewise under references/.
    # The viewer's links presign the canonical volume Prepare writes under work/. Reprocessing
    # moves the ended attempt's outputs under derived/{id}/attempts/{n}/ (copy, then delete).
    API.name: BucketAccess(
        read=[UPLOADS, DERIVED, WORK, MODELS, REFERENCES],
        write=[UPLOADS, QUARANTINE, DERIVED, MODELS, REFERENCES],
        delete=[*ALL_PREFIXES, MODELS, REFERENCES],
        list=[UPLOADS, DERIVED],
        list_versions=[*ALL_PREFIXES, MODELS, REFERENCES],
    ),
}

# The honest broker's identity maps (docs/dicom.md, "Honest broker"): Prepare adds to a study's
# map without reading it, only egress reads one (to re-identify for an internal destination), and
# deleting a study (the API) or purging it again (the reaper) deletes its map. A function told of
# the table and not listed here fails synthesis; no other function may be told of it.
IDENTITY_MAP_ACCESS: dict[str, IdentityMapUse] = {
    PREPARE.name: IdentityMapUse.WRITE,
    EGRESS.name: IdentityMapUse.READ,
    API.name: IdentityMapUse.DELETE,
    REAPER.name: IdentityMapUse.DELETE,
}

# The GPU worker (a Batch job): reads the prepared volume and earlier outputs, the registered
# models and reference data, a longitudinal study's prior (derived/); writes artifacts and outputs
# (and removes them for a deleted study), as RunAnalysis does.
GPU_WORKER_BUCKET_ACCESS = BucketAccess(
    read=[WORK, DERIVED, MODELS, REFERENCES],
    write=[WORK, DERIVED],
    delete=[WORK, DERIVED],
    list_versions=[WORK, DERIVED],
)
GPU_WORKER_READ_ONLY_TABLES = frozenset({Resource.OBJECTS_TABLE, Resource.MODELS_TABLE})

# The DICOM C-STORE receiver (a Fargate service, infra/dicom_receiver.py): the receive use case writes
# each instance under uploads/ (nothing else: it never reads, lists or deletes objects), and reads
# and writes the studies, objects and transfers tables (every table it is told of), and puts the
# new exam's status event on the bus.
DICOM_RECEIVER_BUCKET_ACCESS = BucketAccess(write=[UPLOADS])
DICOM_RECEIVER_READ_ONLY_TABLES: frozenset[Resource] = frozenset()

# The pseudonym secret (voxelpipe.pseudonyms, docs/subjects.md): read by those that derive
# pseudonyms: the API (a registered scan date is shifted; STOW-RS exams' study ids), Prepare (a
# DICOM subject's subject_ref and date offset) and the C-STORE receiver (exam study ids). A function
# told of the secret and not listed here fails synthesis.
PSEUDONYM_SECRET_READERS: frozenset[str] = frozenset({API.name, PREPARE.name, DICOM_RECEIVER.name})

# Status tables a function reads but never writes (everything else it is told of: read-write).
READ_ONLY_TABLES: dict[str, frozenset[Resource]] = {
    # Only DICOM ingest and the API's /complete write the objects table; deleting a study (the API)
    # and purging a deleted one again (the reaper) remove its rows.
    **{
        spec.name: frozenset({Resource.OBJECTS_TABLE})
        for spec in (PREPARE, RUN_ANALYSIS, FINALIZE, MARK_FAILED)
    },
    # Only the API registers models and reference data, and saves rule sets; ingest and dispatch
    # look up `model:NAME` analyses, dispatch the versions of the reference data a study names;
    # completing an exam (ingest, the completion sweep) reads the tenant's active rule set.
    INGEST.name: frozenset({Resource.MODELS_TABLE, Resource.RULES_TABLE}),
    COMPLETE_TRANSFERS.name: frozenset({Resource.MODELS_TABLE, Resource.RULES_TABLE}),
    DISPATCH.name: frozenset({Resource.OBJECTS_TABLE, Resource.MODELS_TABLE, Resource.REFERENCES_TABLE}),
    # The batch sweep checks a batch's analyses (models, reference data) as registration does.
    REPROCESS_BATCHES.name: frozenset({Resource.MODELS_TABLE, Resource.REFERENCES_TABLE}),
    WEBHOOK.name: frozenset({Resource.STUDIES_TABLE}),  # it reads each study's webhook URL
    LIVE.name: frozenset({Resource.STUDIES_TABLE}),  # a subscription names a study of the tenant
    # Egress reads studies and destinations; it writes only deliveries (their acknowledgements).
    EGRESS.name: frozenset({Resource.STUDIES_TABLE, Resource.DESTINATIONS_TABLE}),
    # Reads the tenant-created index, page by page; who a machine client is.
    EXPORT.name: frozenset({Resource.STUDIES_TABLE, Resource.MACHINE_CLIENTS_TABLE}),
}

# The audit tables (wiring.APPEND_ONLY_RESOURCES: the study trail and the access audit) are
# append-only for every role, whatever this module says of them: infra/security.grant_table gives
# reads and PutItem at most and an explicit Deny of every item change (docs/security.md, "Audit").
# Only the API and the export function (the same app, for GET /measures) are told of the access
# audit and the quotas table (function_specs.API, EXPORT).

# Destinations' secrets (Secrets Manager, one per destination, named under the deployment's prefix):
# the API creates, replaces and deletes them; egress reads them. No other function may.
DESTINATION_SECRET_ACTIONS: dict[str, tuple[str, ...]] = {
    API.name: (
        "secretsmanager:CreateSecret",
        "secretsmanager:PutSecretValue",
        "secretsmanager:DeleteSecret",
        "secretsmanager:TagResource",
    ),
    EGRESS.name: ("secretsmanager:GetSecretValue",),
}
# Machine clients' app clients in the user pool (docs/security.md): the API creates and deletes them
# (POST, DELETE /clients), on the deployment's own pool only. No other function may touch the pool.
USER_POOL_ACTIONS: dict[str, tuple[str, ...]] = {
    API.name: ("cognito-idp:CreateUserPoolClient", "cognito-idp:DeleteUserPoolClient"),
}
# The roles S3 destinations name (in the tenants' accounts) egress may assume: this name prefix only.
EGRESS_ASSUMES_DELIVERY_ROLES = EGRESS.name


# Status tables a function reads and deletes items of, but never puts or updates: the reaper purges
# a deleted study's object rows again.
PURGE_ONLY_TABLES: dict[str, frozenset[Resource]] = {REAPER.name: frozenset({Resource.OBJECTS_TABLE})}


class ExecutionAccess(Enum):
    START = "start"  # states:StartExecution on the state machine
    STOP = "stop"  # states:DescribeExecution and states:StopExecution on its executions


STATE_MACHINE_ACCESS: dict[str, ExecutionAccess] = {
    DISPATCH.name: ExecutionAccess.START,
    API.name: ExecutionAccess.STOP,  # deleting a study stops its running execution
    REAPER.name: ExecutionAccess.STOP,  # a stuck study's execution is stopped
}


def grant_executions(machine: sfn.StateMachine, function: lambda_.Function, spec_name: str) -> None:
    """What STATE_MACHINE_ACCESS says `spec_name` may do with the state machine's executions."""
    access = STATE_MACHINE_ACCESS.get(spec_name)
    if access is ExecutionAccess.START:
        function.add_to_role_policy(
            iam.PolicyStatement(actions=["states:StartExecution"], resources=[machine.state_machine_arn])
        )
    elif access is ExecutionAccess.STOP:
        stack = Stack.of(machine)
        executions = stack.format_arn(
            service="states",
            resource="execution",
            resource_name=f"{machine.state_machine_name}:*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        function.add_to_role_policy(
            iam.PolicyStatement(
                actions=["states:DescribeExecution", "states:StopExecution"], resources=[executions]
            )
        )
        nag.acknowledge(
            function.role or function,
            nag.EXECUTION_WILDCARD,
            applies_to=[
                nag.wildcard_resource(
                    f"arn:<AWS::Partition>:states:{nag.region_of(stack)}:{nag.account_of(stack)}:execution:"
                    f"<{logical_id(machine)}.Name>:*"
                )
            ],
        )
    else:
        raise KeyError(f"{spec_name} is told of the state machine: declare its access in infra/access.py")
