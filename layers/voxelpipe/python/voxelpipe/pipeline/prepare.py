"""Prepare: decode the upload once into the canonical volume every analysis reads.

A NIfTI upload is reoriented to RAS+ in a fresh header, and kept so (derived/{id}/input/). A DICOM
study's series (the one its exam's rules chose: `series_uid`) is assembled into one volume (already
RAS+, fresh header) from the originals in uploads/ and the de-identified copies an earlier attempt
kept; its de-identified objects and the converted volume become artifacts, what de-identification
replaced is added to the study's identity map (the honest broker's, read only at egress:
docs/dicom.md), and the original objects leave uploads/ (deleted, or kept briefly under work/). The
study's subject is settled here (docs/subjects.md): the declared subject_ref, else one derived from
the Patient ID; the age and sex the uploader did not declare, from the originals; and the scan
date, shifted by the subject's offset like every date of the de-identified copies (PS3.15's
modified-dates option). A series that does not decode is REJECTED and its objects quarantined, as
ingest does.
"""

from __future__ import annotations

import os
import time

from pydicom.uid import SegmentationStorage

from voxelpipe import tracking
from voxelpipe.dicom import assemble_series, deidentify_bytes, read_instance_header, read_series_zip
from voxelpipe.dicom.patient import PatientFacts, patient_facts
from voxelpipe.dicom.reidentify import capture_identities
from voxelpipe.identities import IdentityMap
from voxelpipe.keys import derived_key, upload_prefix, work_key
from voxelpipe.limits import Limits
from voxelpipe.messages import ExecutionInput, PreparedVolume
from voxelpipe.nifti import load_nifti, to_nifti_bytes
from voxelpipe.pipeline.attempts import archive_attempt
from voxelpipe.pipeline.lifecycle import quarantine_uploads, reject_study, uid_map
from voxelpipe.pipeline.subjects import give_subject, shifted_scan_date
from voxelpipe.ports import IdentityMaps, ObjectStorage, StudyStore
from voxelpipe.pseudonyms import Pseudonyms
from voxelpipe.records import StudyRecord, TaskRecord
from voxelpipe.rejections import Rejected
from voxelpipe.status import StudyStatus
from voxelpipe.study_data import writing_for
from voxelpipe.volume import Image, canonical, first_volume, orientation, voxel_sizes, with_fresh_header
from voxelpipe.wiring import DicomOriginals, EnvVar, Prefix

STEP = "prepare"
CANONICAL_NAME = "canonical.nii"
CONVERTED_VOLUME = "input/volume.nii.gz"  # the input as NIfTI (canonical), under derived/{study_id}/
DEIDENTIFIED_PREFIX = "dicom/"  # the de-identified DICOM objects, under derived/{study_id}/
# Finalize's SEG outputs lie beside the copies (docs/dicom-outputs.md): Segmentation and Label Map
# Segmentation (DICOM 2024c; pydicom 3.0 has no name for it yet).
SEGMENTATION_CLASSES = frozenset({SegmentationStorage, "1.2.840.10008.5.1.4.1.1.66.7"})


class StudyRejected(RuntimeError):
    """The input proved bad only when decoded; the study is REJECTED, the execution stops."""


def canonical_volume(img: Image) -> Image:
    """The first volume in RAS+ voxel order, in a fresh header (see volume.with_fresh_header).

    The voxels are converted (scaled ones to float32, 64-bit integers narrowed) before they are
    reordered, which then moves a view of them: reordering a scaled image would have nibabel
    scale it to float64 first.
    """
    return with_fresh_header(canonical(with_fresh_header(first_volume(img))))


def _series_objects(
    study: StudyRecord, storage: ObjectStorage
) -> tuple[list[bytes], dict[str, bytes], list[str]]:
    """The objects of the series the study processes: the de-identified copies an earlier attempt
    kept, and the originals in uploads/ (a .zip opened; an original replaces the copy of the same
    instance); and the upload keys read (the originals to dispose of once converted)."""
    uids = uid_map(study)
    copies: dict[str, bytes] = {}
    for key in storage.list_keys(derived_key(study.study_id, DEIDENTIFIED_PREFIX)):
        data = storage.read(key)
        try:
            copy = read_instance_header(data)  # its UIDs are the pseudonymous ones
        except Rejected:
            continue  # no pixels: an output written beside the copies (a report, a structured report)
        if copy.sop_class_uid in SEGMENTATION_CLASSES:
            continue  # Finalize's SEG (docs/dicom-outputs.md): a study without a series_uid has no other tell
        if study.series_uid is None or copy.series_instance_uid == study.series_uid:
            copies[copy.sop_instance_uid] = data  # not an output's series (a segmentation)
    originals: dict[str, bytes] = {}
    upload_keys = storage.list_keys(upload_prefix(study.tenant, study.study_id))
    for key in upload_keys:
        data = storage.read(key)
        for member in [m for _, m in read_series_zip(data)] if key.lower().endswith(".zip") else [data]:
            try:
                summary = read_instance_header(member)
            except Rejected:
                continue  # no pixels (a report sent with the images): ingest passed it over too
            if study.series_uid is not None and uids(summary.series_instance_uid) != study.series_uid:
                continue  # another series of the exam: routed elsewhere, or not selected
            sop = uids(summary.sop_instance_uid)
            copies.pop(sop, None)
            originals[sop] = member
    return list(copies.values()), originals, upload_keys


