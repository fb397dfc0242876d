"""Routing rule sets through the API against the local cloud: save, list, read, delete, try them
(given tags, an uploaded exam's series); admins only, each tenant its own, every change audited."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from infra.cli.client import ApiError, Client
from infra.cli.main import _parser
from infra.cli.rules import run_rules
from infra.local.cloud import LocalCloud
from infra.local.serve import acting_as
from voxelpipe import tracking
from voxelpipe.adapters.rule_sets import DynamoRuleSets
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.api.app import create_app
from voxelpipe.api.auth import Role, mint_dev_token
from voxelpipe.function_specs import API, INGEST
from voxelpipe.keys import new_study_id, rules_audit_key
from voxelpipe.routing import DEFAULT_RULE_SET
from voxelpipe.status import StudyStatus
from voxelpipe.wiring import EnvVar

STORE = DynamoStudyStore()

T1_TAGS: dict[str, Any] = {
    "Modality": "MR",
    "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"],
    "ScanningSequence": ["GR", "IR"],
    "MRAcquisitionType": "3D",
    "RepetitionTime": 2300.0,
    "EchoTime": 2.98,
    "InversionTime": 900.0,
}
LOCALIZER_TAGS: dict[str, Any] = {"Modality": "MR", "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]}

HIGH_PRIORITY_T1 = {
    "description": "3D T1s at high priority with tissue segmentation; nothing else",
    "quiet_period_seconds": 120,
    "rules": [
        {
            "name": "t1-fast",
            "condition": {
                "all": [
                    {"field": "SeriesClass", "equals": "T1"},
                    {"field": "SeriesInstances", "gt": 100},
                ]
            },
            "action": {
                "kind": "process",
                "analyses": ["qc", "tissue-seg"],
                "priority": "high",
                "destinations": ["pacs"],
            },
        },
        {"name": "rest", "condition": {"all": []}, "action": {"kind": "discard"}},
    ],
}


@pytest.fixture
def api(cloud: LocalCloud, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv(EnvVar.AUTH_MODE, "dev")
    with TestClient(acting_as(cloud, API.name, create_app())) as client:
        yield client


def auth(role: Role = Role.ADMIN, tenant: str = "lab-a") -> dict[str, str]:
    return {"authorization": f"Bearer {mint_dev_token(tenant, role)}"}


def test_admins_save_list_read_delete_and_try_rule_sets(api: TestClient, cloud: LocalCloud):
    # None saved: the default is active.
    assert api.get("/rules", headers=auth()).json() == {"active_version": None, "items": []}
    current = api.get("/rules/current", headers=auth()).json()
    assert current["version"] is None and current["rule_set"] == DEFAULT_RULE_SET.as_json()

    saved = api.post("/rules", json=HIGH_PRIORITY_T1, headers=auth())
    assert saved.status_code == 201 and saved.json() == {"version": 1, "active": True}, saved.text
    second = copy.deepcopy(HIGH_PRIORITY_T1)
    second["rules"][0]["action"]["priority"] = "normal"
    assert api.post("/rules", json=second, headers=auth()).json()["version"] == 2

    listed = api.get("/rules", headers=auth()).json()
    assert listed["active_version"] == 2
    assert [(i["version"], i["active"], i["rules"]) for i in listed["items"]] == [
        (2, True, ["t1-fast", "rest"]),
        (1, False, ["t1-fast", "rest"]),
    ]
    one = api.get("/rules/1", headers=auth()).json()
    assert one["version"] == 1 and not one["active"] and one["created_by"] == "dev-admin"
    assert one["rule_set"]["rules"][0]["action"]["priority"] == "high"
    assert one["rule_set"]["quiet_period_seconds"] == 120
    assert api.get("/rules/current", headers=auth()).json()["version"] == 2

    # Trying: the active one by default, or one given; each decision explained.
    series = [{**T1_TAGS, "SeriesInstances": 176}, {**LOCALIZER_TAGS, "SeriesInstances": 3}]
    tried = api.post("/rules/test", json={"series": series}, headers=auth()).json()
    assert tried["rule_set"] == "version 2"
    t1, localizer = (s["decision"] for s in tried["series"])
    assert (t1["selected"], t1["rule"], t1["analyses"], t1["priority"]) == (
        True,
        "t1-fast",
        ["qc", "tissue-seg"],
        "normal",
    )
    assert t1["destinations"] == ["pacs"] and t1["tags"]["SeriesClass"] == "T1"
    assert (localizer["selected"], localizer["action"], localizer["rule"]) == (False, "discard", "rest")
    assert localizer["explanation"][1] == (
        "t1-fast: SeriesClass equals T1 -> false (is LOCALIZER); "
        "SeriesInstances > 100 -> false (is 3) => no match"
    )
    given = api.post(
        "/rules/test", json={"series": series, "rule_set": DEFAULT_RULE_SET.as_json()}, headers=auth()
    ).json()
    assert given["rule_set"] == "given"
    assert [s["decision"]["rule"] for s in given["series"]] == ["3d-t1", "localizers-and-derived"]

    # Deleting the active version makes the newest one left active; deleting all, the default.
    deleted = api.delete("/rules/2", headers=auth())
    assert (
        deleted.status_code == 200
        and deleted.json()["deleted"]
        and deleted.json()["deleted_by"] == "dev-admin"
    )
    assert api.get("/rules", headers=auth()).json()["active_version"] == 1
    assert api.delete("/rules/1", headers=auth()).status_code == 200
    assert api.delete("/rules/1", headers=auth()).json()["deleted"]  # again: no change, no audit row
    assert api.get("/rules/current", headers=auth()).json()["version"] is None
    assert api.post("/rules/test", json={"series": series}, headers=auth()).json()["rule_set"] == "default"
    missing = api.delete("/rules/9", headers=auth())
    assert missing.status_code == 404 and missing.json()["code"] == "rule_set_not_found"
    assert api.get("/rules/0", headers=auth()).status_code == 422

    # Every change was audited under the tenant's rules trail.
    trail = STORE.audit_trail(rules_audit_key("lab-a"))
    assert [(row.action, row.detail["version"], row.actor) for row in trail] == [
        ("rules_saved", 1, "dev-admin"),
        ("rules_saved", 2, "dev-admin"),
        ("rules_deleted", 2, "dev-admin"),
        ("rules_deleted", 1, "dev-admin"),
    ]
    assert trail[0].detail["rules"] == ["t1-fast", "rest"] and trail[2].detail["active"] == 1

    # Admins only; another tenant sees none of it.
    for role in (Role.UPLOADER, Role.VIEWER):
        for method, path in (
            ("GET", "/rules"),
            ("GET", "/rules/1"),
            ("POST", "/rules"),
            ("DELETE", "/rules/1"),
        ):
            refused = api.request(method, path, headers=auth(role), json=HIGH_PRIORITY_T1)
            assert (refused.status_code, refused.json()["code"]) == (403, "forbidden"), (method, path, role)
    other = auth(tenant="lab-b")
    assert api.get("/rules", headers=other).json() == {"active_version": None, "items": []}
    assert api.get("/rules/1", headers=other).status_code == 404

    # The ingest function may read a tenant's active rule set (infra/access.py: read-only for it).
    with cloud.acting_as(INGEST.name):
        assert DynamoRuleSets().current("lab-a").version is None


def test_invalid_rule_sets_are_422_naming_the_field_and_exams_are_tried_from_their_series(api: TestClient):
    bad = copy.deepcopy(HIGH_PRIORITY_T1)
    bad["rules"][0]["condition"]["all"][1] = {"field": "PatientName", "regex": "(unclosed"}
    refused = api.post("/rules", json=bad, headers=auth())
    assert refused.status_code == 422 and refused.headers["content-type"] == "application/problem+json"
    fields = {error["field"] for error in refused.json()["errors"]}
    assert fields == {"rules.0.condition.all.1.field", "rules.0.condition.all.1.regex"}, refused.text
    assert "ExamSeriesCount" in refused.json()["errors"][0]["message"]  # the keywords allowed
    unknown = copy.deepcopy(HIGH_PRIORITY_T1)
    unknown["rules"][0]["action"]["analyses"] = ["telepathy"]
    problem = api.post("/rules", json=unknown, headers=auth()).json()
    assert problem["errors"][0]["field"] == "rules.0.action.analyses"
    assert api.get("/rules", headers=auth()).json()["items"] == []  # nothing was saved
    neither = api.post("/rules/test", json={}, headers=auth())
    assert neither.status_code == 422

    # An exam's recorded series (what ingest stores on the study) are decided again.
    study_id = new_study_id()
    tracking.create_study(
        STORE,
        study_id,
        "lab-a",
        analyses=["qc"],
        priority="normal",
        status=StudyStatus.QUEUED,
        input_format="dicom",
    )
    exam = {
        "study_instance_uid": "2.25.1",
        "series": [
            {
                "series_instance_uid": "2.25.11",
                "series_number": 3,
                "modality": "MR",
                "instances": 176,
                "tags": T1_TAGS,
                "decision": {},
                "study_id": study_id,
            },
            {
                "series_instance_uid": "2.25.12",
                "series_number": 1,
                "modality": "MR",
                "instances": 3,
                "tags": LOCALIZER_TAGS,
                "decision": {},
                "study_id": None,
            },
        ],
    }
    STORE.set_study_fields(study_id, {"dicom": exam})
    tried = api.post("/rules/test", json={"study_id": study_id, "rule_set": HIGH_PRIORITY_T1}, headers=auth())
    assert tried.status_code == 200, tried.text
    rows = tried.json()["series"]
    assert [(r["series_instance_uid"], r["series_number"], r["decision"]["rule"]) for r in rows] == [
        ("2.25.11", 3, "t1-fast"),
        ("2.25.12", 1, "rest"),
    ]
    assert rows[0]["study_id"] == study_id and rows[0]["decision"]["tags"]["SeriesInstances"] == 176
    # Another tenant's exam is a 404; a study with no series recorded, a 409.
    foreign = api.post("/rules/test", json={"study_id": study_id}, headers=auth(tenant="lab-b"))
    assert (foreign.status_code, foreign.json()["code"]) == (404, "study_not_found")
    plain = new_study_id()
    tracking.create_study(STORE, plain, "lab-a", analyses=["qc"], priority="normal")
    none = api.post("/rules/test", json={"study_id": plain}, headers=auth())
    assert (none.status_code, none.json()["code"]) == (409, "no_exam_series")


def test_the_rules_cli_applies_lists_shows_tests_and_deletes(
    api: TestClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    # The CLI's own parser and client, its HTTP calls answered by the app (no server to start).
    client = Client.__new__(Client)
    client.token, client.http = None, api
    api.headers.update(auth())

    def cli(*argv: str) -> tuple[int, str, str]:
        code = run_rules(_parser().parse_args(["rules", *argv]), client)
        out, err = capsys.readouterr()
        return code, out, err

    rule_file, tags_file = tmp_path / "rules.json", tmp_path / "tags.json"
    rule_file.write_text(json.dumps(HIGH_PRIORITY_T1))
    tags_file.write_text(
        json.dumps([{**T1_TAGS, "SeriesInstances": 176}, {**LOCALIZER_TAGS, "SeriesInstances": 3}])
    )
    assert cli("apply", str(rule_file)) == (0, "saved version 1: active\n", "")
    code, out, _ = cli("list")
    assert code == 0 and out.startswith("active: version 1\n") and "rules: t1-fast, rest" in out
    code, out, _ = cli("show", "--json")
    assert code == 0 and json.loads(out)["rule_set"]["rules"][0]["name"] == "t1-fast"
    code, out, _ = cli("test", "--tags", str(tags_file))
    assert code == 0 and out.splitlines()[:2] == [
        "rule set: version 1",
        "series #1: selected (process by t1-fast, analyses qc, tissue-seg)",
    ]
    assert "series #2: not selected (discard by rest)" in out and "    t1-fast: SeriesClass equals T1" in out
    assert cli("delete", "1") == (0, "version 1 deleted\n", "")
    code, out, _ = cli("list")
    assert out.startswith("active: default rule set\n") and "deleted" in out
    assert cli("test", "--tags", str(tmp_path / "none.json"))[0] == 2
    with pytest.raises(ApiError, match="validation_failed"):  # `voxelpipe` reports it, exit status 1
        rule_file.write_text(json.dumps({"rules": [{"name": "x"}]}))
        cli("apply", str(rule_file))
