"""Finalize's report: report.html and report.pdf of a completed study (docs/report.md).

A report that cannot be made never fails the study: its measures are in results.json whatever
happens here. Each file that could not be written is recorded as unavailable with the error (in
results.json's `report` and the study's record) and logged as a warning.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from voxelpipe.keys import derived_key, report_html_key, report_pdf_key
from voxelpipe.messages import FinalizeInput
from voxelpipe.observability import logger
from voxelpipe.ports import ObjectStorage, PdfRenderer
from voxelpipe.report import ReportArrays, build_report, report_arrays

# The label maps drawn over the volume: (analysis, artifact file name).
TISSUE_LABELS = ("tissue-seg", "labels.nii.gz")
REGION_LABELS = ("regional", "regions.nii.gz")


def _artifact(state: FinalizeInput, storage: ObjectStorage, analysis: str, name: str) -> bytes | None:
    key = derived_key(state.study_id, analysis, name)
    produced = any(key in result.artifacts for result in state.results if result.analysis == analysis)
    return storage.read(key) if produced else None


def report_reads(state: FinalizeInput) -> int:
    """The objects the report reads: the volume, and each label map the study produced."""
    produced = {key for result in state.results for key in result.artifacts}
    maps = (derived_key(state.study_id, *where) for where in (TISSUE_LABELS, REGION_LABELS))
    return 1 + sum(1 for key in maps if key in produced)


def _arrays(state: FinalizeInput, storage: ObjectStorage) -> ReportArrays:
    return report_arrays(
        storage.read(state.prepared.volume_key),
        _artifact(state, storage, *TISSUE_LABELS),
        _artifact(state, storage, *REGION_LABELS),
    )


def _unavailable(state: FinalizeInput, what: str, error: Exception) -> dict[str, Any]:
    message = f"{type(error).__name__}: {error}"
    logger.warning(f"{what} unavailable", extra={"study_id": state.study_id, "error": message})
    return {"status": "unavailable", "error": message}


def write_report(
    state: FinalizeInput,
    document: Mapping[str, Any],
    subject: Mapping[str, Any] | None,
    storage: ObjectStorage,
    renderer: PdfRenderer,
    timeline: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write the study's report.html and report.pdf; what became of each (`html`, `pdf`: status
    "available" with its `key`, or "unavailable" with the `error`) and how long it took."""
    started = time.perf_counter()
    report: dict[str, Any] = {}
    try:
        try:
            arrays: ReportArrays | None = _arrays(state, storage)
        except Exception as error:  # no images is still a report
            logger.warning("report without images", extra={"study_id": state.study_id, "error": str(error)})
            arrays = None
        page = build_report(document, subject, arrays, timeline)
        storage.write(report_html_key(state.study_id), page.encode(), content_type="text/html; charset=utf-8")
        report["html"] = {"status": "available", "key": report_html_key(state.study_id)}
    except Exception as error:  # the study's measures stand without a report
        report["html"] = _unavailable(state, "report.html", error)
        report["pdf"] = {"status": "unavailable", "error": "no report.html to print"}
    else:
        try:
            pdf = renderer.render_pdf(page)
            storage.write(report_pdf_key(state.study_id), pdf, content_type="application/pdf")
            report["pdf"] = {"status": "available", "key": report_pdf_key(state.study_id)}
        except Exception as error:
            report["pdf"] = _unavailable(state, "report.pdf", error)
    report["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
    return report
