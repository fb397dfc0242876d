"""Sending scans through the local cloud and collecting what became of them (demo and tests)."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from infra.local.cloud import LocalCloud
from voxelpipe.adapters.storage import Storage
from voxelpipe.adapters.study_table import DynamoStudyStore
from voxelpipe.keys import UploadKey, derived_key, results_key
from voxelpipe.pipeline.register import register_study
from voxelpipe.records import StudyRecord
from voxelpipe.status import StudyStatus, TaskStatus

DEMO_TENANT = "demo"
# wait_for_terminal polls the studies table this often: at first, and at most.
_FIRST_POLL_S = 0.05
_LAST_POLL_S = 0.25
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def upload_name(path: Path) -> str:
    """A file name the pipeline accepts, keeping the extension (.nii.gz included)."""
    name = _UNSAFE.sub("_", path.name).lstrip(".") or "upload"
    return name if name[0].isalnum() or name[0] == "_" else f"_{name}"


@dataclass
class StudyReport:
    study_id: str
    input: str
    status: str
    reason: str | None = None
    detail: str | None = None
    results: dict[str, Any] | None = None
    artifacts: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        line: dict[str, Any] = {"study_id": self.study_id, "input": self.input, "status": self.status}
        if self.reason is not None:
            line["reason"] = self.reason
            line["detail"] = self.detail
        line["results"] = self.results
        line["artifacts"] = self.artifacts
        line["timings"] = self.timings
        return line


def submit(
    cloud: LocalCloud,
    data: bytes,
    filename: str,
    *,
    analyses: Sequence[str] = (),
    tenant: str = DEMO_TENANT,
) -> str:
    """Register a NIfTI study and upload its scan, as a client does; returns the study id.

    The upload's S3 notification starts the pipeline. An unknown analysis raises RegistrationRefused
    before anything is uploaded.
    """
    return submit_files(cloud, [(filename, data)], input_format="nifti", analyses=analyses, tenant=tenant)


def submit_files(
    cloud: LocalCloud,
    files: Sequence[tuple[str, bytes]],
    *,
    input_format: str,
    analyses: Sequence[str] = (),
    tenant: str = DEMO_TENANT,
) -> str:
    """Register a study with its files and upload each, as a client does with the presigned targets
    (each file under the object name the server chose for it); returns the study id."""
    study = register_study(
        DynamoStudyStore(),
        tenant,
        analyses=analyses,
        actor="voxelpipe-cli",
        source="local",
        files=[(name, len(data)) for name, data in files],
        input_format=input_format,
    )
    s3 = boto3.client("s3")
    for entry, (_, data) in zip(study.manifest or [], files, strict=True):
        s3.put_object(
            Bucket=cloud.bucket, Key=UploadKey(tenant, study.study_id, entry["object"]).key, Body=data
        )
    return str(study.study_id)


class UnsafeInput(ValueError):
    """An input folder holds what a demo must not follow: a symbolic link (it may lead out of it)."""


def _folder_files(folder: Path) -> list[Path]:
    """The regular files under `folder` (hidden ones left out), refusing any symbolic link in it."""
    files: list[Path] = []
    for root, directories, names in os.walk(folder, followlinks=False):
        for name in [*directories, *names]:
            entry = Path(root) / name
            if entry.is_symlink():
                link = entry.relative_to(folder)
                raise UnsafeInput(f"{link} in {folder} is a symbolic link: copy what it points to instead")
        directories[:] = sorted(d for d in directories if not d.startswith("."))
        files.extend(Path(root) / name for name in sorted(names) if not name.startswith("."))
    return files


def scan_files(path: Path) -> tuple[str, list[tuple[str, bytes]]]:
    """What to upload for a path: a folder or .zip of DICOM files, one DICOM file, or one NIfTI.

    Returns the study's format and its files (names made safe, unique within the study). A folder
    holding a symbolic link raises UnsafeInput: nothing outside the folder is ever read.
    """
    if path.is_dir():
        members = _folder_files(path)
        names = [upload_name(Path(str(p.relative_to(path)).replace("/", "_"))) for p in members]
        return "dicom", [(name, p.read_bytes()) for name, p in zip(names, members, strict=True)]
    data = path.read_bytes()
    dicom = path.suffix.lower() in (".zip", ".dcm") or data[128:132] == b"DICM"
    return ("dicom" if dicom else "nifti"), [(upload_name(path), data)]


def wait_for_terminal(
    study_ids: Sequence[str],
    *,
    timeout_s: float = 900,
    on_change: Callable[[StudyRecord, list[str]], None] | None = None,
) -> dict[str, StudyRecord | None]:
    """Poll until every study is terminal (or the timeout); the last record of each.

    In the local cloud ingest runs inside the upload's put_object, so a study with no record by
    now was never ingested (its ingest invocation failed): there is nothing to wait for.
    """
    store = DynamoStudyStore()
    deadline = time.monotonic() + timeout_s
    seen: dict[str, tuple[str, tuple[str, ...]]] = {}
    latest: dict[str, StudyRecord | None] = dict.fromkeys(study_ids)
    pause_s = _FIRST_POLL_S
    while True:
        for study_id in study_ids:
            known = latest[study_id]
            if known is not None and StudyStatus(known.status).is_terminal:
                continue  # read in an earlier round: it stays so
            record = store.get_study(study_id)
            latest[study_id] = record
            if record is None or on_change is None:
                continue
            steps = tuple(
                f"{task.step} {int(task.progress)}%"
                for task in store.tasks_of(study_id, int(record.attempt))
                if task.status == TaskStatus.RUNNING
            )
            if seen.get(study_id) != (record.status, steps):
                on_change(record, list(steps))
            seen[study_id] = (record.status, steps)
        if all(r is None or StudyStatus(r.status).is_terminal for r in latest.values()):
            return latest
        if time.monotonic() > deadline:
            return latest
        time.sleep(pause_s)
        # Each poll is a moto call in the cloud's own process, competing with the studies it waits
        # for: quick at first, then every quarter second.
        pause_s = min(_LAST_POLL_S, pause_s * 1.5)


def report(cloud: LocalCloud, study_id: str, input_name: str, output_dir: Path | None = None) -> StudyReport:
    """What became of a study: status, reason, measures, artifacts, step timings."""
    storage = Storage(cloud.bucket)
    store = DynamoStudyStore()
    record = store.get_study(study_id)
    if record is None:
        errors = [
            f"{i.function}: {i.error}"
            for i in cloud.invocations
            if i.error and study_id in json.dumps(i.event)
        ]
        return StudyReport(
            study_id, input_name, "NOT_INGESTED", "ingest_error", "; ".join(errors) or "no study was recorded"
        )
    result = StudyReport(study_id, input_name, record.status)
    if record.status == StudyStatus.REJECTED:
        result.reason, result.detail = record.reason, record.reason_detail
    elif record.status == StudyStatus.FAILED:
        error = record.error or {}
        result.reason, result.detail = error.get("type", "error"), error.get("message")
    result.timings = {
        task.step: float(task.duration_ms)
        for task in store.tasks_of(study_id, int(record.attempt))
        if task.duration_ms is not None
    }
    result.timings["total"] = round((record.updated_at - record.created_at).total_seconds() * 1000, 1)
    prefix = derived_key(study_id) + "/"
    keys = storage.list_keys(prefix)
    result.artifacts = [key.removeprefix(prefix) for key in keys]
    if record.status == StudyStatus.COMPLETED:
        document = json.loads(storage.read(results_key(study_id)))
        result.results = {name: entry["measures"] for name, entry in document["analyses"].items()}
    if output_dir is not None:
        for key in keys:
            target = output_dir / study_id / key.removeprefix(prefix)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(storage.read(key))
    return result
