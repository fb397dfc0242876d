"""`voxelpipe login` and `logout`: a person's tokens for the CLI, through the deployment's hosted UI
(or, under `voxelpipe serve`, the development issuer), cached for every later command.

The authorization code grant with PKCE (RFC 7636, S256) for a public client (RFC 8252): the CLI
listens on a loopback port for the redirect, opens the browser at the authorize endpoint (or
prints it), checks the `state`, and trades the code and its verifier for tokens. The endpoints and
the client id come from the API's `GET /health` (`login`). Tokens are kept per API URL in
`<config dir>/tokens.json` (mode 0600); an expired ID token is refreshed with the refresh token;
`logout` revokes the refresh token and forgets them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx

from voxelpipe.wiring import CLI_CALLBACK_URL, CLI_LOGIN_PORT

CONFIG_DIR_ENV = "VOXELPIPE_CONFIG_DIR"
TOKENS_FILE = "tokens.json"
DEFAULT_LOGIN_PORT = CLI_LOGIN_PORT  # the callback URL the deployment's app client allows
CALLBACK_PATH = urlsplit(CLI_CALLBACK_URL).path
REFRESH_MARGIN_S = 60  # a token this close to its expiry is refreshed before use
LOGIN_TIMEOUT_S = 300.0


class LoginError(Exception):
    """Why signing in (or refreshing) did not work, in a sentence."""


def config_dir() -> Path:
    """The CLI's own directory (where the development secret is kept too)."""
    found = os.environ.get(CONFIG_DIR_ENV)
    if found:
        return Path(found)
    base = os.environ.get("XDG_CONFIG_HOME")
    return (Path(base) if base else Path.home() / ".config") / "voxelpipe"


def _tokens_path() -> Path:
    return config_dir() / TOKENS_FILE


