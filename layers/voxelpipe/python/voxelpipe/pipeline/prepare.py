"""Prepare: decode the upload once into the canonical volume every analysis reads.

A NIfTI upload is reoriented to RAS+ in a fresh header. A DICOM series is assembled into one
volume (already RAS+, fresh header); its de-identified objects and the converted volume become
artifacts, and the original objects leave uploads/ (deleted, or kept briefly under work/). A
series that does not decode is REJECTED and its objects quarantined, as ingest does.
"""

from __future__ import annotations

import os
import time

from voxelpipe import tracking
from voxelpipe.dicom import assemble_series, deidentify_bytes, read_series_zip
from voxelpipe.keys import derived_key, work_key
from voxelpipe.limits import Limits
from voxelpipe.messages import ExecutionInput, PreparedVolume
from voxelpipe.nifti import load_nifti, to_nifti_bytes
from voxelpipe.pipeline.lifecycle import quarantine_uploads, reject_study, uid_map
from voxelpipe.ports import ObjectStorage, StudyStore
from voxelpipe.records import StudyRecord, TaskRecord
from voxelpipe.rejections import Rejected
from voxelpipe.status import StudyStatus
from voxelpipe.study_data import writing_for
from voxelpipe.volume import Image, canonical, first_volume, orientation, voxel_sizes, with_fresh_header
from voxelpipe.wiring import DicomOriginals, EnvVar, Prefix

STEP = "prepare"
CANONICAL_NAME = "canonical.nii"
CONVERTED_VOLUME = "input/volume.nii.gz"  # the DICOM series as NIfTI, under derived/{study_id}/
DEIDENTIFIED_PREFIX = "dicom/"  # the de-identified DICOM objects, under derived/{study_id}/


class StudyRejected(RuntimeError):
    """The input proved bad only when decoded; the study is REJECTED, the execution stops."""


def canonical_volume(img: Image) -> Image:
    """The first volume in RAS+ voxel order, in a fresh header (see volume.with_fresh_header).

    The voxels are converted (scaled ones to float32, 64-bit integers narrowed) before they are
    reordered, which then moves a view of them: reordering a scaled image would have nibabel
    scale it to float64 first.
    """
    return with_fresh_header(canonical(with_fresh_header(first_volume(img))))


def _series(input_prefix: str, storage: ObjectStorage) -> list[bytes]:
    """The objects of the study's series, a .zip opened."""
    objects: list[bytes] = []
    for key in storage.list_keys(input_prefix):
        data = storage.read(key)
        if key.lower().endswith(".zip"):
            objects.extend(member for _, member in read_series_zip(data))
        else:
            objects.append(data)
    return objects


def _prepare_dicom(
    execution: ExecutionInput, study: StudyRecord, store: StudyStore, storage: ObjectStorage, task: TaskRecord
) -> Image:
    objects = _series(execution.input_key, storage)
    try:
        volume = assemble_series(objects, limits=Limits())
    except Rejected as rejected:
        if execution.input_key.startswith(Prefix.UPLOADS):
            quarantine_uploads(storage, study)  # as ingest does: out of uploads/, kept for a look
        reject_study(
            store, study.study_id, execution.attempt, rejected, task, source=execution.input_key, actor=STEP
        )
        raise StudyRejected(f"{rejected.reason}: {rejected.detail}") from rejected
    tracking.set_progress(store, task, 40)
    storage.write(derived_key(study.study_id, CONVERTED_VOLUME), bytes(volume.nifti_bytes(compress=True)))
    if not execution.input_key.startswith(Prefix.DERIVED):
        # First conversion: keep only de-identified objects, and send the originals away.
        uids = uid_map(study)
        pseudonym = (study.subject or {}).get("subject_ref")
        for number, data in enumerate(objects):
            copy = deidentify_bytes(data, uids, patient_pseudonym=pseudonym)
            storage.write(
                derived_key(study.study_id, f"{DEIDENTIFIED_PREFIX}{number:05d}.dcm"),
                copy,
                "application/dicom",
            )
        _dispose_originals(study, execution.input_key, storage)
        # A reprocess reads the de-identified copies: the originals are gone.
        store.set_study_fields(
            study.study_id, {"input_key": derived_key(study.study_id, DEIDENTIFIED_PREFIX)}
        )
    return volume.image


def _dispose_originals(study: StudyRecord, input_prefix: str, storage: ObjectStorage) -> None:
    policy = DicomOriginals(os.environ.get(EnvVar.DICOM_ORIGINALS, DicomOriginals.DELETE))
    if policy is DicomOriginals.RETAIN:
        for key in storage.list_keys(input_prefix):
            storage.move(key, work_key(study.study_id, 0, "originals/" + key.rsplit("/", 1)[-1]))
    storage.delete_all_versions(input_prefix)


def prepare(execution: ExecutionInput, store: StudyStore, storage: ObjectStorage) -> PreparedVolume:
    started = time.perf_counter()
    study = tracking.transition(store, execution.study_id, execution.attempt, StudyStatus.RUNNING)
    with writing_for(store, storage, study.study_id, writes=(Prefix.DERIVED, Prefix.WORK, Prefix.QUARANTINE)):
        task = tracking.start_task(store, execution.study_id, execution.attempt, STEP)
        if study.input_format == "dicom":
            original = _prepare_dicom(execution, study, store, storage, task)
        else:
            original = load_nifti(storage.read(execution.input_key))
        tracking.set_progress(store, task, 60)
        volume = canonical_volume(original)
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
