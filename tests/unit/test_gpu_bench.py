"""The GPU benchmark's wheel list (bench/gpu_requirements.txt) stays in step with the project."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^\s;#]+)")


def _name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(lines: list[str]) -> dict[str, str]:
    pins = {}
    for line in lines:
        match = PIN.match(line.strip())
        if match:
            pins[_name(match[1])] = match[2]
    return pins


def _bench_lines() -> list[str]:
    text = (ROOT / "bench" / "gpu_requirements.txt").read_text()
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def test_every_wheel_of_the_gpu_bench_is_pinned() -> None:
    unpinned = [line for line in _bench_lines() if not PIN.match(line.strip())]
    assert unpinned == []


def test_the_gpu_bench_uses_the_projects_pins() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"].values()
    declared = [*project["dependencies"], *(requirement for group in extras for requirement in group)]
    project_pins = _pins(declared)
    bench_pins = _pins(_bench_lines())
    shared = sorted(set(project_pins) & set(bench_pins))
    assert "monai" in shared and "boto3" in shared  # the comparison is not vacuous
    assert {name: bench_pins[name] for name in shared} == {name: project_pins[name] for name in shared}
