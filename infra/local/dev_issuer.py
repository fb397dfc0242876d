"""The development issuer: `voxelpipe serve`'s stand-in for Cognito's hosted UI (docs/security.md,
"Machine clients and CLI login").

The same endpoints as Cognito's, under the local API's address:

- `GET /oauth2/authorize` (authorization code with PKCE, S256 only, to a loopback redirect URI):
  a minimal sign-in page where a developer picks a tenant and a role; `POST /oauth2/authorize` then
  redirects to the client's `redirect_uri` with a code that is single-use and lives a minute;
- `POST /oauth2/token`: `authorization_code` (the code, the same redirect URI, the PKCE verifier),
  `refresh_token`, and `client_credentials` (a machine client's id and secret, HTTP Basic);
- `POST /oauth2/revoke`: forgets a refresh token.

What it issues are development tokens (api/auth.py): an ID token as `voxelpipe token` mints one, an
access token as Cognito's client-credentials grant gives one. Codes and refresh tokens live in this
process only.
"""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from voxelpipe.adapters.machine_clients import DynamoMachineClients
from voxelpipe.api.auth import InvalidClaims, Role, mint_dev_access_token, mint_dev_token
from voxelpipe.api.dev_clients import dev_client_secret_matches
from voxelpipe.machine_clients import scopes_of

DEV_LOGIN_CLIENT_ID = "voxelpipe-cli"  # the CLI's public client, as the deployment's CliClient
CODE_TTL_S = 60
ID_TOKEN_TTL_S = 3600  # as Cognito's default ID token
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


@dataclass(frozen=True)
class _Grant:
    """Who signed in: what a code or a refresh token stands for."""

    tenant: str
    role: Role
    subject: str


@dataclass(frozen=True)
class _Code:
    grant: _Grant
    challenge: str
    redirect_uri: str
    client_id: str
    expires_at: float


def _error(status: int, error: str, description: str) -> JSONResponse:
    """An OAuth 2.0 error answer (RFC 6749 5.2)."""
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


