"""Which series of an exam become studies: classification from DICOM tags, and per-tenant routing
rules as typed data (never code), each decision explained. Pure domain logic: no AWS, no HTTP.
docs/rules.md describes the rule language, the classification table and the default rule set.

Only read_routing_tags needs pydicom (the imaging layer), and imports it on its first call: the
rule language loads in any function.
"""

from __future__ import annotations

from voxelpipe.routing.classify import SeriesClass, classify, classify_series
from voxelpipe.routing.decide import SeriesDecision, route_exam, route_series
from voxelpipe.routing.keywords import (
    ROUTING_KEYWORDS,
    RULE_FIELDS,
    TagValue,
    is_safe,
    safe_keywords,
    safe_tags,
)
from voxelpipe.routing.rules import DEFAULT_RULE_SET, Condition, RoutingAction, RoutingRule, RuleSet

__all__ = [
    "DEFAULT_RULE_SET",
    "ROUTING_KEYWORDS",
    "RULE_FIELDS",
    "Condition",
    "RoutingAction",
    "RoutingRule",
    "RuleSet",
    "SeriesClass",
    "SeriesDecision",
    "TagValue",
    "classify",
    "classify_series",
    "is_safe",
    "read_routing_tags",
    "route_exam",
    "route_series",
    "safe_keywords",
    "safe_tags",
]


def read_routing_tags(data: bytes) -> dict[str, TagValue]:
    """The routing keywords present in one DICOM object's header (pixels are never read); raises
    voxelpipe.rejections.Rejected(NOT_DICOM) when the bytes are not a DICOM object that parses.
    See routing.tags."""
    from voxelpipe.routing import tags  # pydicom: loaded where DICOM is read, not with the rules

    return tags.read_routing_tags(data)
