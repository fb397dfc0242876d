"""The study report: results.json's document and the study's arrays as one self-contained HTML
page (docs/report.md). Domain code: it knows nothing of storage, Lambda or the PDF engine."""

from voxelpipe.report.arrays import report_arrays
from voxelpipe.report.html import ReportArrays, build_report

__all__ = ["ReportArrays", "build_report", "report_arrays"]
