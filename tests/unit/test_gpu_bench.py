"""The GPU benchmark's and CUDA tests' wheel lists (bench/gpu_requirements.txt,
bench/gpu_check_requirements.txt) stay in step with the project."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
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


LISTS = ("gpu_requirements.txt", "gpu_check_requirements.txt")


def _bench_requirements(name: str) -> list[Requirement]:
    text = (ROOT / "bench" / name).read_text()
    return [
        Requirement(line) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


@pytest.mark.parametrize("name", LISTS)
def test_every_wheel_of_the_gpu_bench_is_pinned(name: str) -> None:
    unpinned = [str(requirement) for requirement in _bench_requirements(name) if not _pins([requirement])]
    assert unpinned == []


@pytest.mark.parametrize(("name", "witnesses"), [(LISTS[0], {"monai", "boto3"}), (LISTS[1], {"simpleitk"})])
def test_the_gpu_bench_uses_the_projects_pins(name: str, witnesses: set[str]) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].values()
    declared = [*project["dependencies"], *(requirement for group in extras for requirement in group)]
    project_pins = _pins([Requirement(line) for line in declared])
    bench_pins = _pins(_bench_requirements(name))
    shared = sorted(set(project_pins) & set(bench_pins))
    assert witnesses <= set(shared)  # the comparison is not vacuous
    assert {name: bench_pins[name] for name in shared} == {name: project_pins[name] for name in shared}
