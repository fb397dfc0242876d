"""The web viewer in a real browser: `voxelpipe serve`, a segmented study, its viewer link opened in
headless Chromium (the system's, WebGL2 through SwiftShader: no GPU, no browser download).

One served study for every check here (the module's fixtures): segmenting it is the slow part (the
bundled scan at 2 mm). Its
viewer page is opened before the scan is uploaded, so the page follows the whole run over the real
live-progress WebSocket of `voxelpipe serve`, then draws the result. VOXELPIPE_WRITE_DOCS_IMAGES=1
writes the screenshot to docs/images/viewer.png.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from infra.cli.client import Client
from infra.local.samples import mni152_t1_path
from tests.fixtures.pdf_pages import hooked_numbers, ink_variance, pdf_pages, value_at, write_docs_image
from tests.fixtures.scans import mni152_at_2mm
from tests.fixtures.serve import VOXELPIPE, voxelpipe_serve
from voxelpipe.api.auth import DEV_SECRET_FILE_ENV, Role, mint_dev_token
from voxelpipe.viewer.assets import NIIVUE_URL_PATH, niivue_missing

CHROMIUM = Path(os.environ.get("VOXELPIPE_CHROMIUM", "/usr/bin/chromium"))
DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "viewer.png"
SUBJECT = "sub-viewer"
WRITE_DOCS_IMAGES = os.environ.get("VOXELPIPE_WRITE_DOCS_IMAGES") == "1"
# WebGL2 on the CPU: SwiftShader through ANGLE (Chromium refuses software WebGL without the flag).
CHROMIUM_ARGS = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--ignore-gpu-blocklist"]

playwright_api = pytest.importorskip("playwright.sync_api")
pytestmark = [
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (VOXELPIPE_CHROMIUM)"),
    pytest.mark.skipif(niivue_missing() is not None, reason=niivue_missing() or ""),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    secret = tmp_path_factory.getbasetemp() / "dev-token-secret"
    # The module's fixtures mint tokens too: the session's secret before the per-test one is set.
    with pytest.MonkeyPatch.context() as patch, voxelpipe_serve(secret) as url:
        patch.setenv(DEV_SECRET_FILE_ENV, str(secret))
        yield url


def _link(served: str, path: str, role: Role = Role.VIEWER, tenant: str = "lab-a") -> httpx.Response:
    return httpx.post(
        f"{served}{path}", headers={"authorization": f"Bearer {mint_dev_token(tenant, role)}"}, timeout=30
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _open(
    browser: Any,
    url: str,
    wait_for: str,
    size: tuple[int, int] = (960, 640),
    before: Callable[[Any], None] | None = None,
) -> tuple[Any, list[str]]:
    # Small: SwiftShader draws every pixel on the CPU (the 3D render most of all).
    page = browser.new_page(viewport={"width": size[0], "height": size[1]})
    if before is not None:
        before(page)
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.goto(url)
    page.wait_for_selector(wait_for, state="attached", timeout=120_000)
    return page, errors


# Each step item the page shows, as it shows it (the page re-renders its list as news arrives).
STEPS_SHOWN = """
window.voxelpipeStepsShown = [];
new MutationObserver((records) => {
  for (const record of records) for (const node of record.addedNodes) {
    if (node.nodeType === 1 && node.matches("li[data-step]")) {
      window.voxelpipeStepsShown.push(`${node.dataset.step} ${node.dataset.status}`);
    }
  }
}).observe(document, { childList: true, subtree: true });
"""


@dataclass
class Watched:
    """The module's study, watched in its viewer page from before its upload to its end."""

    page: Any
    url: str
    view: dict[str, Any]
    errors: list[str]
    frames: list[dict[str, Any]] = field(default_factory=list)  # what the live socket sent the page
    sockets: list[str] = field(default_factory=list)  # the URLs the page opened sockets to


