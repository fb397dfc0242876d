"""`voxelpipe login` end to end against `voxelpipe serve`'s development issuer, the browser step in
headless Chromium: sign in, a later command uses the cached token, an expired one is refreshed,
`logout` revokes it. And machine clients from the CLI: `clients create`, `token --client`, the
client-credentials grant."""

from __future__ import annotations

import base64
import json
import os
import queue
import stat
import threading
import webbrowser
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from infra.cli.login import CONFIG_DIR_ENV, TOKENS_FILE
from infra.cli.main import main
from infra.local.dev_issuer import DEV_LOGIN_CLIENT_ID
from tests.fixtures.serve import free_port, voxelpipe_serve
from voxelpipe.api.auth import DEV_SECRET_FILE_ENV, Role, mint_dev_token

CHROMIUM = Path(os.environ.get("VOXELPIPE_CHROMIUM", "/usr/bin/chromium"))
playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (VOXELPIPE_CHROMIUM)"
)
TENANT = "lab-login"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    secret = tmp_path_factory.getbasetemp() / "dev-token-secret"
    with pytest.MonkeyPatch.context() as patch, voxelpipe_serve(secret) as url:
        patch.setenv(DEV_SECRET_FILE_ENV, str(secret))
        yield url


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(CONFIG_DIR_ENV, str(tmp_path / "config"))
    monkeypatch.delenv("VOXELPIPE_TOKEN", raising=False)
    return tmp_path / "config" / TOKENS_FILE


def _sign_in_with_chromium(url: str) -> None:
    with playwright_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        try:
            page = browser.new_page()
            page.goto(url)
            page.fill("input[name=tenant]", TENANT)
            page.select_option("select[name=role]", Role.UPLOADER.value)
            page.fill("input[name=username]", "alice")
            page.click("button[type=submit]")
            page.wait_for_selector("text=Signed in")
        finally:
            browser.close()


def _listed(served: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    capsys.readouterr()
    assert main(["list", "--api-url", served, "--json"]) == 0
    return [study["study_id"] for study in json.loads(capsys.readouterr().out)["items"]]


def test_login_caches_a_token_that_later_commands_use_refresh_and_logout_revokes(
    served: str, config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    mine = httpx.post(
        f"{served}/studies",
        json={"files": [{"name": "scan.nii.gz", "size": 1000}]},
        headers={"authorization": f"Bearer {mint_dev_token(TENANT, Role.UPLOADER)}"},
    ).json()["study_id"]
    urls: queue.Queue[str] = queue.Queue()
    monkeypatch.setattr(webbrowser, "open", lambda url, *a, **k: urls.put(url) or True)
    exit_codes: list[int] = []
    command = ["login", "--api-url", served, "--port", str(free_port())]
    signing_in = threading.Thread(target=lambda: exit_codes.append(main(command)))
    signing_in.start()
    _sign_in_with_chromium(urls.get(timeout=60))
    signing_in.join(60)
    assert exit_codes == [0]
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    entry = json.loads(config.read_text())[served]
    # A later command (no --token) is the signed-in user: lab-login's studies, not the demo tenant's.
    assert _listed(served, capsys) == [mine]
    # An expired token is refreshed with the refresh token before the command.
    entry["expires_at"] = 0
    config.write_text(json.dumps({served: entry}))
    assert _listed(served, capsys) == [mine]
    refreshed = json.loads(config.read_text())[served]
    assert refreshed["id_token"] != entry["id_token"] and refreshed["expires_at"] > 0
    assert refreshed["refresh_token"] == entry["refresh_token"]
    # Logout forgets the tokens and revokes the refresh token at the issuer.
    assert main(["logout", "--api-url", served]) == 0
    assert served not in json.loads(config.read_text())
    again = httpx.post(
        f"{served}/oauth2/token",
        data={
            "grant_type": "refresh_token",
            "client_id": DEV_LOGIN_CLIENT_ID,
            "refresh_token": entry["refresh_token"],
        },
    )
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_the_dev_issuer_checks_pkce_and_uses_a_code_once(served: str):
    verifier = "v" * 64
    challenge = (
        base64.urlsafe_b64encode(__import__("hashlib").sha256(verifier.encode()).digest())
        .decode()
        .rstrip("=")
    )
    query = {
        "response_type": "code",
        "client_id": DEV_LOGIN_CLIENT_ID,
        "redirect_uri": "http://127.0.0.1:9/callback",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "state": "s1",
    }
    plain = httpx.get(f"{served}/oauth2/authorize", params={**query, "code_challenge_method": "plain"})
    assert plain.status_code == 400 and "S256" in plain.json()["error_description"]
    remote = httpx.get(
        f"{served}/oauth2/authorize", params={**query, "redirect_uri": "http://evil.example/cb"}
    )
    assert remote.status_code == 400
    signed = httpx.post(f"{served}/oauth2/authorize", data={**query, "tenant": TENANT, "role": "viewer"})
    assert signed.status_code == 303
    back = parse_qs(urlsplit(signed.headers["location"]).query)
    assert back["state"] == ["s1"]
    exchange = {
        "grant_type": "authorization_code",
        "client_id": DEV_LOGIN_CLIENT_ID,
        "code": back["code"][0],
        "redirect_uri": query["redirect_uri"],
    }
    wrong = httpx.post(f"{served}/oauth2/token", data={**exchange, "code_verifier": "w" * 64})
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"
    # A wrong verifier spent the code: it is single-use whatever the outcome.
    spent = httpx.post(f"{served}/oauth2/token", data={**exchange, "code_verifier": verifier})
    assert spent.status_code == 400


def test_a_machine_client_from_the_cli_reads_and_may_not_create(
    served: str, config: Path, capsys: pytest.CaptureFixture[str]
):
    # No login: the local API's default token (the demo tenant's operator) is the admin here.
    capsys.readouterr()
    assert main(["clients", "create", "pacs", "--scope", "studies.read", "--api-url", served, "--json"]) == 0
    created = json.loads(capsys.readouterr().out)
    assert main(["token", "--tenant", "demo", "--client", "pacs", "--api-url", served]) == 0
    minted = capsys.readouterr().out.strip()
    granted = httpx.post(
        f"{served}/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(created["client"]["client_id"], created["client_secret"]),
    )
    assert granted.status_code == 200, granted.text
    for token in (minted, granted.json()["access_token"]):
        headers = {"authorization": f"Bearer {token}"}
        assert httpx.get(f"{created['api_url']}/studies", headers=headers).status_code == 200
        refused = httpx.post(
            f"{created['api_url']}/studies", json={"files": [{"name": "a.nii", "size": 9}]}, headers=headers
        )
        assert refused.status_code == 403 and "voxelpipe/studies.write" in refused.json()["detail"]
    wrong = httpx.post(
        f"{served}/oauth2/token",
        data={"grant_type": "client_credentials"},
        auth=(created["client"]["client_id"], "not-the-secret"),
    )
    assert wrong.status_code == 401
    assert main(["clients", "delete", "pacs", "--api-url", served]) == 0
