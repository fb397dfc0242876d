"""Which series of an exam become studies: classification from DICOM tags, and per-tenant routing
rules as typed data (never code), each decision explained. Pure domain logic: no AWS, no HTTP.
docs/rules.md describes the rule language, the classification table and the default rule set."""

from __future__ import annotations

from voxelpipe.routing.classify import SeriesClass, classify, classify_series
from voxelpipe.routing.decide import SeriesDecision, route_exam
from voxelpipe.routing.rules import DEFAULT_RULE_SET, Condition, RoutingAction, RoutingRule, RuleSet
from voxelpipe.routing.tags import ROUTING_KEYWORDS, RULE_FIELDS, SAFE_KEYWORDS, TagValue, read_routing_tags

__all__ = [
    "DEFAULT_RULE_SET",
    "ROUTING_KEYWORDS",
    "RULE_FIELDS",
    "SAFE_KEYWORDS",
    "Condition",
    "RoutingAction",
    "RoutingRule",
    "RuleSet",
    "SeriesClass",
    "SeriesDecision",
    "TagValue",
    "classify",
    "classify_series",
    "read_routing_tags",
    "route_exam",
]
