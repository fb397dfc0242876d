"""The synthesized stack, checked with aws_cdk.assertions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from voxelpipe.function_specs import DISPATCH, FUNCTIONS, LIVE, LIVE_AUTHORIZER, LIVE_PUSH, function_spec
from voxelpipe.records import StudyRecord, table_schema
from voxelpipe.wiring import (
    DELIVERY_FAILED,
    EVENT_SOURCE,
    FUNCTION_TAG,
    STATUS_CHANGED,
    STEP_CHANGED,
    STUDY_DELIVERED,
    EnvVar,
    Resource,
)
from voxelpipe.workflow_settings import (
    INGEST_ASYNC_RETRIES,
    QUEUE_MAX_RECEIVE_COUNT,
    RETRY_ATTEMPTS,
    RETRY_BACKOFF,
    RETRY_INTERVAL_S,
    STATE_MACHINE_TIMEOUT_S,
    TRANSIENT_LAMBDA_ERRORS,
    task_timeout_s,
)


@pytest.fixture(scope="module")
def stack(template: dict[str, Any]) -> Template:
    return Template.from_json(template)


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in template["Resources"].items() if r["Type"] == kind}


def test_bucket_is_private_versioned_encrypted_and_expires_short_lived_prefixes(stack: Template):
    stack.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "VersioningConfiguration": {"Status": "Enabled"},
            "BucketEncryption": Match.object_like({}),
            "LifecycleConfiguration": {
                "Rules": Match.array_with(
                    [
                        Match.object_like({"Prefix": "quarantine/", "Status": "Enabled"}),
                        Match.object_like({"Prefix": "work/", "Status": "Enabled"}),
                        Match.object_like({"Prefix": "exports/", "ExpirationInDays": 1, "Status": "Enabled"}),
                    ]
                )
            },
        },
    )
    # TLS only.
    stack.has_resource_properties(
        "AWS::S3::BucketPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
                        )
                    ]
                )
            }
        },
    )


def test_uploads_notify_ingest(template: dict[str, Any]):
    (notifications,) = _resources(template, "Custom::S3BucketNotifications").values()
    (config,) = notifications["Properties"]["NotificationConfiguration"]["LambdaFunctionConfigurations"]
    assert config["Events"] == ["s3:ObjectCreated:*"]
    assert config["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": "uploads/"}]
    target = config["LambdaFunctionArn"]["Fn::GetAtt"][0]
    assert {"Key": FUNCTION_TAG, "Value": "ingest"} in template["Resources"][target]["Properties"]["Tags"]


def test_work_queues_have_dead_letter_queues_and_long_visibility(template: dict[str, Any]):
    queues = _resources(template, "AWS::SQS::Queue")
    work = {
        lid: q
        for lid, q in queues.items()
        if "RedrivePolicy" in q["Properties"]
        and not lid.startswith(
            (Resource.WEBHOOK_QUEUE, Resource.GPU_QUEUE, Resource.LIVE_QUEUE, Resource.DELIVERY_QUEUE)
        )
    }
    # high, normal, low (bulk reprocess) + their three dead-letter queues, ingest failures, the
    # webhook, GPU, live and delivery queues, each with its dead letters
    assert len(work) == 3 and len(queues) == 15
    for queue in work.values():
        props = queue["Properties"]
        assert props["RedrivePolicy"]["maxReceiveCount"] >= 5 == QUEUE_MAX_RECEIVE_COUNT
        assert props["VisibilityTimeout"] >= 6 * DISPATCH.timeout_s


def test_dispatch_consumes_every_work_queue_reporting_partial_failures(template: dict[str, Any]):
    mappings = {
        lid: m
        for lid, m in _resources(template, "AWS::Lambda::EventSourceMapping").items()
        if m["Properties"]["FunctionName"]["Ref"].startswith(DISPATCH.construct_id)
    }
    assert len(mappings) == 3
    for mapping in mappings.values():
        assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    # Bulk reprocessing (the low priority queue) is dispatched two at a time at most; the others not held.
    limited = {
        m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]: m["Properties"].get("ScalingConfig")
        for m in mappings.values()
    }
    (low,) = [lid for lid in limited if lid.startswith(Resource.LOW_PRIORITY_QUEUE)]
    assert limited.pop(low) == {"MaximumConcurrency": 2}
    assert set(limited.values()) == {None}


def test_bulk_reprocess_batches_are_advanced_every_minute(template: dict[str, Any]):
    rules = _resources(template, "AWS::Events::Rule")
    (schedule,) = [r for lid, r in rules.items() if lid.startswith("ReprocessBatchesSchedule")]
    assert schedule["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    target = schedule["Properties"]["Targets"][0]["Arn"]["Fn::GetAtt"][0]
    assert {"Key": FUNCTION_TAG, "Value": "reprocess_batches"} in template["Resources"][target]["Properties"][
        "Tags"
    ]


def test_tables_follow_the_pynamodb_models(template: dict[str, Any]):
    schema = table_schema(StudyRecord)
    tables = _resources(template, "AWS::DynamoDB::Table")
    # Main's 13 with issue 18's subjects and reprocess batches, machine clients, the access audit, quotas.
    assert len(tables) == 18
    # The audit tables are append-only (docs/security.md): they cannot be deleted either.
    protected = {lid for lid, t in tables.items() if t["Properties"].get("DeletionProtectionEnabled")}
    assert {lid.rstrip("0123456789ABCDEF") for lid in protected} == {"AuditTable", "AccessAuditTable"}
    models = next(t["Properties"] for lid, t in tables.items() if lid.startswith("ModelsTable"))
    # Models belong to an owner (a tenant, or the deployment): one query lists an owner's models.
    assert models["KeySchema"] == [
        {"AttributeName": "owner", "KeyType": "HASH"},
        {"AttributeName": "name_version", "KeyType": "RANGE"},
    ]
    # So does reference data (atlases, norms tables), in a table of its own (docs/reference-data.md).
    references = next(t["Properties"] for lid, t in tables.items() if lid.startswith("ReferenceDataTable"))
    assert references["KeySchema"] == [
        {"AttributeName": "owner", "KeyType": "HASH"},
        {"AttributeName": "kind_name_version", "KeyType": "RANGE"},
    ]
    # A tenant's routing rule sets, a version a row (docs/rules.md).
    rules = next(t["Properties"] for lid, t in tables.items() if lid.startswith("RoutingRulesTable"))
    assert rules["KeySchema"] == [
        {"AttributeName": "tenant", "KeyType": "HASH"},
        {"AttributeName": "version", "KeyType": "RANGE"},
    ]
    # Each tenant's subjects (docs/subjects.md); a subject's studies through the studies' index.
    subjects = next(t["Properties"] for lid, t in tables.items() if lid.startswith("SubjectsTable"))
    assert subjects["KeySchema"] == [
        {"AttributeName": "tenant", "KeyType": "HASH"},
        {"AttributeName": "subject_ref", "KeyType": "RANGE"},
    ]
    # Machine clients, by client id (each machine request reads one), a tenant's by the index.
    clients = next(t["Properties"] for lid, t in tables.items() if lid.startswith("MachineClientsTable"))
    assert clients["KeySchema"] == [{"AttributeName": "client_id", "KeyType": "HASH"}]
    assert [i["IndexName"] for i in clients["GlobalSecondaryIndexes"]] == ["tenant-name"]
    studies = next(t["Properties"] for lid, t in tables.items() if lid.startswith("StudiesTable"))
    assert studies["KeySchema"] == [{"AttributeName": "study_id", "KeyType": "HASH"}]
    assert {i["IndexName"] for i in studies["GlobalSecondaryIndexes"]} == {
        i["index_name"] for i in schema["global_secondary_indexes"]
    }
    assert "subject-created" in {i["IndexName"] for i in studies["GlobalSecondaryIndexes"]}
    for table in tables.values():
        assert table["Properties"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    idempotency = next(t["Properties"] for lid, t in tables.items() if lid.startswith("IdempotencyTable"))
    assert idempotency["TimeToLiveSpecification"] == {"AttributeName": "expiration", "Enabled": True}
    # The honest broker's identity maps: a study a row (docs/dicom.md).
    identities = next(t["Properties"] for lid, t in tables.items() if lid.startswith("IdentityMapTable"))
    assert identities["KeySchema"] == [{"AttributeName": "study_id", "KeyType": "HASH"}]


def test_every_function_gets_exactly_its_declared_environment(template: dict[str, Any]):
    functions = {
        tag["Value"]: f["Properties"]
        for f in _resources(template, "AWS::Lambda::Function").values()
        for tag in f["Properties"].get("Tags", [])
        if tag["Key"] == FUNCTION_TAG
    }
    assert set(functions) == {spec.name for spec in FUNCTIONS}
    for spec in FUNCTIONS:
        props = functions[spec.name]
        declared = {str(var) for var in spec.env}
        actual = {k for k in props["Environment"]["Variables"] if k.startswith("VOXELPIPE_")}
        assert actual == declared, spec.name
        if spec.image:
            assert props["PackageType"] == "Image" and "ImageUri" in props["Code"]
        else:
            assert props["Runtime"] == "python3.12" and props["Handler"] == spec.handler
        assert props["Timeout"] == spec.timeout_s and props["MemorySize"] == spec.memory_mb
    assert EnvVar.STATE_MACHINE_ARN in functions["dispatch"]["Environment"]["Variables"]


def _definition(template: dict[str, Any]) -> dict[str, Any]:
    (machine,) = _resources(template, "AWS::StepFunctions::StateMachine").values()
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    return json.loads("".join(p if isinstance(p, str) else "ARN" for p in parts))


def test_state_machine_shape_retries_and_catches(template: dict[str, Any]):
    definition = _definition(template)
    states = definition["States"]
    assert definition["StartAt"] == "Prepare"
    assert states["Prepare"]["Next"] == "RunAnalyses"
    assert states["RunAnalyses"]["Type"] == "Map" and states["RunAnalyses"]["Next"] == "Finalize"
    assert states["RunAnalyses"]["ItemsPath"] == "$.stages" and states["RunAnalyses"]["MaxConcurrency"] == 1
    stage = states["RunAnalyses"]["ItemProcessor"]["States"]["RunStage"]
    assert stage["Type"] == "Map" and stage["ItemsPath"] == "$.stage" and stage["MaxConcurrency"] > 1
    inner = stage["ItemProcessor"]["States"]
    assert inner["ByRuntime"]["Type"] == "Choice"
    assert inner["ByRuntime"]["Choices"][0]["StringEquals"] == "lambda"
    for name in ("Prepare", "Finalize"):
        (retry,) = states[name]["Retry"]
        assert retry["ErrorEquals"] == list(TRANSIENT_LAMBDA_ERRORS)
        assert (retry["MaxAttempts"], retry["IntervalSeconds"], retry["BackoffRate"]) == (
            RETRY_ATTEMPTS,
            RETRY_INTERVAL_S,
            RETRY_BACKOFF,
        )
        assert states[name]["TimeoutSeconds"] == task_timeout_s(function_spec(name.lower()).timeout_s)
    assert definition["TimeoutSeconds"] == STATE_MACHINE_TIMEOUT_S
    (inner_retry,) = inner["RunAnalysis"]["Retry"]
    assert inner_retry["ErrorEquals"] == list(TRANSIENT_LAMBDA_ERRORS)
    for name in ("Prepare", "RunAnalyses", "Finalize"):
        assert states[name]["Catch"] == [
            {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "MarkFailed"}
        ]
    assert states["MarkFailed"]["Next"] == "StudyFailed" and states["StudyFailed"]["Type"] == "Fail"


def test_failed_ingest_events_are_kept_not_dropped(stack: Template, template: dict[str, Any]):
    (config,) = _resources(template, "AWS::Lambda::EventInvokeConfig").values()
    props = config["Properties"]
    assert props["MaximumRetryAttempts"] == INGEST_ASYNC_RETRIES
    destination = props["DestinationConfig"]["OnFailure"]["Destination"]["Fn::GetAtt"][0]
    assert template["Resources"][destination]["Type"] == "AWS::SQS::Queue"
    target = props["FunctionName"]["Ref"]
    assert {"Key": FUNCTION_TAG, "Value": "ingest"} in template["Resources"][target]["Properties"]["Tags"]


def test_the_api_is_behind_cognito_except_health_and_docs(template: dict[str, Any], stack: Template):
    stack.resource_count_is("AWS::Cognito::UserPool", 1)
    stack.has_resource_properties(
        "AWS::Cognito::UserPool",
        {
            "AdminCreateUserConfig": {"AllowAdminCreateUserOnly": True},
            "Schema": Match.array_with([Match.object_like({"Name": "tenant", "Mutable": False})]),
        },
    )
    groups = {
        g["Properties"]["GroupName"] for g in _resources(template, "AWS::Cognito::UserPoolGroup").values()
    }
    assert groups == {"operator", "admin", "uploader", "viewer"}
    stack.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {"MethodSettings": Match.array_with([Match.object_like({"ThrottlingRateLimit": 50})])},
    )
    parts = _resources(template, "AWS::ApiGateway::Resource")

    def full_path(resource_id: str) -> str:
        resource = parts.get(resource_id)
        if resource is None:
            return ""
        parent = resource["Properties"]["ParentId"]  # the root's is a GetAtt, a resource's a Ref
        above = full_path(parent.get("Ref", "")) if isinstance(parent, dict) else ""
        return f"{above}/{resource['Properties']['PathPart']}"

    open_methods = set()
    for method in _resources(template, "AWS::ApiGateway::Method").values():
        props = method["Properties"]
        path = full_path(props.get("ResourceId", {}).get("Ref", "")) or "/"
        if path in ("/health", "/docs", "/openapi.json", "/viewer/{proxy+}"):
            assert props["AuthorizationType"] == "NONE", path
            open_methods.add((props["HttpMethod"], path))
        else:
            assert props["AuthorizationType"] == "COGNITO_USER_POOLS", path
    # The viewer's pages and NiiVue (no data; its data routes check a grant in the app): GET only.
    assert ("GET", "/viewer/{proxy+}") in open_methods
    assert {method for method, path in open_methods if path == "/viewer/{proxy+}"} == {"GET"}
    (authorizer,) = _resources(template, "AWS::ApiGateway::Authorizer").values()
    assert authorizer["Properties"]["Type"] == "COGNITO_USER_POOLS"
    # Cohort exports go to the export function (pyarrow), behind the same authorizer; the rest to the API's.
    targets = {
        (full_path(method["Properties"].get("ResourceId", {}).get("Ref", "")) or "/", lid): json.dumps(
            method["Properties"].get("Integration", {}).get("Uri")
        )
        for lid, method in _resources(template, "AWS::ApiGateway::Method").items()
        if method["Properties"]["HttpMethod"] != "OPTIONS"
    }
    export, api = _function_id(template, "export"), _function_id(template, "api")
    # A machine client's export (/machine/measures, access tokens) goes there too.
    exports = ("/measures", "/machine/measures")
    assert sorted(path for (path, _) in targets if path in exports) == sorted(exports)
    assert all(export in uri and api not in uri for (path, _), uri in targets.items() if path in exports)
    assert all(api in uri and export not in uri for (path, _), uri in targets.items() if path not in exports)


def _logical_id(template: dict[str, Any], kind: str, prefix: str) -> str:
    (found,) = (lid for lid in _resources(template, kind) if lid.startswith(prefix))
    return found


def _function_id(template: dict[str, Any], spec_name: str) -> str:
    (found,) = (
        lid
        for lid, f in _resources(template, "AWS::Lambda::Function").items()
        if {"Key": FUNCTION_TAG, "Value": spec_name} in f["Properties"].get("Tags", [])
    )
    return found


def test_live_progress_is_a_websocket_api_authorized_at_connect_logged_and_throttled(
    template: dict[str, Any], stack: Template
):
    (api_id,) = _resources(template, "AWS::ApiGatewayV2::Api")
    assert template["Resources"][api_id]["Properties"]["ProtocolType"] == "WEBSOCKET"
    routes = {
        r["Properties"]["RouteKey"]: r["Properties"]
        for r in _resources(template, "AWS::ApiGatewayV2::Route").values()
    }
    assert set(routes) == {"$connect", "$disconnect", "$default"}
    assert routes["$connect"]["AuthorizationType"] == "CUSTOM"
    (authorizer,) = _resources(template, "AWS::ApiGatewayV2::Authorizer").values()
    assert authorizer["Properties"]["IdentitySource"] == ["route.request.querystring.token"]
    assert _function_id(template, LIVE_AUTHORIZER.name) in json.dumps(
        authorizer["Properties"]["AuthorizerUri"]
    )
    (stage,) = _resources(template, "AWS::ApiGatewayV2::Stage").values()
    props = stage["Properties"]
    assert props["StageName"] == "v1" and props["AutoDeploy"] is True
    assert props["DefaultRouteSettings"]["ThrottlingRateLimit"] > 0
    assert "$context.connectionId" in props["AccessLogSettings"]["Format"]
    # The authorizer verifies Cognito ID tokens of the stack's pool; the API says where to connect.
    functions = {
        tag["Value"]: f["Properties"]["Environment"]["Variables"]
        for f in _resources(template, "AWS::Lambda::Function").values()
        for tag in f["Properties"].get("Tags", [])
        if tag["Key"] == FUNCTION_TAG
    }
    assert functions[LIVE_AUTHORIZER.name][EnvVar.USER_POOL_ID] == {
        "Ref": _logical_id(template, "AWS::Cognito::UserPool", "Api")
    }
    assert "wss://" in json.dumps(functions["api"][EnvVar.LIVE_URL])
    for name in (LIVE.name, LIVE_PUSH.name):
        assert "https://" in json.dumps(functions[name][EnvVar.LIVE_CALLBACK_URL])


def test_status_and_step_changes_reach_the_push_through_a_queue_with_dead_letters(
    template: dict[str, Any], stack: Template
):
    (live_queue,) = (
        q
        for lid, q in _resources(template, "AWS::SQS::Queue").items()
        if lid.startswith(Resource.LIVE_QUEUE) and "DeadLetters" not in lid
    )
    assert live_queue["Properties"]["RedrivePolicy"]["maxReceiveCount"] >= 5
    rules = {lid: r["Properties"] for lid, r in _resources(template, "AWS::Events::Rule").items()}
    live_rule = next(r for lid, r in rules.items() if lid.startswith("StudyChangesToLive"))
    assert live_rule["EventPattern"] == {
        "source": [EVENT_SOURCE],
        "detail-type": [STATUS_CHANGED, STEP_CHANGED],
    }
    webhooks = next(r for lid, r in rules.items() if lid.startswith("StatusChangesToWebhooks"))
    # Never step changes; delivery outcomes too (docs/deliveries.md).
    assert webhooks["EventPattern"]["detail-type"] == [STATUS_CHANGED, STUDY_DELIVERED, DELIVERY_FAILED]
    push = _function_id(template, LIVE_PUSH.name)
    stack.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {"FunctionName": {"Ref": push}, "FunctionResponseTypes": ["ReportBatchItemFailures"]},
    )


def test_only_the_live_functions_may_manage_connections(template: dict[str, Any]):
    allowed = set()
    for policy in _resources(template, "AWS::IAM::Policy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if "execute-api:ManageConnections" in json.dumps(statement.get("Action")):
                allowed |= {role["Ref"] for role in policy["Properties"]["Roles"]}
    roles = {
        _function_id(template, name): template["Resources"][_function_id(template, name)]["Properties"][
            "Role"
        ]["Fn::GetAtt"][0]
        for name in (LIVE.name, LIVE_PUSH.name)
    }
    assert allowed == set(roles.values())


def test_the_connections_table_expires_records_and_finds_a_tenants_connections(template: dict[str, Any]):
    table = template["Resources"][_logical_id(template, "AWS::DynamoDB::Table", Resource.CONNECTIONS_TABLE)]
    props = table["Properties"]
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    (index,) = props["GlobalSecondaryIndexes"]
    assert index["KeySchema"] == [{"AttributeName": "tenant", "KeyType": "HASH"}]
    assert props["SSESpecification"]["SSEEnabled"] is True


def test_no_cors_by_default(template: dict[str, Any]):
    options = [
        m
        for m in _resources(template, "AWS::ApiGateway::Method").values()
        if m["Properties"]["HttpMethod"] == "OPTIONS"
    ]
    assert options == [] and _resources(template, "AWS::ApiGateway::GatewayResponse") == {}
    (api,) = (
        f
        for lid, f in _resources(template, "AWS::Lambda::Function").items()
        if lid == _function_id(template, "api")
    )
    assert api["Properties"]["Environment"]["Variables"][EnvVar.CORS_ALLOWED_ORIGINS] == ""


def test_network_exams_are_completed_every_minute(template: dict[str, Any]):
    (rule,) = [
        r
        for lid, r in _resources(template, "AWS::Events::Rule").items()
        if lid.startswith("TransferCompletionSchedule")
    ]
    assert rule["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    target = rule["Properties"]["Targets"][0]["Arn"]["Fn::GetAtt"][0]
    sweep = template["Resources"][target]["Properties"]
    assert {"Key": "voxelpipe:function", "Value": "complete_transfers"} in sweep["Tags"]
    for var in (EnvVar.TRANSFERS_TABLE, EnvVar.RULES_TABLE, EnvVar.NORMAL_PRIORITY_QUEUE_URL):
        assert var in sweep["Environment"]["Variables"]
