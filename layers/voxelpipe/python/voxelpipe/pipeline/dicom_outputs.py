"""Finalize's DICOM outputs of a DICOM-origin study: SEG, SR (TID 1500), Encapsulated PDF.

Built by voxelpipe.dicom_outputs (highdicom) from the de-identified copies of the source series
Prepare kept under derived/{study_id}/dicom/ (those whose Series Instance UID is the study's
`series_uid`), the label maps the analyses wrote and results.json; written beside the copies as
derived/{study_id}/dicom/{sop_instance_uid}.dcm, where WADO-RS serves them. Every identifier in
them comes from the de-identified copies (the broker re-identifies at egress).

An output that cannot be made never fails the study: it is recorded as unavailable with the error
(as the report is) and logged as a warning. An earlier attempt's outputs are replaced.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import Comprehensive3DSRStorage, EncapsulatedPDFStorage

from voxelpipe.dicom_outputs import (
    Analysis,
    SegmentationType,
    SegmentReferences,
    build_encapsulated_pdf,
    build_measurement_report,
    build_segmentation,
    region_segments,
    source_images,
    tissue_segments,
)
from voxelpipe.keys import derived_key, report_pdf_key
from voxelpipe.messages import FinalizeInput
from voxelpipe.nifti import load_nifti
from voxelpipe.observability import logger
from voxelpipe.pipeline.prepare import DEIDENTIFIED_PREFIX, SEGMENTATION_CLASSES
from voxelpipe.pipeline.report import REGION_LABELS, TISSUE_LABELS
from voxelpipe.ports import ObjectStorage
from voxelpipe.records import StudyRecord
from voxelpipe.wiring import EnvVar

# What Finalize writes there (so a rerun knows its own earlier outputs from the source copies).
OUTPUT_CLASSES: Final = SEGMENTATION_CLASSES | {Comprehensive3DSRStorage, EncapsulatedPDFStorage}
# Series numbers of the outputs: high, so viewers list them after the acquired series.
SERIES_NUMBERS: Final = {"tissue": 901, "regions": 902, "measurements": 903, "report": 904}


def segmentation_type() -> SegmentationType:
    """The SEG type the deployment's receiving systems read (EnvVar.DICOM_SEG_TYPE, BINARY)."""
    return SegmentationType(os.environ.get(EnvVar.DICOM_SEG_TYPE, SegmentationType.BINARY).upper())


