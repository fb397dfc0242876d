"""The GPU benchmark's wheel list (bench/gpu_requirements.txt) stays in step with the project."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _pins(requirements: list[Requirement]) -> dict[str, str]:
    """name -> version of each requirement pinned with a single `==`."""
    pins = {}
    for requirement in requirements:
        specifiers = list(requirement.specifier)
        if len(specifiers) == 1 and specifiers[0].operator == "==":
            pins[canonicalize_name(requirement.name)] = specifiers[0].version
    return pins


def _bench_requirements() -> list[Requirement]:
    text = (ROOT / "bench" / "gpu_requirements.txt").read_text()
    return [
        Requirement(line) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def test_every_wheel_of_the_gpu_bench_is_pinned() -> None:
    unpinned = [str(requirement) for requirement in _bench_requirements() if not _pins([requirement])]
    assert unpinned == []


def test_the_gpu_bench_uses_the_projects_pins() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].values()
    declared = [*project["dependencies"], *(requirement for group in extras for requirement in group)]
    project_pins = _pins([Requirement(line) for line in declared])
    bench_pins = _pins(_bench_requirements())
    shared = sorted(set(project_pins) & set(bench_pins))
    assert "monai" in shared and "boto3" in shared  # the comparison is not vacuous
    assert {name: bench_pins[name] for name in shared} == {name: project_pins[name] for name in shared}
