"""The analysis catalogue: what can be requested for a study, and how each one runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib

from voxelpipe.wiring import Runtime


@dataclass(frozen=True)
class AnalysisInput:
    """What an analysis sees: the study's volume in canonical RAS orientation."""

    image: nib.Nifti1Image | nib.Nifti2Image
    original_orientation: tuple[str, str, str]
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class AnalysisOutput:
    """Measures go into results.json; artifacts (file name -> bytes) under derived/{study_id}/{analysis}/."""

    measures: dict[str, Any]
    artifacts: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Analysis:
    name: str
    version: str
    runtime: Runtime
    description: str
    run: Callable[[AnalysisInput], AnalysisOutput]
    parameters: Mapping[str, Any] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "runtime": self.runtime.value,
            "description": self.description,
            "parameters": dict(self.parameters),
            "requires": list(self.requires),
            "outputs": list(self.outputs),
        }
