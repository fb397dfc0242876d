"""An exam at completion: its instances split by series, each series classified and routed by the
tenant's rule set, and each decision recorded on the exam (docs/dicom.md).

The exam's own study processes the first selected series; every further selected series gets a
study of its own (`routed`, linked by `exam_id`) whose uploads are server-side copies of the
series' objects, so it goes through the same ingest, checks and Prepare as any upload. Decisions
for series seen in an earlier attempt stand (their originals are gone by then): only new series are
routed, with the whole exam in view.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from voxelpipe import tracking
from voxelpipe.dicom import InstanceSummary, check_series, read_instance_header, read_series_zip
from voxelpipe.keys import UploadKey, parse_upload_key, upload_prefix
from voxelpipe.limits import Limits
from voxelpipe.pipeline.lifecycle import (
    INGEST_ACTOR,
    ExamAdapters,
    IngestOutcome,
    check_analyses,
    quarantine_uploads,
    queue_study,
    reject_study,
    uid_map,
)
from voxelpipe.pipeline.receive import RECEIVED_PREFIX, TransferSource
from voxelpipe.ports import ObjectStorage, RuleSets, StudyStore, TransferStore
from voxelpipe.records import ObjectRecord, StudyRecord
from voxelpipe.rejections import ReasonCode, Rejected
from voxelpipe.routing import read_routing_tags, route_exam
from voxelpipe.status import StudyStatus

INSTANCE_PREFIX = "instance#"
_TUPLE_FIELDS = ("image_position", "image_orientation", "pixel_spacing")


def routed_study_id(exam_id: str, series_uid: str) -> str:
    """The study a further selected series of an exam gets: the same on every try."""
    return hashlib.sha256(f"{exam_id}\0{series_uid}".encode()).hexdigest()[:32]


def instances_by_series(records: Sequence[ObjectRecord]) -> dict[str, list[ObjectRecord]]:
    """Instance rows grouped by their (pseudonymous) series, each in instance-number order."""
    groups: dict[str, list[ObjectRecord]] = defaultdict(list)
    for record in records:
        if record.summary:
            groups[record.summary["series_instance_uid"]].append(record)
    for rows in groups.values():
        rows.sort(key=lambda r: (r.summary["instance_number"] is None, r.summary["instance_number"] or 0))
    return dict(groups)


def _routing_tags(
    study: StudyRecord, first: ObjectRecord, present: set[str], storage: ObjectStorage, limits: Limits
) -> dict[str, Any]:
    """The routing tags of a series, from its first instance's original object (descriptions
    included: they are read here, at the boundary, and never stored)."""
    if first.source not in present:
        return {}  # gone (quarantined by an earlier attempt): the series is routed on what is known
    data = storage.read(first.source)
    if not first.source.lower().endswith(".zip"):
        return read_routing_tags(data)
    uids = uid_map(study)
    wanted = first.object_key.removeprefix(INSTANCE_PREFIX)
    for _, member in read_series_zip(data, limits):
        try:
            if uids(read_instance_header(member).sop_instance_uid) == wanted:
                return read_routing_tags(member)
        except Rejected:
            continue
    return {}


def _series_entry(
    series_uid: str, rows: list[ObjectRecord], decision: Mapping[str, Any], tags: Mapping[str, Any]
) -> dict[str, Any]:
    first = rows[0].summary
    return {
        "series_instance_uid": series_uid,
        "series_number": tags.get("SeriesNumber"),
        "modality": first["modality"],
        "series_class": tags.get("SeriesClass"),
        "instances": len(rows),
        "tags": dict(tags),
        "decision": dict(decision),
        "study_id": None,
    }


def _order(entry: Mapping[str, Any]) -> tuple[bool, float, str]:
    number = entry["series_number"]
    return (not isinstance(number, (int, float)), float(number or 0), entry["series_instance_uid"])


def route_exam_study(
    study: StudyRecord,
    records: Sequence[ObjectRecord],
    store: StudyStore,
    storage: ObjectStorage,
    transfers: TransferStore,
    rule_sets: RuleSets,
    limits: Limits,
) -> str:
    """Route the exam's series and record the decisions; the series the exam's own study
    processes. Further selected series get (or feed) their routed studies. Rejected
    `no_series_selected` when the rules select none, `mixed_series` for several DICOM studies."""
    groups = instances_by_series(records)
    studies = {row.summary["study_instance_uid"] for rows in groups.values() for row in rows}
    if len(studies) > 1:
        raise Rejected(
            ReasonCode.MIXED_SERIES,
            f"The images belong to {len(studies)} different studies; upload one exam at a time.",
        )
    known: dict[str, dict[str, Any]] = {
        entry["series_instance_uid"]: entry for entry in (study.dicom or {}).get("series", [])
    }
    present = set(storage.list_keys(upload_prefix(study.tenant, study.study_id)))
    active = rule_sets.current(study.tenant)
    order = sorted(groups)
    tag_sets = []
    for uid in order:
        if uid in known:
            tags = dict(known[uid]["tags"])
        else:
            tags = _routing_tags(study, groups[uid][0], present, storage, limits)
        tags["SeriesInstances"] = len(groups[uid])
        tag_sets.append(tags)
    decisions = route_exam(active.rule_set, tag_sets)
    entries: list[dict[str, Any]] = []
    for uid, decision in zip(order, decisions, strict=True):
        if uid in known:  # decided before: the decision (and its study) stand; only the count moves
            entries.append({**known[uid], "instances": len(groups[uid])})
        else:
            entries.append(_series_entry(uid, groups[uid], decision.as_json(), decision.tags))
    entries.sort(key=_order)
    selected = [entry for entry in entries if entry["decision"]["selected"]]
    if not selected:
        raise Rejected(ReasonCode.NO_SERIES_SELECTED, _none_selected(entries, active.version))
    primary = study.series_uid or selected[0]["series_instance_uid"]
    for entry in selected:
        if entry["series_instance_uid"] == primary:
            entry["study_id"] = study.study_id
        else:
            rows = groups[entry["series_instance_uid"]]
            entry["study_id"] = _route_series(study, entry, rows, present, store, storage, transfers)
    own = next(entry for entry in entries if entry["series_instance_uid"] == primary)
    decision = own["decision"]
    changes: dict[str, Any] = {
        "series_uid": primary,
        "dicom": {
            "study_instance_uid": next(iter(studies)),
            "rule_set": {"version": active.version},
            "series": entries,
        },
    }
    if decision.get("analyses"):
        changes["analyses"] = decision["analyses"]
    if decision.get("parameters"):
        changes["parameters"] = decision["parameters"]
    if decision.get("priority"):
        changes["priority"] = decision["priority"]
    store.set_study_fields(study.study_id, changes)
    tracking.audit(
        store,
        study.study_id,
        "routed",
        actor=INGEST_ACTOR,
        source=upload_prefix(study.tenant, study.study_id),
        detail={
            "rule_set_version": active.version,
            "series": [
                {
                    "series_instance_uid": e["series_instance_uid"],
                    "action": e["decision"]["action"],
                    "rule": e["decision"]["rule"],
                    "study_id": e["study_id"],
                }
                for e in entries
            ],
        },
    )
    return primary


def _none_selected(entries: Sequence[Mapping[str, Any]], version: int | None) -> str:
    rules = "the default rule set" if version is None else f"rule set version {version}"
    parts = []
    for entry in entries:
        decision = entry["decision"]
        number = entry["series_number"] if entry["series_number"] is not None else "?"
        what = f"series {number} ({entry['modality']}, {entry['series_class']})"
        why = (
            "no rule matched" if decision["action"] != "discard" else f"discarded by rule {decision['rule']}"
        )
        parts.append(f"{what}: {why}")
    return f"No series of the exam was selected by {rules}: " + "; ".join(parts) + "."


def _route_series(
    exam: StudyRecord,
    entry: Mapping[str, Any],
    rows: Sequence[ObjectRecord],
    present: set[str],
    store: StudyStore,
    storage: ObjectStorage,
    transfers: TransferStore,
) -> str:
    """Give a further selected series its study (created once) and copy it the series' objects
    that are here now: the routed study's ingest takes them as uploads."""
    series_uid = entry["series_instance_uid"]
    study_id = routed_study_id(exam.study_id, series_uid)
    decision = entry["decision"]
    tracking.create_study(
        store,
        study_id,
        exam.tenant,
        analyses=decision.get("analyses") or list(exam.analyses),
        priority=decision.get("priority") or exam.priority,
        subject=exam.subject,
        webhook_url=exam.webhook_url,
        input_format="dicom",
        uid_key=exam.uid_key,
        parameters=decision.get("parameters") or exam.parameters,
        source=TransferSource.ROUTED.value,
        exam_id=exam.study_id,
        series_uid=series_uid,
        destinations=exam.destinations,  # the exam's own request; its decision's are read at delivery
    )
    keys = sorted({row.source for row in rows} & present)
    copies = []
    for key in keys:
        destination = UploadKey(exam.tenant, study_id, parse_upload_key(key).filename).key
        if store.record_object(ObjectRecord(study_id, RECEIVED_PREFIX + destination, source=key)):
            copies.append((key, destination))
    # Counted and ended before the copies: the routed study's ingest then completes it with the
    # last one (nobody else will end this transfer).
    at = tracking.now()
    for _ in copies:
        store.count_received(study_id)
    if copies:
        transfers.note_received(study_id, exam.tenant, TransferSource.ROUTED.value, at=at, opened=True)
        transfers.note_ended(study_id, at)
    for key, destination in copies:
        storage.copy(key, destination)
    return study_id