def _load() -> dict[str, Any]:
    path = _tokens_path()
    try:
        found = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _save(entries: dict[str, Any]) -> None:
    """Write the cache readable by this user only (created 0600, never world-readable on the way)."""
    path = _tokens_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_suffix(".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        json.dump(entries, out, indent=2)
    os.chmod(temporary, 0o600)
    os.replace(temporary, path)


def _key(api_url: str) -> str:
    return api_url.rstrip("/")


@dataclass(frozen=True)
class Endpoints:
    authorize_url: str
    token_url: str
    revoke_url: str
    client_id: str


def endpoints(api_url: str) -> Endpoints:
    """Where the API says to sign in (GET /health's `login`)."""
    try:
        health = httpx.get(f"{_key(api_url)}/health", timeout=30).json()
    except (httpx.HTTPError, ValueError) as error:
        raise LoginError(f"{api_url} did not answer GET /health: {error}") from error
    login = health.get("login") if isinstance(health, dict) else None
    if not isinstance(login, dict):
        raise LoginError(f"{api_url} names no sign-in endpoints (GET /health has no `login`)")
    return Endpoints(login["authorize_url"], login["token_url"], login["revoke_url"], login["client_id"])


def _pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(64)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


class _Callback(HTTPServer):
    """The loopback listener: keeps the first redirect's query."""

    query: dict[str, str] | None = None
    arrived: threading.Event


class _CallbackHandler(BaseHTTPRequestHandler):
    server: _Callback

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if parts.path != CALLBACK_PATH:
            self.send_error(404)
            return
        self.server.query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        ok = "code" in self.server.query
        body = (
            "<!doctype html><title>voxelpipe</title><p>"
            + ("Signed in: you may close this window." if ok else "Not signed in: see the terminal.")
            + "</p>"
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "text/html; charset=utf-8")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.server.arrived.set()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the terminal is the user's."""


def _store(
    api_url: str, found: Endpoints, answer: dict[str, Any], refresh_token: str | None
) -> dict[str, Any]:
    token = answer.get("id_token")
    if not isinstance(token, str):
        raise LoginError(f"the token endpoint gave no id_token: {sorted(answer)}")
    entry = {
        "id_token": token,
        "refresh_token": answer.get("refresh_token") or refresh_token,
        "expires_at": time.time() + float(answer.get("expires_in", 3600)),
        "token_url": found.token_url,
        "revoke_url": found.revoke_url,
        "client_id": found.client_id,
    }
    entries = _load()
    entries[_key(api_url)] = entry
    _save(entries)
    return entry


def _token_request(url: str, form: dict[str, str]) -> dict[str, Any]:
    response = httpx.post(url, data=form, timeout=30)
    try:
        answer = response.json()
    except ValueError:
        answer = {"error": response.text[:200]}
    if response.status_code != 200 or not isinstance(answer, dict):
        raise LoginError(
            f"the token endpoint refused: {answer.get('error')}: {answer.get('error_description', '')}"
        )
    return answer


def login(
    api_url: str,
    *,
    port: int = DEFAULT_LOGIN_PORT,
    open_browser: Callable[[str], object] | None = None,
    timeout_s: float = LOGIN_TIMEOUT_S,
) -> dict[str, Any]:
    """Sign in through the browser; the cached entry. `open_browser` is given the authorize URL
    (default: the system's web browser); the redirect comes back to http://localhost:port."""
    found = endpoints(api_url)
    verifier, challenge = _pkce()
    state = secrets.token_urlsafe(24)
    server = _Callback(("127.0.0.1", port), _CallbackHandler)
    server.arrived = threading.Event()
    redirect_uri = f"http://localhost:{server.server_address[1]}{CALLBACK_PATH}"
    query = {
        "response_type": "code",
        "client_id": found.client_id,
        "redirect_uri": redirect_uri,
        "scope": "openid email profile",
        "state": state,
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    url = f"{found.authorize_url}?{urlencode(query)}"
    thread = threading.Thread(target=server.serve_forever, name="voxelpipe-login", daemon=True)
    thread.start()
    try:
        if open_browser is None:
            import webbrowser

            webbrowser.open(url)
        else:
            open_browser(url)
        if not server.arrived.wait(timeout_s):
            raise LoginError(f"no sign-in came back within {timeout_s:.0f} s")
    finally:
        server.shutdown()
        server.server_close()
    answered = server.query or {}
    if answered.get("state") != state:
        raise LoginError("the redirect's state is not this login's: ignored")
    if "code" not in answered:
        raise LoginError(f"not signed in: {answered.get('error')}: {answered.get('error_description', '')}")
    answer = _token_request(
        found.token_url,
        {
            "grant_type": "authorization_code",
            "client_id": found.client_id,
            "code": answered["code"],
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
    )
    return _store(api_url, found, answer, None)


def cached_token(api_url: str) -> str | None:
    """The signed-in user's ID token for `api_url`, refreshed when (nearly) expired; None when
    nobody signed in there. LoginError when the refresh is refused (sign in again)."""
    entry = _load().get(_key(api_url))
    if not isinstance(entry, dict):
        return None
    if float(entry.get("expires_at", 0)) - REFRESH_MARGIN_S > time.time():
        return str(entry["id_token"])
    if not entry.get("refresh_token"):
        raise LoginError(f"the session for {api_url} has expired: run voxelpipe login")
    try:
        answer = _token_request(
            entry["token_url"],
            {
                "grant_type": "refresh_token",
                "client_id": entry["client_id"],
                "refresh_token": entry["refresh_token"],
            },
        )
    except LoginError as error:
        raise LoginError(f"{error} (the session for {api_url} has ended: run voxelpipe login)") from error
    found = Endpoints("", entry["token_url"], entry["revoke_url"], entry["client_id"])
    return str(_store(api_url, found, answer, entry["refresh_token"])["id_token"])


def logout(api_url: str) -> bool:
    """Revoke the refresh token (best effort) and forget the tokens; whether there were any."""
    entries = _load()
    entry = entries.pop(_key(api_url), None)
    if not isinstance(entry, dict):
        return False
    if entry.get("refresh_token") and entry.get("revoke_url"):
        # Best effort: the tokens are forgotten here all the same; the refresh token expires anyway.
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(
                entry["revoke_url"],
                data={"token": entry["refresh_token"], "client_id": entry["client_id"]},
                timeout=30,
            )
    _save(entries)
    return True
