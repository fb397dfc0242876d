"""CORS on the REST API: the configured origins get the headers, on preflights and real answers."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from infra.settings import parse_origins
from voxelpipe.api.app import create_app
from voxelpipe.wiring import EnvVar

ALLOWED = "https://viewer.example.org"


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.setenv(EnvVar.CORS_ALLOWED_ORIGINS, f"{ALLOWED}, https://lab.example.org")
    return TestClient(create_app())


def _preflight(client: TestClient, origin: str) -> dict[str, str]:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    return dict(client.options("/studies", headers=headers).headers)


def test_an_allowed_origin_gets_the_headers_on_the_preflight_and_the_answer(client: TestClient):
    preflight = _preflight(client, ALLOWED)
    assert preflight["access-control-allow-origin"] == ALLOWED
    assert "POST" in preflight["access-control-allow-methods"]
    assert "authorization" in preflight["access-control-allow-headers"].lower()
    answer = client.get("/health", headers={"Origin": ALLOWED})
    assert answer.headers["access-control-allow-origin"] == ALLOWED
    # An error answer (no token) carries them too, so a browser front end can read it.
    refused = client.get("/studies", headers={"Origin": ALLOWED})
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ALLOWED


def test_another_origin_gets_none(client: TestClient):
    assert "access-control-allow-origin" not in _preflight(client, "https://evil.example.com")
    answer = client.get("/health", headers={"Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in answer.headers


def test_no_origin_is_allowed_by_default(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(EnvVar.CORS_ALLOWED_ORIGINS, raising=False)
    client = TestClient(create_app())
    assert "access-control-allow-origin" not in _preflight(client, ALLOWED)
    assert "access-control-allow-origin" not in client.get("/health", headers={"Origin": ALLOWED}).headers


def test_the_context_setting_takes_a_list_or_a_string_of_origins_and_refuses_anything_else():
    assert parse_origins([]) == parse_origins("") == parse_origins(None) == ()
    assert parse_origins("https://a.example.org, http://localhost:5173/") == (
        "https://a.example.org",
        "http://localhost:5173",
    )
    for bad in ("*", "a.example.org", "https://a.example.org/path", "ftp://a.example.org"):
        with pytest.raises(ValueError, match="not an origin"):
            parse_origins([bad])
