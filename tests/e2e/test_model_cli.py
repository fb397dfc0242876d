"""`voxelpipe model register/list/retire` against `voxelpipe serve`: spec check, upload, retirement."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.cli.main import main
from tests.fixtures.models import make_threshold_model
from voxelpipe.inference.spec import MAX_LAMBDA_MODEL_BYTES


def test_register_a_model_then_list_it(server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    data, spec = make_threshold_model(100.0, patch_size=(16, 16, 16))
    model = tmp_path / "threshold.pt"
    model.write_bytes(data)
    spec_file = tmp_path / "SPEC.json"
    spec_file.write_text(spec.model_dump_json(indent=2))
    connection = ["--api-url", server]

    assert (
        main(["model", "register", "threshold", str(model), "--spec", str(spec_file), "--json", *connection])
        == 0
    )
    registered = json.loads(capsys.readouterr().out)
    assert registered["status"] == "READY" and registered["analysis"] == "model:threshold"
    assert (registered["kind"], registered["runtime"]) == ("segmentation", "gpu")

    assert main(["model", "list", *connection]) == 0
    assert "model:threshold" in capsys.readouterr().out

    bad = tmp_path / "BAD.json"
    bad.write_text(json.dumps({**json.loads(spec_file.read_text()), "overlap": 2, "labels": {"1": "x"}}))
    assert main(["model", "register", "other", str(model), "--spec", str(bad), *connection]) == 2
    errors = capsys.readouterr().err
    assert "overlap:" in errors and "labels:" in errors
    # runtime lambda takes files up to 256 MiB: refused before anything is uploaded (a sparse file).
    large = tmp_path / "large.pt"
    with large.open("wb") as sparse:
        sparse.truncate(MAX_LAMBDA_MODEL_BYTES + 1)
    on_lambda = tmp_path / "LAMBDA.json"
    on_lambda.write_text(json.dumps({**json.loads(spec_file.read_text()), "runtime": "lambda"}))
    assert main(["model", "register", "large", str(large), "--spec", str(on_lambda), *connection]) == 2
    assert "up to 256 MiB" in capsys.readouterr().err
    onnx_named = tmp_path / "threshold.onnx"
    onnx_named.write_bytes(data)
    assert main(["model", "register", "other", str(onnx_named), "--spec", str(spec_file), *connection]) == 2
    assert "the spec says torchscript" in capsys.readouterr().err

    # Retiring takes it out of use (its files deleted); the listing keeps it, RETIRED.
    assert main(["model", "retire", "threshold", "--version", "1", *connection]) == 0
    assert capsys.readouterr().out.strip() == "model:threshold version 1: RETIRED"
    assert main(["model", "list", "--json", *connection]) == 0
    assert [m["status"] for m in json.loads(capsys.readouterr().out)["items"]] == ["RETIRED"]
    assert main(["model", "retire", "none-such", *connection]) != 0
    assert "No such model" in capsys.readouterr().err


def test_operators_publish_deployment_wide_models_that_tenants_cannot_change(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    data, spec = make_threshold_model(100.0, patch_size=(16, 16, 16))
    model, spec_file = tmp_path / "shared.pt", tmp_path / "SPEC.json"
    model.write_bytes(data)
    spec_file.write_text(spec.model_dump_json())
    operator = ["--api-url", server]  # locally, without --token: an operator of the tenant demo
    register = ["model", "register", "shared", str(model), "--spec", str(spec_file), "--json"]
    assert main([*register, "--deployment", *operator]) == 0
    assert json.loads(capsys.readouterr().out)["scope"] == "deployment"

    # Another tenant's admin sees it, and may not register one deployment-wide nor retire it.
    assert main(["token", "--tenant", "lab-b", "--role", "admin"]) == 0
    admin = ["--api-url", server, "--token", capsys.readouterr().out.strip()]
    assert main(["model", "list", "--json", *admin]) == 0
    listed = json.loads(capsys.readouterr().out)["items"]
    assert [(m["name"], m["scope"], m["status"]) for m in listed] == [("shared", "deployment", "READY")]
    assert main([*register, "--deployment", *admin]) == 1
    assert main(["model", "retire", "shared", *admin]) == 1
    assert "deployment-wide" in capsys.readouterr().err
    # Its own model of that name is its own, beside the deployment's.
    assert main([*register, *admin]) == 0
    assert json.loads(capsys.readouterr().out)["scope"] == "tenant"

    assert main(["model", "retire", "shared", "--deployment", *operator]) == 0
    assert capsys.readouterr().out.strip() == "model:shared version 1: RETIRED"
