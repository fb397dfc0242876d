"""PdfRenderer on headless Chromium's print-to-PDF: the browser engine that renders the report's
HTML the way a reader's browser does (CSS, SVG, data: URIs), so the PDF is the page, printed.

The binary: $VOXELPIPE_CHROMIUM, else `chromium` (Debian) or `chromium-browser`/`google-chrome` on
PATH. Each render gets a fresh profile under the temporary directory (removed after), no sandbox
(Lambda and containers have no user namespaces) and no GPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from voxelpipe.ports import PdfRenderError

CHROMIUM_ENV = "VOXELPIPE_CHROMIUM"
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DEFAULT_TIMEOUT_S = 60.0


def find_chromium() -> str | None:
    """The Chromium binary to run: $VOXELPIPE_CHROMIUM when set, else the first on PATH."""
    named = os.environ.get(CHROMIUM_ENV)
    if named:
        return named
    for name in _CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class ChromiumPdfRenderer:
    def __init__(self, binary: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.binary = binary if binary is not None else find_chromium()
        self.timeout_s = timeout_s

    def render_pdf(self, html: str) -> bytes:
        if self.binary is None:
            raise PdfRenderError(
                f"no Chromium to print the PDF with: set ${CHROMIUM_ENV} or put chromium on PATH"
            )
        # Lambda's only writable place is /tmp: the profile, the page and the PDF all live there.
        with tempfile.TemporaryDirectory(prefix="voxelpipe-pdf-") as work:
            folder = Path(work)
            page = folder / "report.html"
            page.write_text(html, encoding="utf-8")
            pdf = folder / "report.pdf"
            command = [
                self.binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",  # Lambda's /dev/shm is tiny
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                # Nothing a one-page print needs: less to start (measured ~10-20% off a run here).
                "--disable-component-update",
                "--disable-sync",
                "--disable-breakpad",
                "--disable-default-apps",
                "--mute-audio",
                "--no-service-autorun",
                "--password-store=basic",
                f"--user-data-dir={folder / 'profile'}",
                f"--crash-dumps-dir={folder / 'crashes'}",
                "--no-pdf-header-footer",
                f"--print-to-pdf={pdf}",
                page.as_uri(),
            ]
            try:
                run = subprocess.run(
                    command,
                    capture_output=True,
                    timeout=self.timeout_s,
                    check=False,
                    env={**os.environ, "HOME": str(folder)},
                )
            except FileNotFoundError as error:
                raise PdfRenderError(f"Chromium not found at {self.binary!r}") from error
            except PermissionError as error:
                raise PdfRenderError(f"Chromium at {self.binary!r} cannot be run: {error}") from error
            except subprocess.TimeoutExpired as error:
                raise PdfRenderError(f"Chromium did not print the PDF within {self.timeout_s:g} s") from error
            if run.returncode != 0 or not pdf.is_file() or pdf.stat().st_size == 0:
                tail = run.stderr.decode("utf-8", "replace").strip().splitlines()[-3:]
                raise PdfRenderError(
                    f"Chromium exited with {run.returncode} without a PDF: "
                    + (" | ".join(tail) or "no output")
                )
            data = pdf.read_bytes()
        if not data.startswith(b"%PDF-"):
            raise PdfRenderError("Chromium wrote a file that is not a PDF")
        return data
