"""The security properties of the synthesized stack: encryption, lifecycle, TLS, least privilege, API."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from infra.access import BUCKET_ACCESS
from infra.security import APPEND_ONLY_DENIED, DYNAMODB_READ
from infra.settings import DEFAULTS, DERIVED_TRANSITION_DAYS, LOG_RETENTION_DAYS
from infra.stack import INCOMPLETE_UPLOAD_DAYS, QUARANTINE_DAYS, WORK_DAYS
from voxelpipe.function_specs import FUNCTIONS
from voxelpipe.wiring import FUNCTION_TAG, Prefix, Resource

# Actions AWS only grants on Resource "*" (no resource-level permissions).
STAR_ONLY_ACTIONS = {
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "ecr:GetAuthorizationToken",
    "batch:ListJobs",  # the GPU scaler
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
}


@pytest.fixture(scope="module")
def stack(template: dict[str, Any]) -> Template:
    return Template.from_json(template)


def _resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {lid: r for lid, r in template["Resources"].items() if r["Type"] == kind}


def _key(template: dict[str, Any], description_start: str) -> str:
    (logical_id,) = (
        lid
        for lid, key in _resources(template, "AWS::KMS::Key").items()
        if key["Properties"]["Description"].startswith(description_start)
    )
    return logical_id


def _getatt(logical_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def test_customer_managed_keys_rotate_and_logs_may_use_the_logs_key(template: dict[str, Any]):
    keys = _resources(template, "AWS::KMS::Key")
    assert len(keys) == 3  # data, logs, and the identity maps' own (docs/dicom.md, "Honest broker")
    assert all(key["Properties"]["EnableKeyRotation"] is True for key in keys.values())
    logs_key = keys[_key(template, "voxelpipe: CloudWatch Logs")]
    (service_statement,) = [
        s for s in logs_key["Properties"]["KeyPolicy"]["Statement"] if "Service" in s.get("Principal", {})
    ]
    assert "logs." in json.dumps(service_statement["Principal"])
    assert "kms:EncryptionContext:aws:logs:arn" in service_statement["Condition"]["ArnLike"]


def test_data_at_rest_uses_the_data_key(template: dict[str, Any]):
    data_key = _getatt(_key(template, "voxelpipe: data at rest"))
    identity_key = _getatt(_key(template, "voxelpipe: the identity maps"))
    for lid, queue in _resources(template, "AWS::SQS::Queue").items():
        assert queue["Properties"]["KmsMasterKeyId"] == data_key, lid
    for lid, table in _resources(template, "AWS::DynamoDB::Table").items():
        assert table["Properties"]["SSESpecification"] == {
            # The identity maps have a key of their own (tests/integration/test_identity_maps.py).
            "KMSMasterKeyId": identity_key if lid.startswith(Resource.IDENTITY_MAP_TABLE) else data_key,
            "SSEEnabled": True,
            "SSEType": "KMS",
        }, lid
        assert table["Properties"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    (vault,) = _resources(template, "AWS::Backup::BackupVault").values()
    assert vault["Properties"]["EncryptionKeyArn"] == data_key
    (selection,) = _resources(template, "AWS::Backup::BackupSelection").values()
    backed_up = {arn["Fn::GetAtt"][0] for arn in selection["Properties"]["BackupSelection"]["Resources"]}
    assert backed_up == set(_resources(template, "AWS::DynamoDB::Table"))


def test_ingest_bucket_is_sse_kms_logged_and_expires_what_is_temporary(template: dict[str, Any]):
    data_key = _getatt(_key(template, "voxelpipe: data at rest"))
    buckets = _resources(template, "AWS::S3::Bucket")
    (ingest_id,) = [lid for lid in buckets if lid.startswith("IngestBucket")]
    (logs_id,) = [lid for lid in buckets if lid.startswith("AccessLogsBucket")]
    ingest = buckets[ingest_id]["Properties"]
    (rule,) = ingest["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule == {
        "BucketKeyEnabled": True,
        "ServerSideEncryptionByDefault": {"KMSMasterKeyID": data_key, "SSEAlgorithm": "aws:kms"},
    }
    assert ingest["LoggingConfiguration"]["DestinationBucketName"] == {"Ref": logs_id}
    assert ingest["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = ingest["LifecycleConfiguration"]["Rules"]
    by_prefix = {r.get("Prefix"): r for r in rules if "Prefix" in r}
    assert by_prefix[Prefix.QUARANTINE]["ExpirationInDays"] == QUARANTINE_DAYS
    assert by_prefix[Prefix.WORK]["ExpirationInDays"] == WORK_DAYS
    assert by_prefix[Prefix.DERIVED]["Transitions"] == [
        {"StorageClass": "GLACIER_IR", "TransitionInDays": DEFAULTS[DERIVED_TRANSITION_DAYS]}
    ]
    assert Prefix.UPLOADS not in by_prefix  # uploads are moved or deleted by the pipeline, never expired
    assert {
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": INCOMPLETE_UPLOAD_DAYS},
        "Status": "Enabled",
    } in rules
    assert any("NoncurrentVersionExpiration" in r for r in rules)
    # The logs bucket: private, versioned, expiring; SSE-S3 because S3 log delivery requires it.
    logs = buckets[logs_id]["Properties"]
    assert logs["PublicAccessBlockConfiguration"]["RestrictPublicBuckets"] is True
    assert logs["BucketEncryption"]["ServerSideEncryptionConfiguration"][0][
        "ServerSideEncryptionByDefault"
    ] == {"SSEAlgorithm": "AES256"}
    assert logs["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    assert any("ExpirationInDays" in r for r in logs["LifecycleConfiguration"]["Rules"])


def test_every_bucket_and_queue_refuses_requests_without_tls(template: dict[str, Any]):
    deny_plain = {"Effect": "Deny", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}
    for kind, target, policy_kind in (
        ("AWS::S3::Bucket", "Bucket", "AWS::S3::BucketPolicy"),
        ("AWS::SQS::Queue", "Queues", "AWS::SQS::QueuePolicy"),
    ):
        protected = set()
        for policy in _resources(template, policy_kind).values():
            statements = policy["Properties"]["PolicyDocument"]["Statement"]
            if any(deny_plain.items() <= s.items() for s in statements):
                protected |= {ref["Ref"] for ref in _as_list(policy["Properties"][target])}
        assert protected == set(_resources(template, kind)), kind


def test_every_log_group_is_kms_encrypted_with_retention_and_every_function_has_one(template: dict[str, Any]):
    logs_key = _getatt(_key(template, "voxelpipe: CloudWatch Logs"))
    groups = _resources(template, "AWS::Logs::LogGroup")
    for lid, group in groups.items():
        assert group["Properties"]["KmsKeyId"] == logs_key, lid
        assert group["Properties"]["RetentionInDays"] == DEFAULTS[LOG_RETENTION_DAYS], lid
    for lid, function in _resources(template, "AWS::Lambda::Function").items():
        if FUNCTION_TAG not in {t["Key"] for t in function["Properties"].get("Tags", [])}:
            continue  # CDK's own deploy-time helper
        assert function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"] in groups, lid
        assert function["Properties"]["TracingConfig"] == {"Mode": "Active"}, lid
    (machine,) = _resources(template, "AWS::StepFunctions::StateMachine").values()
    assert machine["Properties"]["LoggingConfiguration"]["Level"] == "ALL"
    assert machine["Properties"]["TracingConfiguration"] == {"Enabled": True}


def _function_policies(template: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Spec name -> the statements of its role's policies."""
    roles = {
        function["Properties"]["Role"]["Fn::GetAtt"][0]: tag["Value"]
        for function in _resources(template, "AWS::Lambda::Function").values()
        for tag in function["Properties"].get("Tags", [])
        if tag["Key"] == FUNCTION_TAG
    }
    statements: dict[str, list[dict[str, Any]]] = {name: [] for name in roles.values()}
    for policy in _resources(template, "AWS::IAM::Policy").values():
        for role in policy["Properties"]["Roles"]:
            if role["Ref"] in roles:
                statements[roles[role["Ref"]]] += policy["Properties"]["PolicyDocument"]["Statement"]
    for lid in roles:
        assert "ManagedPolicyArns" not in template["Resources"][lid]["Properties"], lid
    return statements