@pytest.fixture(scope="module")
def watched(served: str, browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watched]:
    client = Client(served, mint_dev_token("lab-a", Role.UPLOADER))
    scan = tmp_path_factory.mktemp("viewer") / "t1w.nii.gz"
    # The bundled brain at 2 mm: segmenting it, and SwiftShader drawing it, is an eighth of the
    # full scan's work; what is checked here (live steps, labels, legend, report) is the same. The
    # docs' screenshot is of the full scan.
    if WRITE_DOCS_IMAGES:
        shutil.copyfile(mni152_t1_path(), scan)
    else:
        scan.write_bytes(mni152_at_2mm())
    analyses = ["qc", "volumetrics"]
    created = client.create_study([scan], analyses=analyses, subject_ref=SUBJECT, age=70, sex="F")
    link = _link(served, f"/studies/{created['study_id']}/viewer-link")
    assert link.status_code == 200, link.text
    url = link.json()["url"]
    frames: list[dict[str, Any]] = []
    sockets: list[str] = []

    def observe(page: Any) -> None:
        def opened(socket: Any) -> None:
            sockets.append(socket.url)
            socket.on("framereceived", lambda payload: frames.append(json.loads(payload)))

        page.on("websocket", opened)
        page.add_init_script(STEPS_SHOWN)

    size = (1280, 800) if WRITE_DOCS_IMAGES else (960, 640)
    page, errors = _open(browser, url, "#live[data-state='live'], html[data-viewer-error]", size, observe)
    try:
        assert page.evaluate("document.documentElement.dataset.viewerError") is None, page.inner_text("body")
        (target,) = created["uploads"]
        client.upload(target, scan)
        view = client.wait(created["study_id"], timeout_s=300)
        assert view["status"] == "COMPLETED", view
        page.wait_for_selector("html[data-viewer-ready='true'], html[data-viewer-error]", timeout=120_000)
        yield Watched(page, url, view, errors, frames, sockets)
    finally:
        page.close()


# The canvas's pixels, counted in the page: NiiVue draws the scene, and its drawing buffer is read
# back in the same task (before the browser presents it, so without preserveDrawingBuffer). A
# screenshot shows the same pixels but took a minute on a loaded 2-core machine (SwiftShader).
CANVAS_COLOURS = """([colours, tolerance]) => {
  const nv = window.voxelpipeNiivue;
  nv.drawScene();
  const gl = nv.gl;
  const width = gl.drawingBufferWidth, height = gl.drawingBufferHeight;
  const pixels = new Uint8Array(width * height * 4);
  gl.readPixels(0, 0, width, height, gl.RGBA, gl.UNSIGNED_BYTE, pixels);
  const wanted = colours.map((c) => [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16)));
  const counts = wanted.map(() => 0);
  let sum = 0, squares = 0;
  for (let p = 0; p < pixels.length; p += 4) {
    const grey = (pixels[p] + pixels[p + 1] + pixels[p + 2]) / 3;
    sum += grey; squares += grey * grey;
    wanted.forEach((c, k) => {
      if (Math.abs(pixels[p] - c[0]) <= tolerance && Math.abs(pixels[p + 1] - c[1]) <= tolerance
          && Math.abs(pixels[p + 2] - c[2]) <= tolerance) counts[k] += 1;
    });
  }
  const n = pixels.length / 4;
  const std = Math.sqrt(squares / n - (sum / n) ** 2);
  return { counts: Object.fromEntries(colours.map((c, k) => [c, counts[k]])), std };
}"""


def _canvas_colours(page: Any, colours: list[str], tolerance: int = 6) -> tuple[dict[str, int], float]:
    """How many of the canvas's pixels are each colour, and the spread of its greys (0: blank)."""
    found = page.evaluate(CANVAS_COLOURS, [colours, tolerance])
    return found["counts"], found["std"]


def test_the_viewer_follows_the_run_live_then_draws_the_study_with_its_labels_and_measures(
    served: str, watched: Watched
):
    page, study_id = watched.page, watched.view["study_id"]
    assert watched.url.startswith(f"{served}/viewer/studies/{study_id}#grant=")
    error = page.evaluate("document.documentElement.dataset.viewerError")
    assert error is None, (page.inner_text("#message"), watched.errors)
    # Live progress: one socket, opened with the link's grant (never the user's token), subscribed
    # to the study; every status change after the page opened came, in order, and each step's news.
    (socket,) = watched.sockets
    assert socket.startswith("ws://") and f"token={watched.url.partition('#grant=')[2]}" in socket
    assert watched.frames[0]["type"] == "subscribed"
    news = [frame for frame in watched.frames if frame.get("study_id") == study_id]
    statuses = [frame["status"] for frame in news if frame["type"] == "status"]
    assert statuses == ["VALIDATING", "VALIDATED", "QUEUED", "RUNNING", "COMPLETED"]
    steps = {(frame["step"], frame["status"]) for frame in news if frame["type"] == "step"}
    assert {("analysis:tissue-seg", "RUNNING"), ("finalize", "SUCCEEDED")} <= steps, steps
    # The page showed the steps as they went (not only at the end).
    shown = page.evaluate("window.voxelpipeStepsShown")
    assert "analysis:tissue-seg RUNNING" in shown and "finalize SUCCEEDED" in shown, shown
    assert "COMPLETED" in page.inner_text("#status")
    assert page.get_attribute("#live", "data-state") == "live"
    legend = page.eval_on_selector_all("li[data-colour]", "items => items.map(i => i.dataset.colour)")
    assert legend == ["#2878ff", "#28c850", "#ffd228"]  # CSF, GM, WM
    assert "gm_ml" in page.inner_text("#measures")
    if WRITE_DOCS_IMAGES:
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DOCS_IMAGE), animations="disabled", timeout=60_000)
    # Opaque labels: their colours are then exactly the legend's where the segmentation is.
    page.eval_on_selector("#opacity", "e => { e.value = '1'; e.dispatchEvent(new Event('input')) }")
    counts, spread = _canvas_colours(page, legend)
    assert spread > 10, "the canvas is blank"
    assert all(count > 200 for count in counts.values()), counts
    # Turning grey matter off removes its colour from the image.
    page.locator("input[data-analysis='tissue-seg'][data-index='2']").uncheck()
    hidden, _ = _canvas_colours(page, legend)
    assert hidden["#28c850"] < counts["#28c850"] / 20, (counts, hidden)
    assert hidden["#2878ff"] > counts["#2878ff"] / 2  # the others stay
    assert watched.errors == []


