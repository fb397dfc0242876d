"""The honest broker at the egress boundary: the study's identity map (IdentityMaps, readable only
by the egress function) and voxelpipe.dicom.reidentify. Without a map for the study, an internal
delivery fails (it never goes out de-identified in place of re-identified)."""

from __future__ import annotations

from pydicom.dataset import Dataset

from voxelpipe.dicom.reidentify import reidentify
from voxelpipe.ports import IdentityMaps, ReidentificationFailed


class BrokerReidentifier:
    """`ports.Reidentifier` over the identity maps."""

    def __init__(self, maps: IdentityMaps) -> None:
        self.maps = maps

    def __call__(self, study_id: str, dataset: Dataset) -> Dataset:
        identities = self.maps.get(study_id)
        if identities is None:
            raise ReidentificationFailed(f"study {study_id} has no identity map")
        return reidentify(dataset, identities)
