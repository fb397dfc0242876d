"""Cognito's pre-token-generation trigger: a federated user's tenant and roles (voxelpipe.federation).

Cognito calls it before issuing tokens (sign-in, refresh); the answer overrides `custom:tenant`
and `cognito:groups` in the ID token (and the groups in the access token) of users who signed in
through an identity provider, and leaves native users' tokens as they were.

The stack attaches it as a version 1 trigger; it answers version 2 and 3 events too (their answer
has another shape), so that one trigger can serve if the pool moves to them (a pool has one
pre-token-generation trigger). Machine (client-credentials) events carry no user: unchanged.
"""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.data_classes.cognito_user_pool_event import (
    PreTokenGenerationTriggerEvent,
    PreTokenGenerationV2TriggerEvent,
)
from aws_lambda_powertools.utilities.typing import LambdaContext

from voxelpipe.federation import UNCHANGED, ProviderClaims, providers_from_env, token_overrides
from voxelpipe.observability import logger, metrics, tracer
from voxelpipe.wiring import EnvVar


@cache
def _providers() -> dict[str, ProviderClaims]:
    return providers_from_env(os.environ.get(EnvVar.FEDERATED_PROVIDERS, ""))


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    trigger = PreTokenGenerationTriggerEvent(event)
    overrides = token_overrides(
        trigger.request.user_attributes,
        trigger.request.group_configuration.groups_to_override,
        _providers(),
    )
    if overrides == UNCHANGED:  # a native user: the response stays untouched
        return trigger.raw_event
    if str(event.get("version")) in ("2", "3"):
        details_v2 = PreTokenGenerationV2TriggerEvent(event).response.claims_scope_override_details
        if overrides.claims:
            details_v2.id_token_generation.claims_to_add_or_override = overrides.claims
        if overrides.groups is not None:
            details_v2.set_group_configuration_groups_to_override(overrides.groups)
        return event
    details = trigger.response.claims_override_details
    if overrides.claims:
        details.claims_to_add_or_override = overrides.claims
    if overrides.groups is not None:
        details.set_group_configuration_groups_to_override(overrides.groups)
    return trigger.raw_event