def test_voxelpipe_report_fetches_the_study_s_report_whose_numbers_are_results_json_s(
    served: str, watched: Watched, tmp_path: Path
):
    """`voxelpipe report` fetches both files; the PDF's pages are not blank; the HTML's numbers are
    results.json's (the module's study: its report has the segmentation's overlays)."""
    study_id = watched.view["study_id"]
    document = Client(served, mint_dev_token("lab-a", Role.VIEWER)).results(study_id)["results"]
    env = {**os.environ, "VOXELPIPE_API_URL": served, "VOXELPIPE_TOKEN": mint_dev_token("lab-a", Role.VIEWER)}
    run = subprocess.run(
        [str(VOXELPIPE), "report", study_id, "--out", str(tmp_path / "report")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert document["report"]["pdf"]["status"] == "available", document["report"]
    pdf, html = tmp_path / "report" / "report.pdf", tmp_path / "report" / "report.html"
    pages = pdf_pages(pdf, tmp_path / "pages")
    # Measures and flags; the images (page break); provenance (page break).
    assert len(pages) == 3
    assert all(ink_variance(page) > 50 for page in pages)
    write_docs_image(pdf, tmp_path)
    numbers = hooked_numbers(html.read_text()).numbers
    assert {"measure:volumetrics.gm_ml", "measure:qc.foreground.volume_ml", "doc:timings_ms.prepare"} <= set(
        numbers
    )
    for hook, text in numbers.items():
        assert float(text) == value_at(document, hook), hook
    assert SUBJECT in html.read_text() and "t1w.nii.gz" not in html.read_text()


def test_a_subject_link_lists_the_subject_s_studies(served: str, watched: Watched, browser: Any):
    link = _link(served, f"/subjects/{SUBJECT}/viewer-link")
    assert link.status_code == 200, link.text
    # The page lists the studies and opens the newest completed one (drawing it is the test above's,
    # not waited for again: SwiftShader is slow).
    opened = "#studies button[aria-current='true'], html[data-viewer-error]"
    page, errors = _open(browser, link.json()["url"], opened, size=(480, 360))
    try:
        assert page.evaluate("document.documentElement.dataset.viewerError") is None, page.inner_text("body")
        page.wait_for_selector(f"#title:has-text('{watched.view['study_id']}')", timeout=30_000)
        studies = page.eval_on_selector_all("#studies button", "b => b.map(x => x.dataset.study)")
        assert studies == [watched.view["study_id"]]
        # Nothing of the subject's is running: no socket to keep open, and the page says so.
        assert page.get_attribute("#live", "data-state") == "idle"
        assert errors == []
    finally:
        page.close()
    # Another tenant has no such subject: the same 404 as one that does not exist.
    assert _link(served, f"/subjects/{SUBJECT}/viewer-link", tenant="lab-b").status_code == 404


def test_an_expired_or_forged_link_says_so(served: str, watched: Watched, browser: Any):
    url = f"{served}/viewer/studies/{watched.view['study_id']}#grant=not.a.grant"
    page, _ = _open(browser, url, "html[data-viewer-error]")
    try:
        assert page.evaluate("document.documentElement.dataset.viewerError") == "invalid_grant"
        assert "not valid" in page.inner_text("#message")
    finally:
        page.close()


def test_the_pinned_niivue_is_served_with_a_long_cache(served: str):
    response = httpx.get(f"{served}{NIIVUE_URL_PATH}", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert "immutable" in response.headers["cache-control"]
    page = httpx.get(f"{served}/viewer/studies/x", timeout=30)
    assert (
        page.headers["content-type"].startswith("text/html") and page.headers["cache-control"] == "no-cache"
    )
