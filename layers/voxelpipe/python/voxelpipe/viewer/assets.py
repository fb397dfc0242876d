"""The viewer's static files, and the pinned NiiVue bundle among them.

NiiVue is fetched from the npm registry at build time (`make setup` runs `python -m infra.niivue`),
checked against `NIIVUE_INTEGRITY` and put under `static/niivue/{NIIVUE_VERSION}/`, which git
ignores and the Lambda layer ships. Nothing downloads it at run time: without it the viewer's pages
answer that `make setup` has not run. To bump it, change the version and the registry's `dist.integrity`
here together (docs/viewer.md).
"""

from __future__ import annotations

from pathlib import Path

NIIVUE_PACKAGE = "@niivue/niivue"
NIIVUE_VERSION = "0.69.0"
# The registry's `dist.integrity` for NIIVUE_VERSION (SRI: sha512 of the tarball, base64).
NIIVUE_INTEGRITY = (
    "sha512-YMjQvJgD1W2b7DuoxkwlC4VxbrgIePRJ5qyQzXKxi2v2MBVg285P/CIQyg46oDDGDIcaNlbd+MhtO/edMbXJkA=="
)
NIIVUE_LICENCE = "BSD-2-Clause"
# The tarball's self-contained ES module: no import of other chunks or npm names, no worker or
# wasm fetched by URL (its wasm decoders are inlined), so the browser loads it with one request.
# (dist/index.min.js is not a module to import: it exports the bundle as a URL-encoded string.)
NIIVUE_BUNDLE_MEMBER = "package/dist/index.js"

STATIC_DIR = Path(__file__).parent / "static"
NIIVUE_DIR = STATIC_DIR / "niivue" / NIIVUE_VERSION
NIIVUE_BUNDLE = NIIVUE_DIR / "niivue.js"
# The tarball has no LICENSE file: this is the project's (github.com/niivue/niivue), shipped beside it.
NIIVUE_LICENSE_FILE = STATIC_DIR / "NIIVUE-LICENSE.txt"
# The URL path the pages import NiiVue from: versioned, so it may be cached for a long time.
NIIVUE_URL_PATH = f"/viewer/static/niivue/{NIIVUE_VERSION}/niivue.js"


def niivue_missing() -> str | None:
    """Why the NiiVue bundle cannot be served (not fetched), or None when it is in place."""
    if NIIVUE_BUNDLE.is_file():
        return None
    return (
        f"the viewer's NiiVue bundle ({NIIVUE_PACKAGE} {NIIVUE_VERSION}) is not installed at "
        f"{NIIVUE_BUNDLE}: run `make setup` (it fetches and checks it)"
    )
