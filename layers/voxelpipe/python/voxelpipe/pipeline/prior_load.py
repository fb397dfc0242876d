"""The pinned prior study, loaded for the `longitudinal` analysis (AnalysisInput.prior): its input
volume canonicalised as Prepare does, its tissue-seg brain mask and its regional label map, on that
volume's grid. RunAnalysis and the GPU worker both call `load_prior` (docs/pipeline.md).

A prior that is no longer what dispatch pinned (deleted, or reprocessed since: another attempt, or
not COMPLETED) fails the analysis with PriorUnavailable rather than comparing with something else:
a reprocess of the later study pins the subject's studies as they are then.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from voxelpipe.analyses.catalogue import (
    REGIONAL_LABELS_FILE,
    TISSUE_SEG_MASK_FILE,
    PriorStudy,
)
from voxelpipe.keys import derived_key
from voxelpipe.messages import PriorPin
from voxelpipe.nifti import load_nifti
from voxelpipe.pipeline.prepare import CONVERTED_VOLUME, canonical_volume
from voxelpipe.ports import ObjectStorage, StudyStore
from voxelpipe.status import StudyStatus
from voxelpipe.volume import Image, canonical

_GRID_TOLERANCE_MM = 1e-3


class PriorUnavailable(RuntimeError):
    """The prior study dispatch pinned cannot be read as it was pinned; the message says why."""


def _read(storage: ObjectStorage, key: str, pin: PriorPin, what: str) -> bytes:
    try:
        return storage.read(key)
    except Exception as error:  # botocore's NoSuchKey, the fakes' KeyError: gone either way
        raise PriorUnavailable(
            f"prior study {pin.study_id}: its {what} is no longer stored ({type(error).__name__})"
        ) from error


def _on_grid(img: Image, reference: Image, pin: PriorPin, what: str) -> np.ndarray[Any, Any]:
    canon = canonical(img)
    if canon.shape[:3] != reference.shape[:3] or not np.allclose(
        canon.affine, reference.affine, atol=_GRID_TOLERANCE_MM
    ):
        raise PriorUnavailable(f"prior study {pin.study_id}: its {what} is not on its input's grid")
    return np.asarray(canon.dataobj)


def _region_names(summary: dict[str, Any]) -> dict[int, str]:
    """Region number -> name, from the prior's regional measures (results.json's, in its summary)."""
    regions = (summary.get("regional") or {}).get("regions") or {}
    return {
        int(entry["number"]): name
        for name, entry in regions.items()
        if isinstance(entry, dict) and isinstance(entry.get("number"), int)
    }


def load_prior(pin: PriorPin, tenant: str, store: StudyStore, storage: ObjectStorage) -> PriorStudy:
    """The prior study `pin` names, as the longitudinal analysis gets it; PriorUnavailable when it
    is gone, is another tenant's, or is no longer the COMPLETED attempt pinned."""
    record = store.get_study(pin.study_id)
    if record is None or record.tenant != tenant or record.status == StudyStatus.DELETED:
        raise PriorUnavailable(f"prior study {pin.study_id}: deleted since this study was dispatched")
    if int(record.attempt) != pin.attempt or record.status != StudyStatus.COMPLETED:
        raise PriorUnavailable(
            f"prior study {pin.study_id}: pinned at attempt {pin.attempt}, now attempt {record.attempt} "
            f"{record.status} (reprocessed since): reprocess this study to compare with it as it is now"
        )
    # Prepare keeps every study's input volume there (canonical, in a fresh header): never the upload.
    image = canonical_volume(
        load_nifti(_read(storage, derived_key(pin.study_id, CONVERTED_VOLUME), pin, "input volume"))
    )
    mask_image = load_nifti(
        _read(storage, derived_key(pin.study_id, "tissue-seg", TISSUE_SEG_MASK_FILE), pin, "brain mask")
    )
    brain_mask = _on_grid(mask_image, image, pin, "brain mask") > 0
    summary = dict(record.summary or {})
    regions: np.ndarray[Any, Any] | None = None
    names: dict[int, str] = {}
    if "regional" in summary:
        regions_image = load_nifti(
            _read(storage, derived_key(pin.study_id, "regional", REGIONAL_LABELS_FILE), pin, "region map")
        )
        regions = _on_grid(regions_image, image, pin, "region map").astype(np.int32)
        names = _region_names(summary)
    return PriorStudy(
        study_id=pin.study_id,
        image=image,
        brain_mask=brain_mask,
        regions=regions,
        region_names=names,
        interval_years=pin.interval_years,
    )
