"""Printing the study report to PDF: the kept Chromium (voxelpipe.adapters.chromium) against one
browser started for each report (`chromium --headless --print-to-pdf`, the simple baseline), on the
same page in the same run.

    python bench/report_pdf.py [--repeat N]

The page is the report of the tests' synthetic study (tests/fixtures/report_document.py: every
section, charts and three-plane overlays; four A4 pages). Each figure is the median of N prints;
the kept browser's first print (its start) is shown apart. The ratio is baseline / kept. Exits 0
whatever the figures.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.fixtures.report_document import SUBJECT, report_arrays, report_document
from voxelpipe.adapters.chromium import ChromiumPdfRenderer, find_chromium
from voxelpipe.report import build_report


def one_browser_a_report(binary: str, page: Path, work: Path, run: int) -> float:
    started = time.perf_counter()
    subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-pdf-header-footer",
            f"--user-data-dir={work / f'profile-{run}'}",
            f"--print-to-pdf={work / 'report.pdf'}",
            page.as_uri(),
        ],
        capture_output=True,
        check=True,
    )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    binary = find_chromium()
    if binary is None:
        sys.exit("no Chromium (VOXELPIPE_CHROMIUM or chromium on PATH)")
    html = build_report(report_document(), SUBJECT, report_arrays())
    renderer = ChromiumPdfRenderer(binary)
    started = time.perf_counter()
    renderer.render_pdf(html)
    first = time.perf_counter() - started
    kept = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        renderer.render_pdf(html)
        kept.append(time.perf_counter() - started)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        page = work / "report.html"
        page.write_text(html, encoding="utf-8")
        baseline = [one_browser_a_report(binary, page, work, run) for run in range(args.repeat)]
    print(f"report page: {len(html) / 1024:.0f} KiB of HTML")
    kept_s = statistics.median(kept)
    print(f"kept Chromium: first print (starts the browser) {first:.2f} s, then median {kept_s:.2f} s")
    print(f"one browser a report (baseline): median {statistics.median(baseline):.2f} s")
    print(f"ratio baseline / kept: {statistics.median(baseline) / kept_s:.1f}x")


if __name__ == "__main__":
    main()
