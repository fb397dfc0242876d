"""Verifying a Cognito ID token where no API Gateway Cognito authorizer does it: the WebSocket
API's $connect authorizer (functions/live_authorizer)."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

import jwt

from voxelpipe.wiring import EnvVar


def _issuer() -> str:
    region = os.environ.get("AWS_REGION") or os.environ["AWS_DEFAULT_REGION"]
    return f"https://cognito-idp.{region}.amazonaws.com/{os.environ[EnvVar.USER_POOL_ID]}"


@cache
def _keys(jwks_url: str) -> jwt.PyJWKClient:
    return jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=3600)


def id_token_claims(token: str) -> dict[str, Any]:
    """The claims of a user pool's ID token, its signature (the pool's JWKS), issuer, audience (the
    app client), expiry and `token_use` verified; PyJWTError otherwise."""
    issuer = _issuer()
    key = _keys(f"{issuer}/.well-known/jwks.json").get_signing_key_from_jwt(token)
    claims: dict[str, Any] = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        issuer=issuer,
        audience=os.environ[EnvVar.USER_POOL_CLIENT_ID],
        options={"require": ["exp", "iat", "iss", "sub", "aud"]},
    )
    if claims.get("token_use") != "id":
        raise jwt.InvalidTokenError("not an ID token (token_use is not 'id')")
    return claims
