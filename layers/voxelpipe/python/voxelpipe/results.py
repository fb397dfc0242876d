"""results.json: a study's measures, artifacts and provenance, in one document."""

from __future__ import annotations

import platform
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

import voxelpipe
from voxelpipe.messages import FinalizeInput

RESULTS_SCHEMA_VERSION = 1
_LIBRARIES = ("nibabel", "numpy", "pillow", "isal")


def library_versions() -> dict[str, str]:
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "unknown"
    return versions


def build_results(
    state: FinalizeInput, upload: dict[str, Any], timings_ms: dict[str, float]
) -> dict[str, Any]:
    """The results document of a completed study attempt."""
    return {
        "schema_version": RESULTS_SCHEMA_VERSION,
        "study_id": state.study_id,
        "attempt": state.attempt,
        "status": "COMPLETED",
        "completed_at": datetime.now(UTC).isoformat(),
        "input": {"key": state.input_key, **upload},
        "volume": {
            "original_orientation": "".join(state.prepared.original_orientation),
            "original_shape": state.prepared.original_shape,
            "canonical_shape": state.prepared.shape,
            "voxel_size_mm": state.prepared.voxel_size_mm,
        },
        "analyses": {
            result.analysis: {
                "version": result.version,
                "parameters": result.parameters,
                "measures": result.measures,
                "artifacts": result.artifacts,
            }
            for result in state.results
        },
        "provenance": {
            "input_sha256": upload.get("sha256"),
            "voxelpipe_version": voxelpipe.__version__,
            "analyses": {result.analysis: result.version for result in state.results},
            "parameters": {result.analysis: result.parameters for result in state.results},
            "python": platform.python_version(),
            "libraries": library_versions(),
        },
        "timings_ms": timings_ms,
    }
