"""Attempts kept: when attempt n+1 of a study opens, attempt n's outputs move from derived/{id}/ to
derived/{id}/attempts/{n}/ and its outcome is recorded, so derived/{id}/ always holds the latest
attempt and every earlier one stays readable (GET /studies/{id}/attempts, `?attempt=n`).

What moves: everything under derived/{id}/ the attempt wrote — results.json (its keys rewritten to
the new place), the analyses' artifacts, report.html/pdf, the DICOM outputs results.json lists in
`dicom_outputs`. What stays: the study's inputs — input/volume.nii.gz and the de-identified copies
under dicom/ that are not outputs — which the next attempt reads again.

The record of each ended attempt is one row in the objects table (sort key `attempt#{n:04d}`), so
the study's own item does not grow with its attempts (DynamoDB's 400 KB) and deleting the study
removes them with its other rows.
"""

from __future__ import annotations

import json
from typing import Any

from voxelpipe.keys import derived_key
from voxelpipe.ports import ObjectStorage, StudyStore
from voxelpipe.records import ObjectRecord, StudyRecord

ATTEMPT_ROW_PREFIX = "attempt#"
ATTEMPTS_FOLDER = "attempts"
RESULTS_NAME = "results.json"
# The study's inputs under derived/{id}/: they stay for the next attempt.
_INPUT_FOLDER = "input/"
_DICOM_FOLDER = "dicom/"


def attempt_prefix(study_id: str, attempt: int) -> str:
    """Where an earlier attempt's outputs lie: derived/{id}/attempts/{n}/."""
    return derived_key(study_id, ATTEMPTS_FOLDER, str(attempt)) + "/"


def archived_results_key(study_id: str, attempt: int) -> str:
    return attempt_prefix(study_id, attempt) + RESULTS_NAME


def is_archived(key: str, study_id: str) -> bool:
    """A key of an earlier attempt (not of the latest, at the top of derived/{id}/)."""
    return key.startswith(derived_key(study_id, ATTEMPTS_FOLDER) + "/")


def _row_key(attempt: int) -> str:
    return f"{ATTEMPT_ROW_PREFIX}{attempt:04d}"


def attempt_record(study: StudyRecord, store: StudyStore) -> dict[str, Any]:
    """What an attempt was: the study's current attempt as the record holds it (its results at the
    top of derived/, or, once archived, under attempts/{n}/)."""
    attempt = int(study.attempt)
    tasks = store.tasks_of(study.study_id, attempt)
    started = min((task.started_at for task in tasks), default=study.created_at if attempt == 1 else None)
    return {
        "attempt": attempt,
        "status": study.status,
        "analyses": list(study.analyses),
        "parameters": study.parameters or {},
        "priority": study.priority,
        "summary": study.summary,
        "results_key": study.results_key,
        "reason": study.reason,
        "reason_detail": study.reason_detail,
        "error": study.error,
        "started_at": started.isoformat() if started is not None else None,
        "ended_at": study.updated_at.isoformat(),
    }


def record_ended_attempt(store: StudyStore, study: StudyRecord) -> bool:
    """Keep the record of the study's current attempt, which has ended (the caller opens the next
    one right after): written once, a repeat changes nothing. Its results_key names where its
    results.json will lie once archived."""
    record = attempt_record(study, store)
    if study.results_key is not None:
        record["results_key"] = archived_results_key(study.study_id, int(study.attempt))
    return store.record_object(
        ObjectRecord(
            study.study_id,
            _row_key(int(study.attempt)),
            source=attempt_prefix(study.study_id, int(study.attempt)),
            summary=record,
        )
    )


def ended_attempts(store: StudyStore, study_id: str) -> list[dict[str, Any]]:
    """The records of the study's earlier attempts, in order."""
    rows = store.objects_of(study_id, ATTEMPT_ROW_PREFIX)
    return sorted((dict(row.summary or {}) for row in rows), key=lambda record: int(record["attempt"]))


def _rewritten(value: Any, moved: dict[str, str]) -> Any:
    """`value` (results.json, or part of it) with every key that moved replaced by its new key."""
    if isinstance(value, str):
        return moved.get(value, value)
    if isinstance(value, list):
        return [_rewritten(item, moved) for item in value]
    if isinstance(value, dict):
        return {name: _rewritten(item, moved) for name, item in value.items()}
    return value


def _dicom_outputs(results: dict[str, Any] | None, top: str, archive: str) -> set[str]:
    """The DICOM outputs results.json lists, by their key at the top (an archived copy names them
    under attempts/{n}/)."""
    keys = {str(entry.get("key")) for entry in (results or {}).get("dicom_outputs") or [] if entry.get("key")}
    return {top + key.removeprefix(archive) if key.startswith(archive) else key for key in keys}


def archive_attempt(storage: ObjectStorage, study_id: str, attempt: int) -> int:
    """Move attempt `attempt`'s outputs from derived/{id}/ to derived/{id}/attempts/{n}/; how many
    objects moved.

    Safe to repeat and to resume after a crash: each object is moved once (what is already moved is
    no longer at the top), and results.json last — rewritten where it is, then moved —, so a
    second run reads it from wherever it is and finishes the move. A
    results.json at the top that belongs to another attempt (a later one) is left alone, and so is
    everything else then.
    """
    top = derived_key(study_id) + "/"
    archive = attempt_prefix(study_id, attempt)
    top_results, archived_results = top + RESULTS_NAME, archive + RESULTS_NAME
    present = storage.list_keys(top)
    results: dict[str, Any] | None = None
    if top_results in present:
        results = json.loads(storage.read(top_results))
        if int(results.get("attempt", attempt)) != attempt:
            return 0
    elif archived_results in present:
        results = json.loads(storage.read(archived_results))
    outputs = _dicom_outputs(results, top, archive)
    moved: dict[str, str] = {}
    for key in present:
        name = key.removeprefix(top)
        if (
            key == top_results
            or is_archived(key, study_id)
            or name.startswith(_INPUT_FOLDER)
            or (name.startswith(_DICOM_FOLDER) and key not in outputs)
        ):
            continue
        storage.move(key, archive + name)
        moved[key] = archive + name
    if results is not None and top_results in present:
        # Every key the attempt wrote, moved now or by an earlier run, gets its new place.
        everything = {top + key.removeprefix(archive): key for key in storage.list_keys(archive)}
        document = _rewritten(results, everything | moved | {top_results: archived_results})
        # Rewritten in place, then moved: a crash between leaves it at the top, for the next run.
        storage.write(top_results, json.dumps(document, indent=2).encode(), "application/json")
        storage.move(top_results, archived_results)
        moved[top_results] = archived_results
    return len(moved)
