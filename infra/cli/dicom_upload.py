"""`voxelpipe upload` of DICOM: a folder (searched recursively), a .zip, or .dcm files, as one exam.

The files are declared under names the CLI makes up (`00000.dcm`, ...): an uploader's file and
folder names (often a patient's name or number) never leave this machine. After the upload is
complete the API says what the rules decided for each series of the exam; this prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voxelpipe.dicom import looks_like_dicom

# Enough of a file to tell DICOM from anything else (voxelpipe.dicom.looks_like_dicom).
SNIFF_BYTES = 4096
# How long to wait after completion for the rules' decisions to be recorded.
DECISIONS_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class DicomUpload:
    files: list[Path]  # what to send, in order
    names: list[str]  # the name each is declared under (none of the uploader's)
    skipped: int  # files of the folder that are not DICOM


def is_dicom_input(paths: list[Path]) -> bool:
    """Whether `voxelpipe upload` was given DICOM: a folder, a .zip, or DICOM files."""
    if any(path.is_dir() for path in paths):
        return True
    if len(paths) == 1 and paths[0].suffix.lower() == ".zip":
        return True
    return all(path.is_file() and _sniff(path) for path in paths)


def _sniff(path: Path) -> bool:
    with path.open("rb") as source:
        return looks_like_dicom(source.read(SNIFF_BYTES))


def _walk(folder: Path) -> list[Path]:
    """The regular files under `folder`, hidden ones and symbolic links left out."""
    found: list[Path] = []
    for root, directories, names in os.walk(folder, followlinks=False):
        directories[:] = sorted(d for d in directories if not d.startswith("."))
        for name in sorted(names):
            path = Path(root) / name
            if not name.startswith(".") and path.is_file() and not path.is_symlink():
                found.append(path)
    return found


def collect(paths: list[Path]) -> DicomUpload:
    """The DICOM files of folders (recursively; files that are not DICOM skipped and counted), a
    .zip (sent whole: the server opens it), or DICOM files given one by one."""
    if len(paths) == 1 and paths[0].is_file() and paths[0].suffix.lower() == ".zip":
        return DicomUpload([paths[0]], ["00000.zip"], 0)
    files: list[Path] = []
    skipped = 0
    for path in paths:
        for candidate in _walk(path) if path.is_dir() else [path]:
            if _sniff(candidate):
                files.append(candidate)
            else:
                skipped += 1
    return DicomUpload(files, [f"{index:05d}.dcm" for index in range(len(files))], skipped)


def series_decisions(view: dict[str, Any]) -> list[dict[str, Any]]:
    """What the rules decided for each series of the exam (GET /studies/{id} `series`)."""
    decisions = []
    for series in view.get("series") or []:
        decision = series.get("decision") or {}
        tags = series.get("tags") or {}
        decisions.append(
            {
                "series_instance_uid": series.get("series_instance_uid"),
                "series_number": series.get("series_number"),
                "modality": series.get("modality"),
                "class": series.get("series_class") or tags.get("SeriesClass"),
                "instances": series.get("instances"),
                "selected": bool(decision.get("selected")),
                "action": decision.get("action"),
                "rule": decision.get("rule"),
                "analyses": decision.get("analyses"),
                "explanation": decision.get("explanation"),
                "study_id": series.get("study_id"),
            }
        )
    return decisions


def describe(study_id: str, view: dict[str, Any], decisions: list[dict[str, Any]]) -> str:
    lines = [f"exam {study_id}: {view['status']}"]
    if view.get("reason"):
        lines.append(f"  reason: {view['reason']}: {view.get('reason_detail')}")
    if not decisions:
        lines.append("  no series decisions recorded (yet): see `voxelpipe status " + study_id + "`")
    for d in decisions:
        number = d["series_number"] if d["series_number"] is not None else "?"
        head = f"  series {number} {d['modality'] or '?'} {d['class'] or 'unclassified'}"
        if d["selected"]:
            analyses = ",".join(d["analyses"] or [])
            lines.append(f"{head}: selected by rule {d['rule']} -> study {d['study_id']} ({analyses})")
        else:
            lines.append(f"{head}: not selected (rule {d['rule']})")
        explanation = d["explanation"] or []
        for line in [explanation] if isinstance(explanation, str) else explanation:
            lines.append(f"    {line}")
    return "\n".join(lines)


def _decided(client: Any, study_id: str, timeout_s: float) -> dict[str, Any]:
    """The exam's view once its series are decided (or it ended, or the timeout)."""
    deadline = time.monotonic() + timeout_s
    while True:
        view: dict[str, Any] = client.study(study_id)
        if view.get("series") or view["status"] not in ("AWAITING_UPLOAD", "VALIDATING"):
            return view
        if time.monotonic() > deadline:
            return view
        time.sleep(0.5)


def upload_dicom(args: argparse.Namespace, client: Any, fields: dict[str, Any]) -> int:
    from tqdm import tqdm

    upload = collect(args.files)
    if not upload.files:
        print(
            f"voxelpipe upload: no DICOM file in {', '.join(map(str, args.files))}"
            + (f" ({upload.skipped} other files skipped)" if upload.skipped else ""),
            file=sys.stderr,
        )
        return 2
    created = client.create_study(upload.files, upload.names, format="dicom", **fields)
    study_id = created["study_id"]
    targets = {target["file"]: target for target in created["uploads"]}
    total = sum(path.stat().st_size for path in upload.files)
    skipped = f", {upload.skipped} files that are not DICOM skipped" if upload.skipped else ""
    print(f"uploading {len(upload.files)} files ({total} bytes) as exam {study_id}{skipped}", file=sys.stderr)
    with tqdm(total=total, unit="B", unit_scale=True, desc="uploading", file=sys.stderr) as bar:
        for done, (path, name) in enumerate(zip(upload.files, upload.names, strict=True), start=1):
            client.upload(targets[name], path, progress=bar.update, name=name)
            bar.set_postfix_str(f"{done}/{len(upload.files)} files")
    client.complete(study_id)
    view = _decided(client, study_id, DECISIONS_TIMEOUT_S)
    if args.wait:
        for decision in series_decisions(view):
            if decision["selected"] and decision["study_id"]:
                client.wait(decision["study_id"])
        view = client.study(study_id)
    decisions = series_decisions(view)
    result = {
        "study_id": study_id,
        "status": view["status"],
        "reason": view.get("reason"),
        "uploaded": {"files": len(upload.files), "bytes": total},
        "skipped": upload.skipped,
        "series": decisions,
    }
    print(json.dumps(result, indent=2) if args.json else describe(study_id, view, decisions))
    return 0
