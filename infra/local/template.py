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


def cached_template(context: dict[str, Any] | None = None) -> dict[str, Any]:
    """The template for CDK `context` (none: the default deployment), synthesized when its sources
    or context changed. One file per context is kept (tests synthesize with their own)."""
    context_digest = hashlib.sha256(json.dumps(context or {}, sort_keys=True).encode()).hexdigest()[:8]
    name = "template" if not context else f"template-ctx{context_digest}"
    path = CACHE_DIR / f"{name}-{sources_digest()}.json"
    if path.is_file():
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    template = synthesize_template(context)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    for stale in CACHE_DIR.glob(f"{name}-*.json"):
        if stale.stem.count("-") == name.count("-") + 1:  # this context's, not another's
            stale.unlink()
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(template))
    tmp.replace(path)
    return template