def _s3_resources(statements: list[dict[str, Any]]) -> dict[str, set[str]]:
    """s3 action -> the bucket-relative object patterns (or "bucket:<prefixes>") it is granted on."""
    found: dict[str, set[str]] = {}
    for statement in statements:
        for action in _as_list(statement["Action"]):
            if not action.startswith("s3:"):
                continue
            for resource in _as_list(statement["Resource"]):
                if "Fn::Join" in resource:
                    found.setdefault(action, set()).add(resource["Fn::Join"][1][1])
                else:
                    prefixes = statement["Condition"]["StringLike"]["s3:prefix"]
                    found.setdefault(action, set()).add("bucket:" + ",".join(prefixes))
    return found


def test_functions_get_named_actions_on_named_resources_only(template: dict[str, Any]):
    policies = _function_policies(template)
    assert set(policies) == {spec.name for spec in FUNCTIONS}
    for name, statements in policies.items():
        for statement in statements:
            actions = _as_list(statement["Action"])
            if statement["Effect"] == "Deny":  # the audit tables' append-only deny, and nothing else
                assert sorted(actions) == sorted(APPEND_ONLY_DENIED), (name, actions)
                continue
            assert statement["Effect"] == "Allow"
            assert not any("*" in action for action in actions), (name, actions)
            if statement["Resource"] == "*":
                assert set(actions) <= STAR_ONLY_ACTIONS, (name, actions)


