"""Building the Lambda layers for the runtime they run on (`make layers`).

One resolution of pyproject's pinned dependencies, as manylinux wheels for CPython 3.12, split into
the dependency groups of `voxelpipe.function_specs` (one layer each: a function gets only the
groups it imports), plus the `voxelpipe` package itself. Every layer ships bytecode compiled by a
real Python 3.12, the Lambda runtime's: layers are mounted read-only, so without it the runtime
compiles every module on every cold start. Tests, type stubs and the botocore models of services
the code never calls are left out.

The bytecode is `unchecked-hash`: the asset zips CDK publishes reset every file's time, which
would invalidate timestamp-checked bytecode, and the layer's sources never change once built.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from voxelpipe.function_specs import DEPENDENCY_GROUPS, FUNCTIONS, OPTIONAL_FUNCTIONS, DependencyGroup
from voxelpipe.viewer.assets import niivue_missing

ROOT = Path(__file__).resolve().parent.parent
LAYERS_DIR = ROOT / "build" / "layers"
VOXELPIPE_SOURCE = ROOT / "layers" / "voxelpipe"
VOXELPIPE_LAYER = "voxelpipe"
MANIFEST = "manifest.json"

LAMBDA_PYTHON_VERSION = (3, 12)
# The python3.12 Lambda runtime is Amazon Linux 2023 (glibc 2.34): manylinux_2_28 wheels run there.
LAMBDA_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64")
# The environment markers of pyproject's requirements are evaluated for the runtime.
_LAMBDA_MARKERS = {
    "python_version": "3.12",
    "python_full_version": "3.12.0",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}
# botocore's models of the services the code calls (boto3.client(...) in voxelpipe.adapters;
# DynamoDB through PynamoDB and Powertools' idempotency), and those its credential chain may call.
BOTOCORE_SERVICES = frozenset(
    {
        "batch",
        "dynamodb",
        "events",
        "s3",
        "secretsmanager",
        "sqs",
        "stepfunctions",
        "sts",
        "sso",
        "sso-oidc",
    }
)
# Packages' own test suites; `testing` helpers stay (numpy and nibabel import them).
_DROPPED_DIRS = frozenset({"tests", "__pycache__"})
_DROPPED_SUFFIXES = (".pyi",)
# Console scripts: nothing runs them in a Lambda.
_DROPPED_TOP = frozenset({"bin"})


@dataclass(frozen=True)
class BuiltLayer:
    name: str
    bytes: int
    distributions: tuple[str, ...]


class LayerBuildError(RuntimeError):
    pass


def find_lambda_python() -> Path:
    """A Python 3.12 interpreter: $LAMBDA_PYTHON, else python3.12 on PATH, else pyenv's."""
    wanted = ".".join(map(str, LAMBDA_PYTHON_VERSION))
    candidates: list[str] = []
    if os.environ.get("LAMBDA_PYTHON"):
        candidates.append(os.environ["LAMBDA_PYTHON"])
    on_path = shutil.which(f"python{wanted}")
    if on_path:
        candidates.append(on_path)
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/{wanted}*/bin/python{wanted}")))
    for candidate in candidates:
        if _python_version(candidate) == LAMBDA_PYTHON_VERSION:
            return Path(candidate)
    raise LayerBuildError(
        f"no Python {wanted} interpreter found (tried {', '.join(candidates) or 'nothing'}): the layers' "
        f"bytecode must come from the Lambda runtime's Python. Install one (pyenv, uv python install "
        f"{wanted}, a python-build-standalone tarball) and point LAMBDA_PYTHON at it"
    )


def _python_version(python: str) -> tuple[int, int] | None:
    try:
        # A pyenv shim for a version that isn't selected exits non-zero: that is not a Python 3.12.
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None
    return (int(out[0]), int(out[1])) if len(out) == 2 else None


def pinned_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    with pyproject.open("rb") as file:
        return [Requirement(line) for line in tomllib.load(file)["project"]["dependencies"]]


def group_requirements(
    requirements: Iterable[Requirement], groups: Mapping[DependencyGroup, tuple[str, ...]] = DEPENDENCY_GROUPS
) -> dict[DependencyGroup, list[Requirement]]:
    """pyproject's requirements by group; each must be in exactly one group."""
    by_name = {canonicalize_name(req.name): req for req in requirements}
    grouped: dict[DependencyGroup, list[Requirement]] = {}
    placed: dict[str, DependencyGroup] = {}
    for group, names in groups.items():
        for name in map(canonicalize_name, names):
            if name not in by_name:
                raise LayerBuildError(f"group {group} names {name}, which pyproject's dependencies lack")
            if name in placed:
                raise LayerBuildError(f"{name} is in two groups: {placed[name]} and {group}")
            placed[name] = group
            grouped.setdefault(group, []).append(by_name[name])
    ungrouped = sorted(set(by_name) - set(placed))
    if ungrouped:
        raise LayerBuildError(
            f"pyproject dependencies in no group (voxelpipe.function_specs.DEPENDENCY_GROUPS): {ungrouped}"
        )
    return grouped


