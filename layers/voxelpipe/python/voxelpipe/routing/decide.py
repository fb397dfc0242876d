"""Route an exam: each series' decision under a rule set, with the explanation of how it was made.

Before the rules see a series' tags, route_exam adds what no one object says: `SeriesClass`
(classify_series), `SeriesInstances` (given by the caller, with the tags) and `ExamSeriesCount`
(how many series the exam has). Rules are tried in order; the first that holds decides.

A decision keeps only SAFE tags (those the PS3.15 Basic Profile leaves as they are, plus the
derived attributes) and its explanation never quotes the value of a removed attribute: a decision
may be stored, shown by the API and logged, past the ingest boundary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from voxelpipe.routing.classify import classify
from voxelpipe.routing.rules import RuleSet
from voxelpipe.routing.tags import TagValue, safe_tags

__all__ = ["SeriesDecision", "route_exam", "route_series"]


@dataclass(frozen=True)
class SeriesDecision:
    """What the rules decided for one series, and why."""

    selected: bool  # the series becomes (or stays) a study to process
    action: Literal["process", "discard", "none"]  # "none": no rule matched
    rule: str | None  # the rule that decided; None when none matched
    analyses: list[str] | None  # None: the analyses the study asked for
    parameters: dict[str, dict[str, Any]] | None
    priority: str | None
    destinations: list[str]
    explanation: list[str]  # one line per rule tried, up to the one that matched
    tags: dict[str, TagValue] = field(default_factory=dict)  # safe tags and the derived attributes

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _copy(parameters: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]] | None:
    return None if parameters is None else {name: dict(values) for name, values in parameters.items()}


def route_series(rule_set: RuleSet, tags: Mapping[str, TagValue], exam_series_count: int) -> SeriesDecision:
    """One series' decision; `tags` are its routing tags with SeriesInstances."""
    classification = classify(tags)
    seen: dict[str, TagValue] = {
        **tags,
        "SeriesClass": classification.series_class.value,
        "ExamSeriesCount": exam_series_count,
    }
    explanation = [f"SeriesClass {classification.series_class.value}: {classification.reason}"]
    for rule in rule_set.rules:
        outcome = rule.condition.evaluate(seen)
        body = "; ".join(outcome.parts) if outcome.parts and rule.condition.all is not None else outcome.text
        explanation.append(f"{rule.name}: {body} => {'match' if outcome.holds else 'no match'}")
        if outcome.holds:
            action = rule.action
            return SeriesDecision(
                selected=action.kind == "process",
                action=action.kind,
                rule=rule.name,
                analyses=None if action.analyses is None else list(action.analyses),
                parameters=_copy(action.parameters),
                priority=action.priority,
                destinations=list(action.destinations),
                explanation=explanation,
                tags=safe_tags(seen),
            )
    explanation.append("no rule matched: the series is not processed")
    return SeriesDecision(
        selected=False,
        action="none",
        rule=None,
        analyses=None,
        parameters=None,
        priority=None,
        destinations=[],
        explanation=explanation,
        tags=safe_tags(seen),
    )


def route_exam(rule_set: RuleSet, series: Sequence[Mapping[str, TagValue]]) -> list[SeriesDecision]:
    """Each series' decision, in the order given. Each series is the routing tags of one of its
    instances (read_routing_tags) plus "SeriesInstances": its instance count."""
    return [route_series(rule_set, tags, len(series)) for tags in series]
