"""`voxelpipe demo`: the command-line contract that users and later tools rely on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from infra.cli.main import main
from tests.fixtures.bad_nifti import make_bad_nifti, make_good_nifti

VOXELPIPE = Path(sys.executable).parent / "voxelpipe"
CONTRACT = {"study_id", "input", "status", "results", "artifacts", "timings"}


def test_demo_json_prints_one_line_per_input_and_writes_artifacts(tmp_path: Path):
    good_name, good = make_good_nifti()
    bad = make_bad_nifti("not_an_image")
    (tmp_path / good_name).write_bytes(good)
    (tmp_path / "notes.nii").write_bytes(bad.content)
    out = tmp_path / "out"
    run = subprocess.run(
        [
            str(VOXELPIPE),
            "demo",
            "--json",
            "--input",
            str(tmp_path / good_name),
            "--input",
            str(tmp_path / "notes.nii"),
            "--output-dir",
            str(out),
            # qc alone: this is the JSON lines and artifacts contract; the default chain is the
            # bundled scan's test below.
            "--analyses",
            "qc",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(lines) == 2, run.stdout
    completed, rejected = lines
    assert set(completed) >= CONTRACT and "reason" not in completed
    assert completed["status"] == "COMPLETED" and completed["input"] == good_name
    assert set(completed["results"]) == {"qc"}
    assert completed["timings"]["total"] > 0 and "prepare" in completed["timings"]
    assert rejected["status"] == "REJECTED" and rejected["reason"] == "not_an_image" and rejected["detail"]
    assert rejected["results"] is None
    study_dir = out / completed["study_id"]
    assert json.loads((study_dir / "results.json").read_text())["study_id"] == completed["study_id"]
    assert sorted(str(p.relative_to(study_dir)) for p in study_dir.rglob("*") if p.is_file()) == sorted(
        completed["artifacts"]
    )
    assert "uploaded" in run.stderr  # progress goes to stderr, stdout stays JSON


def test_demo_without_input_runs_the_bundled_scan(capsys):
    assert main(["demo", "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    report = json.loads(line)
    assert report["status"] == "COMPLETED"
    assert report["input"] == "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
    # the demo defaults, and what regional requires
    assert set(report["results"]) == {"qc", "tissue-seg", "volumetrics", "registration", "regional"}
    assert report["results"]["qc"]["header"]["dimensions"] == [197, 233, 189]
    # The demo's default chain ends with tissue volumes (mL) from the segmentation.
    volumes = report["results"]["volumetrics"]
    assert 900 < volumes["gm_ml"] < 1500 and 400 < volumes["wm_ml"] < 900 and 0.8 < volumes["bpf"] <= 1
    assert "tissue-seg/labels.nii.gz" in report["artifacts"]
    # ... and regional volumes from the bundled atlas, which the result names with its licence.
    regional = report["results"]["regional"]
    for side in ("left", "right"):
        assert 3.0 < regional["regions"][f"hippocampus_{side}"]["volume_ml"] < 6.0
    assert abs(regional["structures"]["hippocampus"]["asymmetry"]) < 0.15
    assert regional["reliable"] is True, regional["warnings"]
    assert regional["atlas"]["atlas"] == "neuromorphometrics" and "CC BY-NC" in regional["atlas"]["licence"]
    assert regional["template"]["template"] == "MNI152NLin2009aSym"
    assert report["results"]["registration"]["overlap_with_segmentation"]["gm_dice"] > 0.8
    assert {"regional/regions.nii.gz", "regional/regions.csv", "registration/affine.tfm"} <= set(
        report["artifacts"]
    )


def test_demo_usage_errors_exit_2(tmp_path: Path, capsys):
    assert main(["demo", "--input", str(tmp_path / "missing.nii")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["demo", "--analyses", "qc,nope"]) == 2
    assert "unknown analyses: nope" in capsys.readouterr().err


def test_demo_refuses_a_folder_with_a_symbolic_link_leading_out_of_it(tmp_path: Path, capsys):
    outside = tmp_path / "outside.txt"
    outside.write_text("someone else's file")
    for name, target in (("series", outside), ("nested", tmp_path)):  # to a file, and to a folder
        folder = tmp_path / name
        (folder / "inner").mkdir(parents=True)
        (folder / "inner" / "link").symlink_to(target)
        assert main(["demo", "--input", str(folder)]) == 2
        err = capsys.readouterr().err
        assert "symbolic link" in err and "inner/link" in err