def closure(roots: Iterable[Requirement], installed: Mapping[str, metadata.Distribution]) -> set[str]:
    """The names of the distributions `roots` need, themselves included, among `installed`."""
    needed: set[str] = set()
    pending: list[tuple[Requirement, frozenset[str]]] = [(req, frozenset(req.extras)) for req in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while pending:
        req, extras = pending.pop()
        name = canonicalize_name(req.name)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        dist = installed.get(name)
        if dist is None:
            continue  # a requirement whose marker excluded it from the install
        needed.add(name)
        for line in dist.requires or []:
            dep = Requirement(line)
            if dep.marker is None or any(_marker_holds(dep.marker, extra) for extra in ({""} | set(extras))):
                pending.append((dep, frozenset(dep.extras)))
    return needed


def _marker_holds(marker: Marker, extra: str) -> bool:
    return marker.evaluate({**_LAMBDA_MARKERS, "extra": extra})


def installed_distributions(path: Iterable[Path] | None = None) -> dict[str, metadata.Distribution]:
    """The distributions in `path` folders (None: this interpreter's sys.path), by canonical name."""
    found = (
        metadata.distributions(path=[str(p) for p in path]) if path is not None else metadata.distributions()
    )
    out: dict[str, metadata.Distribution] = {}
    for dist in found:
        out.setdefault(canonicalize_name(dist.metadata["Name"]), dist)
    return out


def split_groups(
    grouped: Mapping[DependencyGroup, list[Requirement]], installed: Mapping[str, metadata.Distribution]
) -> dict[DependencyGroup, set[str]]:
    """Each group's distributions, none in two groups: what CORE needs ships in CORE only (every zip
    function has it); two other groups sharing a distribution is refused (neither could ship it
    without the other's functions missing it or loading it twice)."""
    core = closure(grouped[DependencyGroup.CORE], installed)
    split: dict[DependencyGroup, set[str]] = {DependencyGroup.CORE: core}
    owner = dict.fromkeys(core, DependencyGroup.CORE)
    for group, roots in grouped.items():
        if group is DependencyGroup.CORE:
            continue
        own = closure(roots, installed) - core
        for name in own:
            if name in owner:
                raise LayerBuildError(
                    f"{name} is needed by groups {owner[name]} and {group}: name it in one group "
                    f"every function of both takes (CORE), in voxelpipe.function_specs"
                )
            owner[name] = group
        split[group] = own
    return split


def function_groups() -> dict[str, tuple[DependencyGroup, ...]]:
    """The dependency layers of each zip function, by name."""
    return {spec.name: spec.dependencies for spec in (*FUNCTIONS, *OPTIONAL_FUNCTIONS) if not spec.image}


def pip_install(requirements: Iterable[Requirement], target: Path) -> None:
    """The wheels for the Lambda platform, unpacked into `target` without bytecode (this venv's
    Python is not the runtime's)."""
    platforms = [arg for platform in LAMBDA_PLATFORMS for arg in ("--platform", platform)]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-compile",
            "--implementation",
            "cp",
            "--python-version",
            ".".join(map(str, LAMBDA_PYTHON_VERSION)),
            "--only-binary=:all:",
            *platforms,
            "--target",
            str(target),
            *(str(req) for req in requirements),
        ],
        check=True,
    )


def move_distributions(
    names: Iterable[str], installed: Mapping[str, metadata.Distribution], staging: Path, dest: Path
) -> None:
    """Moves the files of the named distributions (their RECORD) from `staging` into `dest`."""
    for name in sorted(names):
        files = installed[name].files
        if files is None:
            raise LayerBuildError(f"{name} has no RECORD: can't tell its files")
        for file in files:
            source = staging / file
            if not source.exists():
                continue
            target = dest / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(source, target)


def prune(site: Path, services: frozenset[str] = BOTOCORE_SERVICES) -> None:
    """Drops what no Lambda loads: test suites, type stubs, bytecode of other Pythons, scripts and
    the botocore/boto3 models of services the code never calls."""
    for top in _DROPPED_TOP:
        shutil.rmtree(site / top, ignore_errors=True)
    for stubs in site.glob("*-stubs"):
        shutil.rmtree(stubs)
    for path in sorted(site.rglob("*"), reverse=True):  # children before their folders
        if path.is_dir() and path.name in _DROPPED_DIRS:
            shutil.rmtree(path)
        elif path.is_file() and (path.suffix in _DROPPED_SUFFIXES or path.suffix == ".pyc"):
            path.unlink()
    for models in (site / "botocore" / "data", site / "boto3" / "data"):
        if models.is_dir():
            for service in models.iterdir():
                if service.is_dir() and service.name not in services:
                    shutil.rmtree(service)


