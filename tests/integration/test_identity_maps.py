"""The honest broker's identity maps: the IdentityMaps contract, held by the DynamoDB adapter (moto,
as in production and the local cloud) and the in-memory fake; and who may read them (only egress),
both in the synthesized template and as the local cloud's IAM enforces it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pynamodb.exceptions import GetError

from infra.local.cloud import LocalCloud
from infra.local.deploy import REGION
from infra.local.iam import Request, is_allowed
from tests.fakes import InMemoryIdentityMaps
from voxelpipe.adapters.identity_maps import DynamoIdentityMaps
from voxelpipe.function_specs import API, EGRESS, PREPARE, REAPER
from voxelpipe.identities import IdentityMap
from voxelpipe.ports import IdentityMaps
from voxelpipe.wiring import EnvVar, Resource

STUDY = "a" * 32
PATIENT = {"00100020": {"vr": "LO", "Value": ["MRN-Doe-1"]}}
STUDY_MODULE = {"00080050": {"vr": "SH", "Value": ["ACC-Doe-1"]}}
# Every way DynamoDB hands an item's content back.
READS = (
    "dynamodb:GetItem",
    "dynamodb:BatchGetItem",
    "dynamodb:Query",
    "dynamodb:Scan",
    "dynamodb:PartiQLSelect",
)


@pytest.fixture(params=["dynamodb", "in-memory"])
def identity_maps(request: pytest.FixtureRequest) -> Iterator[IdentityMaps]:
    if request.param == "in-memory":
        yield InMemoryIdentityMaps()
    else:
        cloud: LocalCloud = request.getfixturevalue("cloud")
        assert cloud.env(EnvVar.IDENTITY_MAP_TABLE)
        yield DynamoIdentityMaps()


def test_maps_merge_across_attempts_and_are_forgotten(identity_maps: IdentityMaps):
    assert identity_maps.get(STUDY) is None
    identity_maps.forget(STUDY)  # nothing to forget: no error
    first = {f"2.25.{n}": f"1.2.826.0.1.{n}" for n in range(250)}  # past one update's batch
    identity_maps.save(STUDY, IdentityMap(uids=first, patient=PATIENT, study=STUDY_MODULE))
    later_study = {"00080050": {"vr": "SH", "Value": ["ACC-Doe-2"]}}
    identity_maps.save(
        STUDY, IdentityMap(uids={"2.25.999": "1.2.3.999", "2.25.1": "1.2.826.0.1.1"}, study=later_study)
    )
    identity_maps.save("b" * 32, IdentityMap(uids={"2.25.7": "9.9"}))
    found = identity_maps.get(STUDY)
    assert found is not None
    assert found.uids == {**first, "2.25.999": "1.2.3.999"}
    assert found.patient == PATIENT and found.study == later_study  # a later attempt's modules win
    identity_maps.forget(STUDY)
    assert identity_maps.get(STUDY) is None
    assert identity_maps.get("b" * 32) == IdentityMap(uids={"2.25.7": "9.9"})


def _resource_ids(template: dict[str, Any], kind: str, prefix: str) -> list[str]:
    return [
        logical_id
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] == kind and logical_id.startswith(prefix)
    ]


def test_only_egress_reads_the_maps_and_their_key_serves_only_through_dynamodb(
    cloud: LocalCloud, template: dict[str, Any]
):
    deployment = cloud.deployment
    (table_id,) = _resource_ids(template, "AWS::DynamoDB::Table", Resource.IDENTITY_MAP_TABLE)
    (key_id,) = _resource_ids(template, "AWS::KMS::Key", f"Security{Resource.IDENTITY_MAP_KEY}")
    # Its own key: not the data key every other table and the bucket use.
    sse = template["Resources"][table_id]["Properties"]["SSESpecification"]
    assert sse["KMSMasterKeyId"] == {"Fn::GetAtt": [key_id, "Arn"]}
    table_arn = deployment.resolve({"Fn::GetAtt": [table_id, "Arn"]})
    key_arn = deployment.resolve({"Fn::GetAtt": [key_id, "Arn"]})
    role_of = {
        name: deployment.principal_roles[name] for name in (EGRESS.name, PREPARE.name, API.name, REAPER.name)
    }

    def roles_allowed(action: str, resource: str, context: dict[str, str] | None = None) -> set[str]:
        request = Request(action, resource, context or {})
        return {
            role for role, statements in deployment.role_statements.items() if is_allowed(statements, request)
        }

    assert len(deployment.role_statements) > 10  # every role of the stack is looked at
    for action in READS:
        assert roles_allowed(action, table_arn) == (
            {role_of[EGRESS.name]} if action == "dynamodb:GetItem" else set()
        )
    assert roles_allowed("dynamodb:UpdateItem", table_arn) == {role_of[PREPARE.name]}
    assert roles_allowed("dynamodb:PutItem", table_arn) == {role_of[PREPARE.name]}
    assert roles_allowed("dynamodb:DeleteItem", table_arn) == {role_of[API.name], role_of[REAPER.name]}
    # Nobody may decrypt with the key directly; through DynamoDB, those that use the table.
    assert roles_allowed("kms:Decrypt", key_arn) == set()
    via_dynamodb = {"kms:ViaService": f"dynamodb.{REGION}.amazonaws.com"}
    assert roles_allowed("kms:Decrypt", key_arn, via_dynamodb) == set(role_of.values())
    assert roles_allowed("kms:GenerateDataKey", key_arn, via_dynamodb) == {role_of[PREPARE.name]}
    # The key policy adds no one: only the account (IAM policies decide, as above).
    key_policy = template["Resources"][key_id]["Properties"]["KeyPolicy"]["Statement"]
    assert [statement["Principal"] for statement in key_policy] == [
        {
            "AWS": {
                "Fn::Join": [
                    "",
                    ["arn:", {"Ref": "AWS::Partition"}, ":iam::", {"Ref": "AWS::AccountId"}, ":root"],
                ]
            }
        }
    ]


def test_the_local_cloud_refuses_a_read_by_any_role_but_egress(cloud: LocalCloud):
    maps = DynamoIdentityMaps()
    with cloud.acting_as(PREPARE.name):
        maps.save(STUDY, IdentityMap(uids={"2.25.1": "1.2.3"}, patient=PATIENT))
    with cloud.acting_as(EGRESS.name):
        assert maps.get(STUDY) == IdentityMap(uids={"2.25.1": "1.2.3"}, patient=PATIENT)
    for function in (API.name, PREPARE.name, REAPER.name):
        with cloud.acting_as(function), pytest.raises(GetError):
            maps.get(STUDY)
    assert [(denial.principal, denial.request.action) for denial in cloud.iam.denials] == [
        (function, "dynamodb:GetItem") for function in (API.name, PREPARE.name, REAPER.name)
    ]
    cloud.iam.denials.clear()  # the refusals this test made on purpose
    with cloud.acting_as(API.name):
        maps.forget(STUDY)
    with cloud.acting_as(EGRESS.name):
        assert maps.get(STUDY) is None