def _settle_subject(
    study: StudyRecord, store: StudyStore, pseudonyms: Pseudonyms, facts: PatientFacts
) -> StudyRecord:
    """The study's subject from what was declared and what the originals say (docs/subjects.md)."""
    declared = study.subject or {}
    ref = declared.get("subject_ref")
    if not ref and facts.patient_id:
        ref = pseudonyms.subject_ref_for_patient(study.tenant, facts.patient_id, facts.issuer_of_patient_id)
    if not ref:
        return study  # no declared subject, no Patient ID: dates are removed (the Basic Profile)
    subject = {
        "subject_ref": ref,
        "age": declared.get("age") if declared.get("age") is not None else facts.age_years,
        "sex": declared.get("sex") or facts.sex,
    }
    scan_date = (
        shifted_scan_date(pseudonyms, study.tenant, ref, facts.scan_date)
        if facts.scan_date is not None
        else study.scan_date
    )
    return give_subject(store, study, subject, scan_date)


def _prepare_dicom(
    execution: ExecutionInput,
    study: StudyRecord,
    store: StudyStore,
    storage: ObjectStorage,
    identity_maps: IdentityMaps,
    task: TaskRecord,
    pseudonyms: Pseudonyms,
) -> Image:
    copies, originals, upload_keys = _series_objects(study, storage)
    try:
        volume = assemble_series([*copies, *originals.values()], limits=Limits())
    except Rejected as rejected:
        quarantine_uploads(storage, study)  # as ingest does: out of uploads/, kept for a look
        reject_study(
            store, study.study_id, execution.attempt, rejected, task, source=execution.input_key, actor=STEP
        )
        raise StudyRejected(f"{rejected.reason}: {rejected.detail}") from rejected
    tracking.set_progress(store, task, 40)
    storage.write(derived_key(study.study_id, CONVERTED_VOLUME), bytes(volume.nifti_bytes(compress=True)))
    # Keep only de-identified objects, named by their pseudonymous SOP Instance UID, and send the
    # originals away (those of other series too: routed studies have their own copies).
    uids = uid_map(study)
    if originals:  # a reprocess of copies only: the subject was settled by the attempt that read them
        study = _settle_subject(study, store, pseudonyms, patient_facts(next(iter(originals.values()))))
    pseudonym = (study.subject or {}).get("subject_ref")
    # The subject's offset (derived again, never stored): every date of the copies moves by it.
    offset = pseudonyms.date_offset_days(study.tenant, pseudonym) if pseudonym else None
    identities = IdentityMap()
    for sop, data in originals.items():
        copy = deidentify_bytes(data, uids, patient_pseudonym=pseudonym, date_offset_days=offset)
        storage.write(
            derived_key(study.study_id, f"{DEIDENTIFIED_PREFIX}{sop}.dcm"), copy, "application/dicom"
        )
        identities = identities.merged(capture_identities(data, uids))
    # Saved before the originals go: a failure here leaves them for the retry to capture again.
    if originals:
        identity_maps.save(study.study_id, identities)
    _dispose_originals(study, upload_keys, storage)
    # A reprocess reads the de-identified copies: the originals are gone.
    store.set_study_fields(study.study_id, {"input_key": derived_key(study.study_id, DEIDENTIFIED_PREFIX)})
    return volume.image


def _dispose_originals(study: StudyRecord, keys: list[str], storage: ObjectStorage) -> None:
    """Only the keys this attempt read: an instance that arrived since waits for the next one."""
    policy = DicomOriginals(os.environ.get(EnvVar.DICOM_ORIGINALS, DicomOriginals.DELETE))
    for key in keys:
        if policy is DicomOriginals.RETAIN:
            storage.move(key, work_key(study.study_id, 0, "originals/" + key.rsplit("/", 1)[-1]))
        storage.delete_all_versions(key)


def prepare(
    execution: ExecutionInput,
    store: StudyStore,
    storage: ObjectStorage,
    identity_maps: IdentityMaps,
    pseudonyms: Pseudonyms,
) -> PreparedVolume:
    started = time.perf_counter()
    study = tracking.transition(store, execution.study_id, execution.attempt, StudyStatus.RUNNING)
    with writing_for(store, storage, study.study_id, writes=(Prefix.DERIVED, Prefix.WORK, Prefix.QUARANTINE)):
        task = tracking.start_task(store, execution.study_id, execution.attempt, STEP)
        if execution.attempt > 1:
            # Whoever opened this attempt moved the one before's outputs; a late DICOM instance's
            # attempt, or an opener that crashed midway, leaves it (or the rest of it) to here.
            archive_attempt(storage, execution.study_id, execution.attempt - 1)
        if study.input_format == "dicom":
            original = _prepare_dicom(execution, study, store, storage, identity_maps, task, pseudonyms)
        else:
            original = load_nifti(storage.read(execution.input_key))
        tracking.set_progress(store, task, 60)
        volume = canonical_volume(original)
        if study.input_format != "dicom":
            # Kept beside a DICOM study's converted series: the input a later study of the subject
            # is compared with (longitudinal), in a fresh header, so no step after this one needs
            # to read what the uploader sent.
            storage.write(
                derived_key(study.study_id, CONVERTED_VOLUME), to_nifti_bytes(volume, compress=True)
            )
        key = work_key(execution.study_id, execution.attempt, CANONICAL_NAME)
        storage.write(key, to_nifti_bytes(volume, compress=False))
        prepared = PreparedVolume(
            volume_key=key,
            original_orientation=orientation(original.affine),
            original_shape=[int(n) for n in original.shape],
            original_affine=original.affine.tolist(),
            shape=[int(n) for n in volume.shape],
            voxel_size_mm=[round(float(v), 4) for v in voxel_sizes(volume.affine)],
            duration_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        tracking.finish_task(store, task, detail={"volume_key": key, "shape": prepared.shape})
    return prepared