def _dataset_bytes(dataset: Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
    return buffer.getvalue()


def _produced(state: FinalizeInput, analysis: str, name: str) -> str | None:
    key = derived_key(state.study_id, analysis, name)
    return key if any(key in r.artifacts for r in state.results if r.analysis == analysis) else None


def _label_array(dataobj: Any) -> npt.NDArray[np.integer[Any]]:
    """A label map's values as integers (a label map written scaled reads as floats)."""
    values = np.asarray(dataobj)
    return values if values.dtype.kind in "iu" else np.rint(values).astype(np.int32)


def _version(document: Mapping[str, Any], analysis: str) -> str:
    return str(document.get("analyses", {}).get(analysis, {}).get("version", ""))


def _read_objects(study_id: str, storage: ObjectStorage) -> list[Dataset]:
    """The objects under dicom/; an earlier attempt's outputs are deleted, not returned."""
    objects: list[Dataset] = []
    for key in storage.list_keys(derived_key(study_id, DEIDENTIFIED_PREFIX)):
        # Headers only: the SEG and SR need the source images' geometry and identifiers, not pixels.
        dataset = pydicom.dcmread(io.BytesIO(storage.read(key)), force=True, stop_before_pixels=True)
        if dataset.get("SOPClassUID") in OUTPUT_CLASSES:
            storage.delete_all_versions(key)
            continue
        objects.append(dataset)
    return objects


class _Writer:
    """Writes each output and records what became of it."""

    def __init__(self, state: FinalizeInput, storage: ObjectStorage) -> None:
        self.state, self.storage = state, storage
        self.records: list[dict[str, Any]] = []

    def make(self, kind: str, content: str, build: Callable[[], Dataset]) -> Dataset | None:
        try:
            with warnings.catch_warnings():
                # highdicom warns that a pseudonym ("sub-01") is a one-component person name.
                warnings.filterwarnings("ignore", message=".*person name.*", category=UserWarning)
                dataset = build()
            key = derived_key(self.state.study_id, f"{DEIDENTIFIED_PREFIX}{dataset.SOPInstanceUID}.dcm")
            self.storage.write(key, _dataset_bytes(dataset), content_type="application/dicom")
        except Exception as error:  # the study's results stand without it
            message = f"{type(error).__name__}: {error}"
            logger.warning(
                f"DICOM {kind} ({content}) unavailable",
                extra={"study_id": self.state.study_id, "error": message},
            )
            self.records.append({"kind": kind, "content": content, "status": "unavailable", "error": message})
            return None
        self.records.append(
            {
                "key": key,
                "kind": kind,
                "content": content,
                "status": "available",
                "sop_class_uid": str(dataset.SOPClassUID),
                "sop_instance_uid": str(dataset.SOPInstanceUID),
                "series_instance_uid": str(dataset.SeriesInstanceUID),
            }
        )
        return dataset

    def unavailable(self, kinds: list[tuple[str, str]], error: Exception) -> None:
        message = f"{type(error).__name__}: {error}"
        logger.warning("DICOM outputs unavailable", extra={"study_id": self.state.study_id, "error": message})
        self.records.extend(
            {"kind": kind, "content": content, "status": "unavailable", "error": message}
            for kind, content in kinds
        )


def write_dicom_outputs(
    state: FinalizeInput,
    study: StudyRecord | None,
    document: Mapping[str, Any],
    storage: ObjectStorage,
) -> list[dict[str, Any]] | None:
    """Write the study's DICOM outputs (a DICOM-origin study only: else None) and return what
    became of each: results.json's `dicom_outputs` (docs/pipeline.md)."""
    if study is None or study.input_format != "dicom":
        return None
    writer = _Writer(state, storage)
    tissue_key = _produced(state, *TISSUE_LABELS)
    region_key = _produced(state, *REGION_LABELS)
    pdf = document.get("report", {}).get("pdf", {})
    wanted = [("SEG", "tissue")] if tissue_key else []
    wanted += [("SEG", "regions")] if region_key else []
    wanted += (
        [("SR", "measurements"), ("PDF", "report")]
        if pdf.get("status") == "available"
        else [("SR", "measurements")]
    )
    try:
        sources = source_images(_read_objects(state.study_id, storage), study.series_uid)
    except Exception as error:  # no source series: nothing can be filed under it
        writer.unavailable(wanted, error)
        return writer.records

    references: list[SegmentReferences] = []
    for key, content, segments, analysis in (
        (tissue_key, "tissue", tissue_segments(), TISSUE_LABELS[0]),
        (region_key, "regions", region_segments(), REGION_LABELS[0]),
    ):
        if key is None:
            continue

        def build_seg(
            key: str = key, content: str = content, segments: Any = segments, name: str = analysis
        ) -> Dataset:
            labels = load_nifti(storage.read(key))
            return build_segmentation(
                sources,
                _label_array(labels.dataobj),
                labels.affine,
                segments,
                Analysis(name, _version(document, name)),
                series_number=SERIES_NUMBERS[content],
                description=f"voxelpipe {name}: {content}",
                segmentation_type=segmentation_type(),
            )

        made = writer.make("SEG", content, build_seg)
        if made is not None:
            references.append(SegmentReferences.of(made, segments))

    writer.make(
        "SR",
        "measurements",
        lambda: build_measurement_report(
            document,
            [ref.segmentation for ref in references] + sources,
            references,
            series_number=SERIES_NUMBERS["measurements"],
        ),
    )
    if pdf.get("status") == "available":
        writer.make(
            "PDF",
            "report",
            lambda: build_encapsulated_pdf(
                storage.read(report_pdf_key(state.study_id)),
                sources[0],
                series_number=SERIES_NUMBERS["report"],
            ),
        )
    return writer.records
