"""The analysis catalogue: what can be requested for a study, and how each one runs."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from voxelpipe.wiring import Runtime


@dataclass(frozen=True)
class AnalysisOutput:
    """What an analysis produced.

    `measures` go into results.json; `artifacts` (file name -> bytes) are user-facing, under
    derived/{study_id}/{analysis}/; `intermediates` are for the analyses that require this one
    only (under work/, short-lived), e.g. maps in the canonical grid.
    """

    measures: dict[str, Any]
    artifacts: dict[str, bytes] = field(default_factory=dict)
    intermediates: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class AnalysisInput:
    """What an analysis sees: the study's volume in canonical RAS orientation, and its context.

    `original_affine` and `original_shape` describe the upload's own grid, for outputs that go
    back to it; `subject` is the pseudonymous subject (age, sex) the uploader declared;
    `requirements` holds the output of every analysis this one requires, by name.
    """

    image: nib.Nifti1Image | nib.Nifti2Image
    original_orientation: tuple[str, str, str]
    parameters: Mapping[str, Any]
    original_affine: npt.NDArray[np.float64] | None = None
    original_shape: tuple[int, ...] | None = None
    subject: Mapping[str, Any] = field(default_factory=dict)
    requirements: Mapping[str, AnalysisOutput] = field(default_factory=dict)


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
    # A registered model's owner (its tenant, or keys.DEPLOYMENT_OWNER); None for the catalogue's.
    owner: str | None = None

    def deployed_runtime(self, gpu_analyses: Collection[str] = ()) -> Runtime:
        """Where a deployment runs it: its own runtime, unless the deployment moved it to the GPU
        workers (CDK context voxelpipe:gpu:gpu_analyses)."""
        return Runtime.GPU if self.name in gpu_analyses else self.runtime

    def describe(self, gpu_analyses: Collection[str] = ()) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "runtime": self.deployed_runtime(gpu_analyses).value,
            "description": self.description,
            "parameters": dict(self.parameters),
            "requires": list(self.requires),
            "outputs": list(self.outputs),
        }


def merged_parameters(analysis: str, defaults: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """`defaults` overlaid with `given`; a name that is not among the defaults raises ValueError."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ValueError(f"unknown {analysis} parameters: {', '.join(unknown)}")
    return {**defaults, **given}
