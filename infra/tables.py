"""DynamoDB tables built from the PynamoDB models, so the code and the stack share one schema."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from constructs import Construct
from pynamodb.models import Model

from voxelpipe.records import (
    IDEMPOTENCY_KEY_ATTRIBUTE,
    IDEMPOTENCY_TTL_ATTRIBUTE,
    table_schema,
    ttl_attribute,
)
from voxelpipe.wiring import APPEND_ONLY_RESOURCES

_TYPES = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}


def _key(schema: list[dict[str, str]], types: dict[str, str], kind: str) -> dynamodb.Attribute | None:
    for key in schema:
        if key["KeyType"] == kind:
            return dynamodb.Attribute(name=key["AttributeName"], type=_TYPES[types[key["AttributeName"]]])
    return None


def _table_props(key: kms.IKey) -> dict[str, object]:
    return {
        "billing_mode": dynamodb.BillingMode.PAY_PER_REQUEST,
        "point_in_time_recovery_specification": dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        "encryption": dynamodb.TableEncryption.CUSTOMER_MANAGED,
        "encryption_key": key,
        "removal_policy": RemovalPolicy.RETAIN,
    }


def table_for_model(
    scope: Construct, construct_id: str, model: type[Model], *, key: kms.IKey
) -> dynamodb.Table:
    schema = table_schema(model)
    types = {d["AttributeName"]: d["AttributeType"] for d in schema["attribute_definitions"]}
    partition_key = _key(schema["key_schema"], types, "HASH")
    assert partition_key is not None, f"{model.__name__} has no hash key"
    table = dynamodb.Table(
        scope,
        construct_id,
        partition_key=partition_key,
        sort_key=_key(schema["key_schema"], types, "RANGE"),
        time_to_live_attribute=ttl_attribute(model),
        # An audit table cannot be deleted by a stack update or a console click (its rows stay).
        deletion_protection=construct_id in APPEND_ONLY_RESOURCES,
        **_table_props(key),  # type: ignore[arg-type]
    )
    for index in schema["global_secondary_indexes"]:
        index_types = {d["AttributeName"]: d["AttributeType"] for d in index["attribute_definitions"]}
        index_pk = _key(index["key_schema"], index_types, "HASH")
        assert index_pk is not None
        table.add_global_secondary_index(
            index_name=index["index_name"],
            partition_key=index_pk,
            sort_key=_key(index["key_schema"], index_types, "RANGE"),
            projection_type=dynamodb.ProjectionType.ALL,
        )
    return table


def idempotency_table(scope: Construct, construct_id: str, *, key: kms.IKey) -> dynamodb.Table:
    """The table Powertools' idempotency utility expects (its default attribute names)."""
    return dynamodb.Table(
        scope,
        construct_id,
        partition_key=dynamodb.Attribute(name=IDEMPOTENCY_KEY_ATTRIBUTE, type=dynamodb.AttributeType.STRING),
        time_to_live_attribute=IDEMPOTENCY_TTL_ATTRIBUTE,
        **_table_props(key),  # type: ignore[arg-type]
    )