def compile_bytecode(python: Path, site: Path) -> None:
    """Compiles every module under `site` with the runtime's Python: __pycache__/*.cpython-312.pyc
    next to each source, checked against nothing (see the module's docstring)."""
    result = subprocess.run(
        [
            str(python),
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "--invalidation-mode",
            "unchecked-hash",
            str(site),
        ],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise LayerBuildError(f"compileall failed under {site}:\n{result.stdout}{result.stderr}")


def build_voxelpipe_layer(python: Path, dest: Path, source: Path = VOXELPIPE_SOURCE) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    compile_bytecode(python, dest / "python")


def source_digest(source: Path = VOXELPIPE_SOURCE) -> str:
    """A digest of the voxelpipe layer's sources: the stack refuses a layer built from others."""
    digest = hashlib.sha256()
    for path in sorted(source.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            digest.update(str(path.relative_to(source)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def tree_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in path.rglob("*") if file.is_file() and not file.is_symlink())


def build_layers(
    out: Path = LAYERS_DIR,
    *,
    python: Path | None = None,
    requirements: list[Requirement] | None = None,
    groups: Mapping[DependencyGroup, tuple[str, ...]] = DEPENDENCY_GROUPS,
    voxelpipe_source: Path = VOXELPIPE_SOURCE,
) -> list[BuiltLayer]:
    """Builds `out/{group}/python` for each dependency group and `out/voxelpipe/python`, and
    `out/manifest.json` describing them. `requirements` (default: pyproject's) and `groups` let a
    test build a small set."""
    python = python or find_lambda_python()
    grouped = group_requirements(requirements if requirements is not None else pinned_requirements(), groups)
    out.mkdir(parents=True, exist_ok=True)
    built: list[BuiltLayer] = []
    with tempfile.TemporaryDirectory(prefix="layers-", dir=out) as tmp:
        staging = Path(tmp) / "site"
        # One resolution for every group: the versions the groups ship can't disagree.
        pip_install([req for reqs in grouped.values() for req in reqs], staging)
        installed = installed_distributions([staging])
        for group, names in split_groups(grouped, installed).items():
            site = out / group.value / "python"
            shutil.rmtree(site.parent, ignore_errors=True)
            site.mkdir(parents=True)
            move_distributions(names, installed, staging, site)
            prune(site)
            compile_bytecode(python, site)
            built.append(BuiltLayer(group.value, tree_bytes(site.parent), tuple(sorted(names))))
    build_voxelpipe_layer(python, out / VOXELPIPE_LAYER, voxelpipe_source)
    built.append(BuiltLayer(VOXELPIPE_LAYER, tree_bytes(out / VOXELPIPE_LAYER), ()))
    manifest = {
        "python": ".".join(map(str, LAMBDA_PYTHON_VERSION)),
        "cache_tag": f"cpython-{''.join(map(str, LAMBDA_PYTHON_VERSION))}",
        "voxelpipe_digest": source_digest(voxelpipe_source),
        "layers": {
            layer.name: {"bytes": layer.bytes, "distributions": list(layer.distributions)} for layer in built
        },
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return built


def function_sizes(layers: Mapping[str, int]) -> dict[str, int]:
    """Each zip function's code + layers, unzipped, from the layers' sizes by name."""
    sizes: dict[str, int] = {}
    for name, groups in function_groups().items():
        code = tree_bytes(ROOT / "functions" / name)
        sizes[name] = code + layers[VOXELPIPE_LAYER] + sum(layers[group.value] for group in groups)
    return sizes


def stand_in_layers(out: Path) -> Path:
    """Empty layer folders, for a synthesis whose layers' contents don't matter (tests, the local
    cloud): the template is the same but for the assets' hashes."""
    for name in (VOXELPIPE_LAYER, *(group.value for group in DependencyGroup)):
        (out / name / "python").mkdir(parents=True, exist_ok=True)
    return out


def stale_layers(out: Path = LAYERS_DIR) -> str | None:
    """Why the layers in `out` can't be deployed (missing, or built from other voxelpipe sources);
    None when they can."""
    manifest = out / MANIFEST
    if not manifest.is_file():
        return f"{out} has no layers: run `make layers`"
    built = json.loads(manifest.read_text())
    missing = [
        name
        for name in (VOXELPIPE_LAYER, *(group.value for group in DependencyGroup))
        if name not in built["layers"] or not (out / name / "python").is_dir()
    ]
    if missing:
        return f"{out} lacks the layers {', '.join(missing)}: run `make layers`"
    if built["voxelpipe_digest"] != source_digest():
        return (
            f"{out / VOXELPIPE_LAYER} was built from other sources than layers/voxelpipe: run `make layers`"
        )
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=LAYERS_DIR)
    args = parser.parse_args(argv)
    # The viewer's NiiVue ships in the voxelpipe layer: a layer without it serves no viewer.
    if missing := niivue_missing():
        sys.exit(f"make layers: {missing}")
    try:
        built = build_layers(args.out)
    except LayerBuildError as error:
        sys.exit(f"make layers: {error}")
    mb = 1024 * 1024
    for layer in built:
        print(f"layer {layer.name:10} {layer.bytes / mb:7.1f} MB  {' '.join(layer.distributions)}")
    for name, size in function_sizes({layer.name: layer.bytes for layer in built}).items():
        print(f"function {name:12} {size / mb:7.1f} MB unzipped (code + layers)")


if __name__ == "__main__":
    main()
