"""Analyses a study can request; `CATALOGUE` maps each name to its definition."""

from __future__ import annotations

from voxelpipe.analyses.catalogue import Analysis, AnalysisInput, AnalysisOutput
from voxelpipe.analyses.qc import QC
from voxelpipe.wiring import Runtime

CATALOGUE: dict[str, Analysis] = {analysis.name: analysis for analysis in (QC,)}
DEFAULT_ANALYSES: tuple[str, ...] = ("qc",)


class UnknownAnalysis(ValueError):
    def __init__(self, names: list[str]) -> None:
        super().__init__(f"unknown analyses: {', '.join(names)}; known: {', '.join(sorted(CATALOGUE))}")
        self.names = names


def resolve(names: list[str] | tuple[str, ...]) -> list[Analysis]:
    """The catalogue entries for requested names, in request order, duplicates dropped."""
    unknown = [name for name in names if name not in CATALOGUE]
    if unknown:
        raise UnknownAnalysis(unknown)
    return [CATALOGUE[name] for name in dict.fromkeys(names)]


__all__ = [
    "CATALOGUE",
    "DEFAULT_ANALYSES",
    "Analysis",
    "AnalysisInput",
    "AnalysisOutput",
    "Runtime",
    "UnknownAnalysis",
    "resolve",
]
