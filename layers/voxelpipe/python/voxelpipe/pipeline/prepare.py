"""Prepare: decode the upload once into the canonical volume every analysis reads."""

from __future__ import annotations

import time

from voxelpipe import tracking
from voxelpipe.adapters.storage import Storage
from voxelpipe.keys import work_key
from voxelpipe.messages import ExecutionInput, PreparedVolume
from voxelpipe.nifti import load_nifti, to_nifti_bytes
from voxelpipe.status import StudyStatus
from voxelpipe.volume import Image, canonical, first_volume, orientation, voxel_sizes, with_fresh_header

STEP = "prepare"
CANONICAL_NAME = "canonical.nii"


def canonical_volume(img: Image) -> Image:
    """The first volume in RAS+ voxel order, in a fresh header (see volume.with_fresh_header)."""
    return with_fresh_header(canonical(first_volume(img)))


def prepare(execution: ExecutionInput, storage: Storage) -> PreparedVolume:
    started = time.perf_counter()
    tracking.transition(execution.study_id, execution.attempt, StudyStatus.RUNNING)
    task = tracking.start_task(execution.study_id, execution.attempt, STEP)
    original = load_nifti(storage.read(execution.input_key))
    tracking.set_progress(task, 50)
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
    tracking.finish_task(task, detail={"volume_key": key, "shape": prepared.shape})
    return prepared
