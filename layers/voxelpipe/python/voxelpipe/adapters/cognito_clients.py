"""Machine clients' credentials as Cognito app clients (the ClientIssuer port, in AWS).

Each is an app client of the deployment's user pool (EnvVar.USER_POOL_ID) with a generated secret,
allowed only the client-credentials grant and the scopes asked for, of the resource server
`voxelpipe`. Cognito keeps the secret; we hand it on once.
"""

from __future__ import annotations

import contextlib
import os
from functools import cache
from typing import Any

import boto3

from voxelpipe.machine_clients import ACCESS_TOKEN_MINUTES, Scope
from voxelpipe.ports import IssuedClient
from voxelpipe.wiring import EnvVar


@cache
def _cognito() -> Any:  # cognito-idp has no type stubs installed
    return boto3.client("cognito-idp")


class CognitoClientIssuer:
    def __init__(self, user_pool_id: str | None = None) -> None:
        self.user_pool_id = user_pool_id or os.environ[EnvVar.USER_POOL_ID]

    def create(self, tenant: str, name: str, scopes: frozenset[Scope]) -> IssuedClient:
        created = _cognito().create_user_pool_client(
            UserPoolId=self.user_pool_id,
            ClientName=f"machine-{tenant}-{name}"[:128],
            GenerateSecret=True,
            AllowedOAuthFlowsUserPoolClient=True,
            AllowedOAuthFlows=["client_credentials"],
            AllowedOAuthScopes=sorted(scope.full_name for scope in scopes),
            AccessTokenValidity=ACCESS_TOKEN_MINUTES,
            TokenValidityUnits={"AccessToken": "minutes"},
            EnableTokenRevocation=True,
            PreventUserExistenceErrors="ENABLED",
        )["UserPoolClient"]
        return IssuedClient(client_id=created["ClientId"], client_secret=created["ClientSecret"])

    def delete(self, client_id: str) -> None:
        client = _cognito()
        with contextlib.suppress(client.exceptions.ResourceNotFoundException):
            client.delete_user_pool_client(UserPoolId=self.user_pool_id, ClientId=client_id)