def _loopback(uri: str) -> bool:
    """A redirect URI the issuer sends codes to: http on this machine only (RFC 8252 7.3)."""
    parts = urlsplit(uri)
    return parts.scheme == "http" and (parts.hostname or "") in LOOPBACK_HOSTS and not parts.fragment


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def _page(params: dict[str, str], problem: str | None = None) -> HTMLResponse:
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in params.items()
    )
    roles = "".join(f'<option value="{r.value}">{r.value}</option>' for r in Role)
    warning = f'<p role="alert">{html.escape(problem)}</p>' if problem else ""
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>voxelpipe sign-in (development)</title>
</head><body><h1>voxelpipe: development sign-in</h1>
<p>This issuer signs development tokens for <code>voxelpipe serve</code> only.</p>{warning}
<form method="post" action="/oauth2/authorize">{hidden}
<label>Tenant <input name="tenant" value="demo" required></label>
<label>Role <select name="role">{roles}</select></label>
<label>User <input name="username" value="dev-user" required></label>
<button type="submit">Sign in</button></form></body></html>"""
    return HTMLResponse(body, headers={"cache-control": "no-store", "x-frame-options": "DENY"})


class DevIssuer:
    """Codes and refresh tokens, in memory. Served in the API's app, its requests act as the API
    function (the machine-clients table is read under that role's policies)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._codes: dict[str, _Code] = {}
        self._refresh: dict[str, _Grant] = {}

    def _authorize_params(self, query: dict[str, str]) -> str | None:
        """What is wrong with an authorization request, or None."""
        if query.get("response_type") != "code":
            return "response_type must be code"
        if query.get("client_id") != DEV_LOGIN_CLIENT_ID:
            return f"unknown client_id (the CLI's is {DEV_LOGIN_CLIENT_ID})"
        if not _loopback(query.get("redirect_uri", "")):
            return "redirect_uri must be http on a loopback address (127.0.0.1, localhost, [::1])"
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return "PKCE is required: code_challenge with code_challenge_method S256"
        return None

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/oauth2", include_in_schema=False)
        kept = (
            "response_type",
            "client_id",
            "redirect_uri",
            "code_challenge",
            "code_challenge_method",
            "state",
        )

        @router.get("/authorize")
        def authorize_page(request: Request) -> Response:
            query = dict(request.query_params)
            wrong = self._authorize_params(query)
            if wrong:
                return _error(400, "invalid_request", wrong)
            return _page({k: query[k] for k in kept if k in query})

        @router.post("/authorize")
        async def sign_in(request: Request) -> Response:
            form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
            wrong = self._authorize_params(form)
            if wrong:
                return _error(400, "invalid_request", wrong)
            params = {k: form[k] for k in kept if k in form}
            try:
                role = Role(form.get("role", ""))
                subject = form.get("username", "").strip() or "dev-user"
                mint_dev_token(form.get("tenant", ""), role, subject=subject)  # refuses a bad tenant
            except (ValueError, InvalidClaims) as error:
                return _page(params, f"not signed in: {error}")
            code = secrets.token_urlsafe(32)
            with self._lock:
                self._codes[code] = _Code(
                    grant=_Grant(form["tenant"], role, subject),
                    challenge=form["code_challenge"],
                    redirect_uri=form["redirect_uri"],
                    client_id=form["client_id"],
                    expires_at=time.monotonic() + CODE_TTL_S,
                )
            answer = {"code": code, **({"state": form["state"]} if "state" in form else {})}
            return RedirectResponse(f"{form['redirect_uri']}?{urlencode(answer)}", status_code=303)

        @router.post("/token")
        async def token(request: Request) -> Response:
            form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
            grant_type = form.get("grant_type")
            if grant_type == "authorization_code":
                return self._exchange(form)
            if grant_type == "refresh_token":
                return self._refreshed(form)
            if grant_type == "client_credentials":
                return self._client_credentials(request, form)
            return _error(400, "unsupported_grant_type", f"grant_type {grant_type!r}")

        @router.post("/revoke")
        async def revoke(request: Request) -> Response:
            form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
            with self._lock:
                self._refresh.pop(form.get("token", ""), None)
            return Response(status_code=200)

        return router

    def _tokens(self, grant: _Grant, refresh_token: str | None) -> JSONResponse:
        id_token = mint_dev_token(grant.tenant, grant.role, subject=grant.subject, ttl_s=ID_TOKEN_TTL_S)
        answer: dict[str, Any] = {
            "id_token": id_token,
            "access_token": id_token,  # the API takes people's ID tokens; nothing here needs more
            "token_type": "Bearer",
            "expires_in": ID_TOKEN_TTL_S,
        }
        if refresh_token:
            answer["refresh_token"] = refresh_token
        return JSONResponse(answer, headers={"cache-control": "no-store"})

    def _exchange(self, form: dict[str, str]) -> JSONResponse:
        with self._lock:
            code = self._codes.pop(form.get("code", ""), None)  # single-use: gone once presented
        if code is None or time.monotonic() > code.expires_at:
            return _error(400, "invalid_grant", "the code is unknown, used or expired")
        if form.get("client_id") != code.client_id or form.get("redirect_uri") != code.redirect_uri:
            return _error(400, "invalid_grant", "client_id or redirect_uri differ from the authorization's")
        if not secrets.compare_digest(_s256(form.get("code_verifier", "")), code.challenge):
            return _error(400, "invalid_grant", "the PKCE code_verifier does not match the code_challenge")
        refresh_token = secrets.token_urlsafe(48)
        with self._lock:
            self._refresh[refresh_token] = code.grant
        return self._tokens(code.grant, refresh_token)

    def _refreshed(self, form: dict[str, str]) -> JSONResponse:
        with self._lock:
            grant = self._refresh.get(form.get("refresh_token", ""))
        if grant is None or form.get("client_id") != DEV_LOGIN_CLIENT_ID:
            return _error(400, "invalid_grant", "the refresh token is unknown or revoked")
        return self._tokens(grant, None)  # as Cognito: the refresh token stays the same

    def _client_credentials(self, request: Request, form: dict[str, str]) -> JSONResponse:
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            client_id, secret = "", ""
        if scheme.lower() != "basic" or not dev_client_secret_matches(client_id, secret):
            return _error(401, "invalid_client", "unknown client or wrong secret (HTTP Basic)")
        client = DynamoMachineClients().get(client_id)
        if client is None:
            return _error(401, "invalid_client", "unknown client")
        scopes = client.scopes & scopes_of(form["scope"]) if form.get("scope") else client.scopes
        token = mint_dev_access_token(client.client_id, scopes)
        return JSONResponse(
            {"access_token": token, "token_type": "Bearer", "expires_in": 3600},
            headers={"cache-control": "no-store"},
        )