def test_dispatch_and_mark_failed_have_no_s3_access(template: dict[str, Any]):
    policies = _function_policies(template)
    for name in ("dispatch", "mark_failed"):
        assert _s3_resources(policies[name]) == {}, name


def test_each_function_may_touch_only_its_prefixes(template: dict[str, Any]):
    policies = _function_policies(template)
    for name, statements in policies.items():
        granted = _s3_resources(statements)
        access = BUCKET_ACCESS.get(name)
        if access is None:
            assert granted == {}, name
            continue
        expected = {
            "s3:GetObject": {f"/{p}*" for p in access.read},
            "s3:PutObject": {f"/{p}*" for p in access.write},
            "s3:DeleteObject": {f"/{p}*" for p in access.delete},
            "s3:DeleteObjectVersion": {f"/{p}*" for p in access.delete},
            "s3:ListBucket": {"bucket:" + ",".join(f"{p}*" for p in access.list)} if access.list else set(),
            "s3:ListBucketVersions": (
                {"bucket:" + ",".join(f"{p}*" for p in access.list_versions)}
                if access.list_versions
                else set()
            ),
        }
        assert granted == {action: v for action, v in expected.items() if v}, name
    # The API presigns uploads and downloads: writes only under uploads/ (and quarantine/, to reject;
    # models/ and references/, to register a model, an atlas or a norms table; derived/, to keep a
    # reprocessed study's last attempt under derived/{id}/attempts/{n}/).
    assert _s3_resources(policies["api"])["s3:PutObject"] == {
        "/uploads/*",
        "/quarantine/*",
        "/derived/*",
        "/models/*",
        "/references/*",
    }
    # Finalize reads the volume (work/) and the label maps (derived/) its report draws, writes the
    # report and results.json, and removes them again for a study deleted while it ran; it lists a
    # DICOM study's source copies under derived/ to file its DICOM outputs beside them.
    assert _s3_resources(policies["finalize"]) == {
        "s3:GetObject": {"/work/*", "/derived/*"},
        "s3:PutObject": {"/derived/*"},
        "s3:DeleteObject": {"/derived/*"},
        "s3:DeleteObjectVersion": {"/derived/*"},
        "s3:ListBucket": {"bucket:derived/*"},
        "s3:ListBucketVersions": {"bucket:derived/*"},
    }


