"""The synthesized template, cached on disk by a hash of everything that shapes it.

Synthesis starts a Node.js process and takes several seconds; the local cloud starts often
(every demo, every end-to-end test), so it reuses the last template while its sources are unchanged.
"""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from typing import Any

from infra.stack import ROOT
from infra.synth import synthesize_template

CACHE_DIR = ROOT / "build" / "local"
_SOURCES = ("infra", "functions", "layers/voxelpipe/python/voxelpipe")


def sources_digest() -> str:
    digest = hashlib.sha256()
    for package in ("aws-cdk-lib", "constructs", "cdk-nag"):
        digest.update(f"{package}=={metadata.version(package)}\n".encode())
    # cdk.json's context shapes the template too (retention, transition days, ...).
    digest.update((ROOT / "cdk.json").read_bytes())
    for top in _SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cached_template() -> dict[str, Any]:
    path = CACHE_DIR / f"template-{sources_digest()}.json"
    if path.is_file():
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    template = synthesize_template()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    for stale in CACHE_DIR.glob("template-*.json"):
        stale.unlink()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(template))
    tmp.replace(path)
    return template
