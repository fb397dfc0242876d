"""PdfRenderer on headless Chromium's print-to-PDF: the browser engine that renders the report's
HTML the way a reader's browser does (CSS, SVG, data: URIs), so the PDF is the page, printed.

One Chromium a process, started at the first report and kept (driven through Playwright over the
DevTools protocol): a warm Lambda container, or the local cloud, prints each further report in a
fraction of a second instead of starting a browser (~1 CPU-second) each time. Playwright's sync API
belongs to the thread that started it, and Finalize runs in many threads locally, so the browser
lives in a thread of its own that prints the pages it is handed, one at a time. A browser that
crashed is started again for the next report.

The binary: $VOXELPIPE_CHROMIUM, else `chromium` (Debian) or `chromium-browser`/`google-chrome` on
PATH. No sandbox (Lambda and containers have no user namespaces), no GPU, and the profile, like
everything else, under the temporary directory (Lambda's only writable place).
"""

from __future__ import annotations

import atexit
import os
import queue
import re
import shutil
import tempfile
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from voxelpipe.ports import PdfRenderError

CHROMIUM_ENV = "VOXELPIPE_CHROMIUM"
_CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
DEFAULT_TIMEOUT_S = 60.0
_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",  # Lambda's /dev/shm is tiny
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-breakpad",
    "--disable-default-apps",
    "--mute-audio",
    "--no-service-autorun",
    "--password-store=basic",
)


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


class _Printer:
    """A Chromium kept running in its own thread, printing the pages put on its queue."""

    def __init__(self, binary: str, timeout_s: float) -> None:
        self.binary = binary
        self.timeout_s = timeout_s
        self.pages: queue.Queue[tuple[str, Future[bytes]] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="voxelpipe-pdf", daemon=True)
        self.thread.start()

    def print_pdf(self, html: str) -> bytes:
        done: Future[bytes] = Future()
        self.pages.put((html, done))
        try:
            return done.result(timeout=self.timeout_s)
        except FutureTimeout as error:
            raise PdfRenderError(f"Chromium did not print the PDF within {self.timeout_s:g} s") from error

    def close(self) -> None:
        self.pages.put(None)
        self.thread.join(10)

    def _fail_waiting(self, error: PdfRenderError) -> None:
        """Fail every page still queued (the browser is gone); the next report starts another."""
        while True:
            try:
                item = self.pages.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[1].set_exception(error)

    def _run(self) -> None:
        from playwright.sync_api import Error, sync_playwright

        with tempfile.TemporaryDirectory(prefix="voxelpipe-pdf-") as home:
            try:
                with sync_playwright() as playwright:
                    browser = self._launch(playwright, home)
                    while (item := self.pages.get()) is not None:
                        html, done = item
                        try:
                            done.set_result(self._print(browser, html))
                        except Error as error:
                            done.set_exception(PdfRenderError(f"Chromium could not print the page: {error}"))
                            if not browser.is_connected():
                                break
                    browser.close()
            except PdfRenderError as error:
                self._fail_waiting(error)
            except Exception as error:  # the driver or the browser died: say so to whoever waits
                self._fail_waiting(PdfRenderError(f"Chromium stopped: {type(error).__name__}: {error}"))
            finally:
                self._fail_waiting(PdfRenderError("Chromium stopped"))

    def _launch(self, playwright: Any, home: str) -> Any:
        from playwright.sync_api import Error

        if not os.access(self.binary, os.F_OK):
            raise PdfRenderError(f"Chromium not found at {self.binary!r}")
        try:
            return playwright.chromium.launch(
                executable_path=self.binary,
                args=list(_ARGS),
                env={**os.environ, "HOME": home},
                timeout=self.timeout_s * 1000,
            )
        except Error as error:
            raise PdfRenderError(_launch_failure(self.binary, str(error))) from error

    @staticmethod
    def _print(browser: Any, html: str) -> bytes:
        page = browser.new_page()
        try:
            page.set_content(html, wait_until="load")
            # The page's print CSS (@page A4) decides the size, as a reader's "print" would.
            pdf: bytes = page.pdf(prefer_css_page_size=True, print_background=True)
            return pdf
        finally:
            page.close()


def _launch_failure(binary: str, log: str) -> str:
    """What a failed start comes to, from Playwright's launch log: the exit code and the browser's
    last lines on stderr."""
    code = re.search(r"process did exit: exitCode=(-?\d+)", log)
    stderr = [line for line in re.findall(r"^\[pid=\d+\]\[err\] (.*)$", log, re.MULTILINE) if line.strip()]
    said = " | ".join(stderr[-3:]) or "no output"
    if code is not None:
        return f"Chromium at {binary!r} exited with {code.group(1)} before printing: {said}"
    first = log.strip().splitlines()[0] if log.strip() else "no output"
    return f"Chromium could not start at {binary!r}: {first} ({said})"


_printers: dict[str, _Printer] = {}
_printers_lock = threading.Lock()


def _printer(binary: str, timeout_s: float) -> _Printer:
    with _printers_lock:
        printer = _printers.get(binary)
        if printer is None or not printer.thread.is_alive():
            printer = _printers[binary] = _Printer(binary, timeout_s)
        return printer


@atexit.register
def _close_printers() -> None:
    with _printers_lock:
        for printer in _printers.values():
            printer.close()
        _printers.clear()


class ChromiumPdfRenderer:
    def __init__(self, binary: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.binary = binary if binary is not None else find_chromium()
        self.timeout_s = timeout_s

    def render_pdf(self, html: str) -> bytes:
        if self.binary is None:
            raise PdfRenderError(
                f"no Chromium to print the PDF with: set ${CHROMIUM_ENV} or put chromium on PATH"
            )
        data = _printer(self.binary, self.timeout_s).print_pdf(html)
        if not data.startswith(b"%PDF-"):
            raise PdfRenderError("Chromium wrote something that is not a PDF")
        return data