def test_only_ingest_the_api_the_exam_completion_and_batches_write_the_objects_table(
    template: dict[str, Any],
):
    (objects_table,) = [
        lid for lid in _resources(template, "AWS::DynamoDB::Table") if lid.startswith("ObjectsTable")
    ]
    writers = set()
    for name, statements in _function_policies(template).items():
        for statement in statements:
            resources = _as_list(statement["Resource"])
            if _getatt(objects_table) in resources and "dynamodb:PutItem" in _as_list(statement["Action"]):
                writers.add(name)
    # The completion of network exams records the objects it routes to a series' own study; a
    # reprocess (the API, a bulk reprocess batch) records the attempt it ends (attempt#{n} rows).
    assert writers == {"ingest", "api", "complete_transfers", "reprocess_batches"}
    # The reaper only deletes a deleted study's rows.
    reaper_actions = {
        action
        for statement in _function_policies(template)["reaper"]
        if _getatt(objects_table) in _as_list(statement["Resource"])
        for action in _as_list(statement["Action"])
    }
    assert reaper_actions - set(DYNAMODB_READ) == {"dynamodb:DeleteItem"}


def test_the_api_stage_is_logged_traced_throttled_validated_and_behind_waf(
    stack: Template, template: dict[str, Any]
):
    stack.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "TracingEnabled": True,
            "AccessLogSetting": {"DestinationArn": Match.any_value(), "Format": Match.any_value()},
            "MethodSettings": [
                Match.object_like(
                    {"LoggingLevel": "ERROR", "DataTraceEnabled": False, "ThrottlingRateLimit": 50}
                )
            ],
        },
    )
    stack.has_resource_properties(
        "AWS::ApiGateway::RequestValidator", {"ValidateRequestBody": True, "ValidateRequestParameters": True}
    )
    (validator,) = _resources(template, "AWS::ApiGateway::RequestValidator")
    for lid, method in _resources(template, "AWS::ApiGateway::Method").items():
        assert method["Properties"]["RequestValidatorId"] == {"Ref": validator}, lid
    (stage,) = _resources(template, "AWS::ApiGateway::Stage")
    (association,) = _resources(template, "AWS::WAFv2::WebACLAssociation").values()
    assert stage in json.dumps(association["Properties"]["ResourceArn"])
    (acl,) = _resources(template, "AWS::WAFv2::WebACL").values()
    groups = {
        r["Statement"]["ManagedRuleGroupStatement"]["Name"]
        for r in acl["Properties"]["Rules"]
        if "ManagedRuleGroupStatement" in r["Statement"]
    }
    assert "AWSManagedRulesCommonRuleSet" in groups
    # STOW-RS bodies (binary DICOM, up to 4 MiB) skip the common rule set's body rules, and only they.
    (common,) = [
        r["Statement"]["ManagedRuleGroupStatement"]
        for r in acl["Properties"]["Rules"]
        if r["Statement"].get("ManagedRuleGroupStatement", {}).get("Name") == "AWSManagedRulesCommonRuleSet"
    ]
    stow = common["ScopeDownStatement"]["NotStatement"]["Statement"]["AndStatement"]["Statements"]
    assert {
        (m["ByteMatchStatement"]["SearchString"], m["ByteMatchStatement"]["PositionalConstraint"])
        for m in stow
    } == {
        ("POST", "EXACTLY"),
        ("/dicomweb/studies", "CONTAINS"),
    }
    (rest,) = _resources(template, "AWS::ApiGateway::RestApi").values()
    assert set(rest["Properties"]["BinaryMediaTypes"]) == {
        "multipart/related",
        "application/dicom",
        "application/vnd.apache.parquet",  # cohort exports (docs/api.md, GET /measures)
    }
    assert any("RateBasedStatement" in r["Statement"] for r in acl["Properties"]["Rules"])
    (logging,) = _resources(template, "AWS::WAFv2::LoggingConfiguration").values()
    assert logging["Properties"]["RedactedFields"] == [{"SingleHeader": {"Name": "authorization"}}]
