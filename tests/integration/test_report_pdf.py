"""The report's PDF engine: headless Chromium prints the report page, pages as the print CSS says."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.pdf_pages import ink_variance, pdf_pages
from tests.fixtures.report_document import SUBJECT, report_arrays, report_document
from voxelpipe.adapters.chromium import ChromiumPdfRenderer, find_chromium
from voxelpipe.ports import PdfRenderError
from voxelpipe.report import build_report


def test_chromium_prints_the_report_on_a4_pages(tmp_path: Path):
    assert find_chromium(), "chromium is needed (VOXELPIPE_CHROMIUM or PATH)"
    pdf = tmp_path / "report.pdf"
    pdf.write_bytes(
        ChromiumPdfRenderer().render_pdf(build_report(report_document(), SUBJECT, report_arrays()))
    )
    pages = pdf_pages(pdf, tmp_path / "pages")
    # Measures, charts and flags (two pages); the images (a page break before); the provenance (another).
    assert len(pages) == 4
    assert all(ink_variance(page) > 50 for page in pages), [ink_variance(page) for page in pages]
    from PIL import Image

    with Image.open(pages[0]) as first:  # A4 portrait at 40 dpi: 331 x 468
        assert abs(first.width / first.height - 210 / 297) < 0.01


def test_a_missing_chromium_is_a_clear_error():
    with pytest.raises(PdfRenderError, match="not found at '/nonexistent/chromium'"):
        ChromiumPdfRenderer(binary="/nonexistent/chromium").render_pdf("<p>x</p>")


def test_a_chromium_that_fails_is_a_clear_error(tmp_path: Path):
    broken = tmp_path / "chromium"
    broken.write_text("#!/bin/sh\necho 'crashed' >&2\nexit 3\n")
    broken.chmod(0o755)
    with pytest.raises(PdfRenderError, match="exited with 3 before printing: crashed"):
        ChromiumPdfRenderer(binary=str(broken)).render_pdf("<p>x</p>")
