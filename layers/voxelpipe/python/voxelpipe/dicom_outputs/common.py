"""What every DICOM output shares: the equipment that made it and the algorithm identification."""

from __future__ import annotations

from dataclasses import dataclass

import highdicom as hd
from pydicom.sr.codedict import codes

import voxelpipe

MANUFACTURER = "voxelpipe"
MODEL = "voxelpipe"
# No serial number identifies a deployment (and none should: it would be a quasi-identifier of the
# site); the Enhanced General Equipment module requires a value, so it names the software.
DEVICE_SERIAL = "voxelpipe"


@dataclass(frozen=True)
class Analysis:
    """An analysis as results.json names it: `name` and `version` (its provenance)."""

    name: str
    version: str

    def algorithm_identification(self) -> hd.AlgorithmIdentificationSequence:
        """For a SEG's segments: the analysis as the algorithm, image processing its family."""
        return hd.AlgorithmIdentificationSequence(
            name=f"voxelpipe {self.name}", family=codes.DCM.ImageProcessing, version=self.version
        )

    def sr_algorithm(self) -> hd.sr.AlgorithmIdentification:
        """For an SR's measurements (TID 4019)."""
        return hd.sr.AlgorithmIdentification(name=f"voxelpipe {self.name}", version=self.version)


def software_versions() -> str:
    return str(voxelpipe.__version__)
