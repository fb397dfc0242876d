"""The Lambda layers (infra/layers.py): bytecode from the runtime's Python, what is left out, the
sizes of the functions, and each handler importing with only the dependency groups it declares."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from infra.layers import (
    LAYERS_DIR,
    MANIFEST,
    VOXELPIPE_LAYER,
    LayerBuildError,
    build_layers,
    find_lambda_python,
    function_sizes,
    group_requirements,
    installed_distributions,
    pinned_requirements,
    split_groups,
    stale_layers,
)
from voxelpipe.function_specs import FUNCTIONS, OPTIONAL_FUNCTIONS, DependencyGroup
from voxelpipe.wiring import EnvVar

ROOT = Path(__file__).resolve().parents[2]
MAX_FUNCTION_BYTES = 150 * 1024 * 1024  # code + layers, unzipped (Lambda's limit is 250 MB)


def _lambda_python() -> Path:
    try:
        return find_lambda_python()
    except LayerBuildError as error:
        pytest.skip(f"no Python 3.12 to compile the layers' bytecode with: {error}")


@pytest.fixture(scope="module")
def small_layers(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The voxelpipe layer and a one-wheel dependency layer (pyjwt, pinned), built for real."""
    python = _lambda_python()
    out = tmp_path_factory.mktemp("layers")
    pyjwt = next(req for req in pinned_requirements() if req.name == "pyjwt")
    pyjwt.extras = set()  # the wheel alone (its crypto extra brings cryptography and cffi)
    build_layers(out, python=python, requirements=[pyjwt], groups={DependencyGroup.CORE: ("pyjwt",)})
    return python, out


def _run(python: Path, script: str, path: list[Path], *flags: str) -> subprocess.CompletedProcess[str]:
    code = f"import sys\nsys.path[:0] = {[str(p) for p in path]!r}\n{script}"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    return subprocess.run(
        [str(python), "-s", *flags, "-c", code], env=env, capture_output=True, text=True, check=True
    )


def test_the_layers_carry_bytecode_the_runtime_python_loads(small_layers):
    python, out = small_layers
    sites = [out / "core" / "python", out / VOXELPIPE_LAYER / "python"]
    pycs = [pyc for site in sites for pyc in site.rglob("*.pyc")]
    assert pycs and {pyc.name.split(".")[-2] for pyc in pycs} == {"cpython-312"}
    magic = _run(python, "import importlib.util; print(importlib.util.MAGIC_NUMBER.hex())", []).stdout.strip()
    assert {pyc.read_bytes()[:4].hex() for pyc in pycs} == {magic}
    # Each source has its bytecode beside it, and 3.12 imports from it (-v names the file it used)
    # without writing any (-B: as on Lambda's read-only mount).
    sources = [src for site in sites for src in site.rglob("*.py")]
    assert all((src.parent / "__pycache__" / f"{src.stem}.cpython-312.pyc").is_file() for src in sources)
    loaded = _run(python, "import jwt, voxelpipe.keys", sites, "-B", "-v").stderr
    for module in ("jwt/__pycache__/__init__", "voxelpipe/__pycache__/keys"):
        assert f"code object from '{out}" in loaded and f"{module}.cpython-312.pyc'" in loaded, module


def test_the_layers_leave_out_tests_stubs_and_scripts(small_layers):
    _, out = small_layers
    files = [p.relative_to(out) for p in out.rglob("*")]
    assert not [p for p in files if "tests" in p.parts or p.suffix == ".pyi" or p.parts[2:3] == ("bin",)]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["cache_tag"] == "cpython-312"
    assert manifest["layers"]["core"]["distributions"] == ["pyjwt"]
    # The package's data files travel with it (the de-identification profile).
    assert list((out / VOXELPIPE_LAYER / "python" / "voxelpipe" / "dicom").glob("*.csv"))


def test_the_built_functions_stay_within_150_mb():
    """Of the layers `make layers` built (skipped when it hasn't run: it takes a minute)."""
    problem = stale_layers(LAYERS_DIR)
    if problem is not None:
        pytest.skip(problem)
    manifest = json.loads((LAYERS_DIR / MANIFEST).read_text())
    assert manifest["cache_tag"] == "cpython-312"
    # Every .pyc in the built layers is the runtime's: Lambda mounts layers read-only, and a
    # module without its cpython-312 file is compiled again at every cold start.
    compiled = list(LAYERS_DIR.rglob("*.pyc"))
    assert compiled and {path.name.split(".")[-2] for path in compiled} == {"cpython-312"}
    sizes = function_sizes({name: layer["bytes"] for name, layer in manifest["layers"].items()})
    assert sizes and max(sizes.values()) <= MAX_FUNCTION_BYTES, sizes


def _blocked_modules(groups: tuple[DependencyGroup, ...]) -> list[str]:
    """Top-level modules of every installed distribution outside `groups` (first-party aside)."""
    installed = installed_distributions()
    split = split_groups(group_requirements(pinned_requirements()), installed)
    allowed = set().union(*(split[group] for group in groups)) | {"voxelpipe"}
    blocked = {
        module
        for module, dists in metadata.packages_distributions().items()
        if not any(canonicalize_name(dist) in allowed for dist in dists)
    }
    return sorted(blocked - {"voxelpipe", "functions", "infra", "tests"} - set(sys.stdlib_module_names))


# Installed here but in no layer: an import of one of these fails, as it would in Lambda.
_BLOCKER = """
import importlib.abc, sys
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r} (not in this function's layers)", name=name)
        return None
sys.meta_path.insert(0, Absent())
"""


@pytest.mark.parametrize(
    "spec", [s for s in (*FUNCTIONS, *OPTIONAL_FUNCTIONS) if not s.image], ids=lambda s: s.name
)
def test_each_handler_imports_with_only_its_declared_dependency_groups(spec):
    blocked = _blocked_modules(spec.dependencies)
    assert "numpy" in blocked or DependencyGroup.IMAGING in spec.dependencies
    script = f"BLOCKED = {set(blocked)!r}\n{_BLOCKER}\nimport functions.{spec.name}.handler\n"
    env = {**os.environ, **{var.value: "1" for var in EnvVar}, "AWS_DEFAULT_REGION": "us-east-1"}
    env.pop("LAMBDA_TASK_ROOT", None)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_handler_needing_an_undeclared_group_fails_the_check():
    blocked = _blocked_modules((DependencyGroup.CORE,))
    script = f"BLOCKED = {set(blocked)!r}\n{_BLOCKER}\nimport functions.ingest.handler\n"
    env = {**os.environ, **{var.value: "1" for var in EnvVar}, "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "not in this function's layers" in result.stderr
