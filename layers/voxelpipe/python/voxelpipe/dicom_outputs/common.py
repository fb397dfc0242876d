"""What every DICOM output shares: the equipment that made it and the algorithm identification."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import highdicom as hd
from pydicom.dataset import Dataset
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


# The dates and times the builders stamp with "now" (highdicom: content, instance creation,
# contributing equipment; the PDF: acquisition).
_STAMPED_DATES: Final = ("ContentDate", "InstanceCreationDate", "SeriesDate")
_STAMPED_TIMES: Final = ("ContentTime", "InstanceCreationTime", "SeriesTime")
_STAMPED_DATETIMES: Final = ("ContributionDateTime", "AcquisitionDateTime")


def _first(source: Dataset, keywords: tuple[str, ...], default: str) -> str:
    for keyword in keywords:
        value = str(source.get(keyword, "") or "")
        if value:
            return value
    return default


def on_source_timeline(dataset: Dataset, source: Dataset) -> None:
    """Date the output as the de-identified source is dated, not with the real date and time it
    was made: that would sit beside the source's shifted (or dummy) dates and give the shift away.
    Every stamped date, time and datetime, nested ones included, takes the source's study date and
    time (else its series or content date and time)."""
    date = _first(source, ("StudyDate", "SeriesDate", "ContentDate", "AcquisitionDate"), "19000101")
    time = _first(source, ("StudyTime", "SeriesTime", "ContentTime", "AcquisitionTime"), "000000")
    for element in dataset.iterall():
        if element.keyword in _STAMPED_DATES:
            element.value = date
        elif element.keyword in _STAMPED_TIMES:
            element.value = time
        elif element.keyword in _STAMPED_DATETIMES:
            element.value = date + time
