"""Analyses a study can request; `CATALOGUE` maps each name to its definition."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping

from voxelpipe.analyses.catalogue import (
    LONGITUDINAL,
    NORMATIVE,
    QC,
    REGIONAL,
    REGISTRATION,
    TISSUE_SEG,
    VOLUMETRICS,
    Analysis,
    AnalysisInput,
    AnalysisOutput,
)
from voxelpipe.wiring import Runtime

CATALOGUE: dict[str, Analysis] = {
    analysis.name: analysis
    for analysis in (QC, TISSUE_SEG, VOLUMETRICS, REGISTRATION, REGIONAL, NORMATIVE, LONGITUDINAL)
}
DEFAULT_ANALYSES: tuple[str, ...] = ("qc",)


class UnknownAnalysis(ValueError):
    def __init__(self, names: list[str], known: Iterable[str] = CATALOGUE) -> None:
        super().__init__(f"unknown analyses: {', '.join(names)}; known: {', '.join(sorted(known))}")
        self.names = names


def resolve(
    names: list[str] | tuple[str, ...], models: Mapping[str, Analysis] | None = None
) -> list[Analysis]:
    """The requested analyses and every analysis they require, each after its requirements and
    after the analyses it uses (`Analysis.uses`) that are among them.

    `models` are the `model:NAME` analyses of registered models that may be asked for (the
    caller looks them up: see inference.registry.model_analyses); any other is unknown.
    """
    known = {**CATALOGUE, **(models or {})}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise UnknownAnalysis(unknown, known)
    wanted: set[str] = set()

    def require(name: str, chain: tuple[str, ...]) -> None:
        if name in chain:
            raise ValueError(f"analyses require each other: {' -> '.join((*chain, name))}")
        for requirement in known[name].requires:
            require(requirement, (*chain, name))
        wanted.add(name)

    for name in names:
        require(name, ())
    ordered: dict[str, Analysis] = {}

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in chain:
            raise ValueError(f"analyses require each other: {' -> '.join((*chain, name))}")
        for before in inputs_of(known[name], wanted):
            visit(before, (*chain, name))
        ordered.setdefault(name, known[name])

    for name in names:
        visit(name, ())
    return list(ordered.values())


def inputs_of(analysis: Analysis, present: Collection[str]) -> tuple[str, ...]:
    """The analyses whose output `analysis` is given when the analyses `present` run: what it
    requires, and what it uses among them."""
    return (*analysis.requires, *(name for name in analysis.uses if name in present))


def stages(analyses: list[Analysis]) -> list[list[Analysis]]:
    """Analyses grouped so that each stage needs only earlier stages: stages run in order, the
    analyses of one stage in parallel. `analyses` must be as `resolve` orders them."""
    present = {analysis.name for analysis in analyses}
    level: dict[str, int] = {}
    for analysis in analyses:
        level[analysis.name] = 1 + max((level[r] for r in inputs_of(analysis, present)), default=-1)
    grouped: list[list[Analysis]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for analysis in analyses:
        grouped[level[analysis.name]].append(analysis)
    return grouped


__all__ = [
    "CATALOGUE",
    "DEFAULT_ANALYSES",
    "Analysis",
    "AnalysisInput",
    "AnalysisOutput",
    "Runtime",
    "UnknownAnalysis",
    "inputs_of",
    "resolve",
    "stages",
]