def _summary(fields: dict[str, Any]) -> InstanceSummary:
    """A stored summary back as the dataclass (JSON turned its tuples into lists)."""
    values: dict[str, Any] = {
        name: tuple(value) if name in _TUPLE_FIELDS and value is not None else value
        for name, value in fields.items()
    }
    return InstanceSummary(**values)


def complete_dicom_study(study_id: str, exam: ExamAdapters, *, source: str) -> IngestOutcome:
    """Route the exam's series, check the one this study processes, then queue it, or reject it."""
    store, storage = exam.store, exam.storage
    study = store.get_study(study_id)
    assert study is not None
    attempt = int(study.attempt)
    try:
        tracking.transition(store, study_id, attempt, StudyStatus.VALIDATING)
    except tracking.TransitionRefused:
        return IngestOutcome(source, study_id, str(study.status), detail="already completed")
    task = tracking.start_task(store, study_id, attempt, "validate")
    records = store.objects_of(study_id, INSTANCE_PREFIX)
    try:
        if not records:
            files = int(study.arrived)
            raise Rejected(ReasonCode.NO_PIXEL_DATA, f"None of the {files} files holds image pixels.")
        if study.exam_id is not None:  # routed: the exam chose its series
            series_uid = study.series_uid
        else:
            series_uid = route_exam_study(
                study, records, store, storage, exam.transfers, exam.rule_sets, exam.limits
            )
            check_analyses(store.get_study(study_id) or study)  # what the rules asked for exists
        summaries = [
            _summary(record.summary)
            for record in records
            if record.summary and record.summary["series_instance_uid"] == series_uid
        ]
        if not summaries:
            raise Rejected(ReasonCode.NO_PIXEL_DATA, "No image of the routed series arrived.")
        check_series(summaries, limits=exam.limits)
    except Rejected as rejected:
        quarantine_uploads(storage, study)
        return reject_study(store, study_id, attempt, rejected, task, source=source)
    first = summaries[0]
    described = {
        "format": "dicom",
        "files": int(study.arrived),
        "instances": len(summaries),
        "series_instance_uid": series_uid,
        "modality": first.modality,
        "rows": first.rows,
        "columns": first.columns,
        "frames": sum(s.frames for s in summaries),
        "transfer_syntaxes": sorted({s.transfer_syntax for s in summaries}),
    }
    return queue_study(
        store,
        exam.queues,
        study_id,
        attempt,
        upload_prefix(study.tenant, study_id),
        described,
        task,
        source=source,
    )
