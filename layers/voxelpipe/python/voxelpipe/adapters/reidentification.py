"""The honest broker at the egress boundary: a study's identity map (helper B's IdentityMaps,
voxelpipe.adapters.identity_maps.DynamoIdentityMaps, readable only by the egress function) and
voxelpipe.dicom.reidentify.reidentify. Looked up when first used, so egress deploys before the
broker does; without it, or without a study's map, an internal delivery fails (never goes out
de-identified in place of re-identified)."""

from __future__ import annotations

import importlib
from typing import Any

from pydicom.dataset import Dataset

from voxelpipe.ports import ReidentificationFailed


class BrokerReidentifier:
    def __init__(self) -> None:
        self._maps: Any = None
        self._reidentify: Any = None

    def _load(self) -> None:
        if self._maps is None:
            try:
                maps = importlib.import_module("voxelpipe.adapters.identity_maps")
                broker = importlib.import_module("voxelpipe.dicom.reidentify")
            except ModuleNotFoundError as error:
                raise ReidentificationFailed(f"the honest broker is not deployed ({error.name})") from error
            self._maps = maps.DynamoIdentityMaps()
            self._reidentify = broker.reidentify

    def __call__(self, study_id: str, dataset: Dataset) -> Dataset:
        self._load()
        identities = self._maps.get(study_id)
        if identities is None:
            raise ReidentificationFailed(f"study {study_id} has no identity map")
        result: Dataset = self._reidentify(dataset, identities)
        return result
