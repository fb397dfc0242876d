"""voxelpipe.routing rules: every operator (true, false, missing, multi-valued), nesting, the rule
sets refused at save time (naming the field), the default rule set's decisions, and explanations
that never quote a value the Basic Profile removes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from voxelpipe.routing import (
    DEFAULT_RULE_SET,
    RULE_FIELDS,
    Condition,
    RoutingAction,
    RuleSet,
    SeriesClass,
    route_exam,
    safe_keywords,
)

TAGS: dict[str, Any] = {
    "Modality": "MR",
    "ImageType": ["ORIGINAL", "PRIMARY", "M", "ND"],
    "ScanningSequence": ["GR", "IR"],
    "MRAcquisitionType": "3D",
    "RepetitionTime": 2300.0,
    "EchoTime": 2.98,
    "InversionTime": 900.0,
    "SeriesNumber": 3,
    "SeriesDescription": "t1_mprage_sag",
    "Manufacturer": "SIEMENS",
    "EchoTrainLength": None,  # present, empty: counts as missing
}


def holds(condition: dict[str, Any], tags: dict[str, Any] = TAGS) -> bool:
    return Condition.model_validate(condition).evaluate(tags).holds


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        # equals: text exactly, numbers as numbers, any value of a multi-valued tag
        ({"field": "Modality", "equals": "MR"}, True),
        ({"field": "Modality", "equals": "mr"}, False),
        ({"field": "Modality", "equals": "CT"}, False),
        ({"field": "RepetitionTime", "equals": 2300}, True),
        ({"field": "SeriesNumber", "equals": 3.0}, True),
        ({"field": "SeriesNumber", "equals": "3"}, True),
        ({"field": "ImageType", "equals": "M"}, True),
        ({"field": "ImageType", "equals": "DERIVED"}, False),
        ({"field": "ScanningSequence", "equals": "IR"}, True),
        # in
        ({"field": "Modality", "in": ["CT", "MR"]}, True),
        ({"field": "Modality", "in": ["CT", "PT"]}, False),
        ({"field": "ImageType", "in": ["MPR", "ND"]}, True),
        ({"field": "EchoTime", "in": [2.98, 3.1]}, True),
        ({"field": "EchoTime", "in": [3, 4]}, False),
        # regex: re.search, ignore_case
        ({"field": "SeriesDescription", "regex": "mprage"}, True),
        ({"field": "SeriesDescription", "regex": "MPRAGE"}, False),
        ({"field": "SeriesDescription", "regex": "MPRAGE", "ignore_case": True}, True),
        ({"field": "SeriesDescription", "regex": "^mprage$"}, False),
        ({"field": "ImageType", "regex": "^PRIM"}, True),
        ({"field": "ImageType", "regex": "^SEC"}, False),
        # lt / gt: numbers only
        ({"field": "EchoTime", "lt": 10}, True),
        ({"field": "EchoTime", "lt": 2.98}, False),
        ({"field": "InversionTime", "gt": 800}, True),
        ({"field": "InversionTime", "gt": 900}, False),
        ({"field": "Modality", "gt": 1}, False),  # not a number: never greater
        # exists
        ({"field": "InversionTime", "exists": True}, True),
        ({"field": "InversionTime", "exists": False}, False),
        ({"field": "DiffusionBValue", "exists": True}, False),
        ({"field": "DiffusionBValue", "exists": False}, True),
        ({"field": "EchoTrainLength", "exists": True}, False),  # empty counts as missing
    ],
)
def test_each_operator(condition, expected):
    assert holds(condition) is expected


@pytest.mark.parametrize(
    "condition",
    [
        {"field": "DiffusionBValue", "equals": 0},
        {"field": "DiffusionBValue", "in": [0, 1000]},
        {"field": "DiffusionBValue", "regex": ".*"},
        {"field": "DiffusionBValue", "lt": 1e9},
        {"field": "DiffusionBValue", "gt": -1e9},
        {"field": "EchoTrainLength", "regex": ".*"},
    ],
)
def test_a_missing_tag_makes_every_operator_but_exists_false(condition):
    assert not holds(condition)
    assert holds({"not": condition})  # and so its negation holds


def test_all_any_not_nest():
    t1 = {"field": "SeriesNumber", "equals": 3}
    f1 = {"field": "Modality", "equals": "CT"}
    assert holds({"all": [t1, {"any": [f1, {"not": f1}]}]})
    assert not holds({"all": [t1, f1]})
    assert holds({"any": [f1, t1]})
    assert not holds({"any": [f1, {"not": t1}]})
    assert holds({"not": {"all": [t1, f1]}})
    assert not holds({"not": {"not": f1}})
    assert holds({"all": []}) and not holds({"any": []})


def test_derived_attributes_are_what_route_exam_adds():
    rule_set = RuleSet.model_validate(
        {
            "rules": [
                {
                    "name": "big-exam-t1",
                    "condition": {
                        "all": [
                            {"field": "ExamSeriesCount", "gt": 1},
                            {"field": "SeriesInstances", "gt": 100},
                            {"field": "SeriesClass", "equals": "T1"},
                        ]
                    },
                    "action": {"kind": "process", "analyses": ["qc", "model:brain-age"], "priority": "high"},
                }
            ]
        }
    )
    t1 = {**TAGS, "SeriesInstances": 176}
    short = {**TAGS, "SeriesInstances": 12}
    chosen, skipped = route_exam(rule_set, [t1, short])
    assert (chosen.selected, chosen.action, chosen.rule) == (True, "process", "big-exam-t1")
    assert chosen.analyses == ["qc", "model:brain-age"] and chosen.priority == "high"
    assert chosen.tags["SeriesClass"] == "T1" and chosen.tags["ExamSeriesCount"] == 2
    assert (skipped.selected, skipped.action, skipped.rule) == (False, "none", None)
    assert "SeriesInstances > 100 -> false (is 12)" in skipped.explanation[1]
    assert skipped.explanation[-1].startswith("no rule matched")


def _refused(rule_set: dict[str, Any]) -> list[dict[str, Any]]:
    with pytest.raises(ValidationError) as caught:
        RuleSet.model_validate(rule_set)
    return [{"loc": ".".join(map(str, e["loc"])), "msg": e["msg"]} for e in caught.value.errors()]


def _one_rule(condition: Any = None, action: Any = None, **rule: Any) -> dict[str, Any]:
    return {
        "rules": [
            {
                "name": "r",
                "condition": condition or {"field": "Modality", "equals": "MR"},
                "action": action or {"kind": "process"},
                **rule,
            }
        ]
    }


@pytest.mark.parametrize(
    ("rule_set", "field", "message"),
    [
        (_one_rule({"field": "PatientName", "equals": "x"}), "rules.0.condition.field", "unknown attribute"),
        (_one_rule({"field": "Modality", "regex": "(unclosed"}), "rules.0.condition.regex", "not a regular"),
        (
            _one_rule(action={"kind": "process", "analyses": ["qc", "telepathy"]}),
            "rules.0.action.analyses",
            "unknown analysis 'telepathy'",
        ),
        (
            _one_rule(action={"kind": "process", "analyses": ["model:Bad Name"]}),
            "rules.0.action.analyses",
            "unknown",
        ),
        (_one_rule(action={"kind": "archive"}), "rules.0.action.kind", "'process' or 'discard'"),
        (_one_rule(action={"kind": "discard", "analyses": ["qc"]}), "rules.0.action", "discard"),
        (_one_rule(action={"kind": "process", "priority": "urgent"}), "rules.0.action.priority", ""),
        (
            _one_rule(action={"kind": "process", "analyses": ["qc"], "parameters": {"tissue-seg": {}}}),
            "rules.0.action",
            "parameters for analyses the action does not run",
        ),
        (
            _one_rule(action={"kind": "process", "parameters": {"tissue-seg": {"colour": "red"}}}),
            "rules.0.action",
            "unknown tissue-seg parameters: colour",
        ),
        (_one_rule({"field": "Modality", "like": "MR"}), "rules.0.condition.like", "Extra inputs"),
        (_one_rule({"field": "Modality"}), "rules.0.condition", "exactly one"),
        (_one_rule({"field": "Modality", "equals": "MR", "in": ["CT"]}), "rules.0.condition", "exactly one"),
        (_one_rule({"equals": "MR"}), "rules.0.condition", "needs a field"),
        (
            _one_rule({"field": "Modality", "not": {"field": "Modality", "exists": True}}),
            "rules.0.condition",
            "",
        ),
        (_one_rule({"field": "EchoTime", "lt": "10"}), "rules.0.condition.lt", ""),
        (_one_rule({"field": "EchoTime", "gt": True}), "rules.0.condition.gt", ""),
        (_one_rule({"field": "Modality", "equals": ["MR"]}), "rules.0.condition.equals", ""),
        (_one_rule({"field": "Modality", "in": []}), "rules.0.condition.in", "at least 1"),
        (_one_rule({"field": "Modality", "exists": "yes"}), "rules.0.condition.exists", ""),
        (_one_rule({"field": "Modality", "equals": "MR", "ignore_case": True}), "rules.0.condition", "regex"),
        (_one_rule({"field": "SeriesClass", "equals": "T9"}), "rules.0.condition", "SeriesClass is one of"),
        (
            _one_rule({"all": [{"field": "Modality", "equals": "MR"}, {"field": "Nope", "exists": True}]}),
            "rules.0.condition.all.1.field",
            "unknown attribute",
        ),
        (_one_rule(name="Has Spaces"), "rules.0.name", "pattern"),
        ({"rules": [], "quiet_period_seconds": 7200}, "quiet_period_seconds", "less than or equal"),
        ({"rules": [], "quiet_period_seconds": -1}, "quiet_period_seconds", "greater than or equal"),
        ({"rules": [], "surprise": 1}, "surprise", "Extra inputs"),
    ],
)
def test_invalid_rule_sets_are_refused_naming_the_field(rule_set, field, message):
    errors = _refused(rule_set)
    assert any(e["loc"] == field and message in e["msg"] for e in errors), errors


@pytest.mark.parametrize(
    ("pattern", "why"),
    [
        ("(a+)+$", "a repetition inside a repetition"),
        ("(?:x|(a*))*b", "alternatives inside a repetition"),
        ("(t1|mprage)+", "alternatives inside a repetition"),
        ("(a|a)*b", "alternatives inside a repetition"),
        (".*.*.*.*x", "more than 3 unbounded repetitions"),
        (".{0,100}.{0,100}.{0,100}.{0,100}x", "more than 3 unbounded repetitions"),
    ],
)
def test_patterns_that_backtrack_for_ever_are_refused(pattern, why):
    (error,) = _refused(_one_rule({"field": "SeriesDescription", "regex": pattern}))
    assert error["loc"] == "rules.0.condition.regex" and why in error["msg"]


@pytest.mark.parametrize(
    "pattern", ["t1.*mprage", "(?i)^(t1|mprage)$", "(a|b)*x", "[a-z]+_[0-9]{2,4}", "^.*t1.*$"]
)
def test_ordinary_patterns_are_accepted(pattern):
    RuleSet.model_validate(_one_rule({"field": "SeriesDescription", "regex": pattern}))


@pytest.mark.parametrize("operator", ["equals", "lt", "gt"])
def test_numbers_that_are_not_finite_are_refused(operator):
    (error,) = _refused(_one_rule({"field": "EchoTime", operator: float("inf")}))
    assert error["loc"] == f"rules.0.condition.{operator}"


def test_unknown_field_message_names_the_allowed_keywords():
    (error,) = _refused(_one_rule({"field": "PatientName", "equals": "x"}))
    assert "ImageType" in error["msg"] and "SeriesClass" in error["msg"] and "ExamSeriesCount" in error["msg"]


def test_duplicate_rule_names_are_refused():
    rule = _one_rule()["rules"][0]
    errors = _refused({"rules": [rule, rule]})
    assert errors[0]["loc"] == "rules" and "two rules are named 'r'" in errors[0]["msg"]


def test_too_deep_nesting_is_refused():
    condition: dict[str, Any] = {"field": "Modality", "exists": True}
    for _ in range(10):
        condition = {"not": condition}
    assert any("nest at most" in e["msg"] for e in _refused(_one_rule(condition)))


def test_a_rule_set_round_trips_through_json():
    rule_set = RuleSet.model_validate(
        _one_rule(
            {"any": [{"field": "SeriesDescription", "regex": "t1", "ignore_case": True}]},
            {
                "kind": "process",
                "analyses": ["tissue-seg"],
                "parameters": {"tissue-seg": {"mrf_beta": 0.3}},
                "destinations": ["pacs"],
            },
        )
    )
    dumped = rule_set.as_json()
    assert RuleSet.model_validate(json.loads(json.dumps(dumped))) == rule_set
    assert dumped["rules"][0]["condition"] == {
        "any": [{"field": "SeriesDescription", "regex": "t1", "ignore_case": True}]
    }
    assert DEFAULT_RULE_SET.quiet_period_seconds == 30
    assert RuleSet.model_validate(DEFAULT_RULE_SET.as_json()) == DEFAULT_RULE_SET


EXAM = [
    # A 3D MPRAGE, a localizer, a 2D T2, a derived MPR
    {**TAGS, "SeriesInstances": 176},
    {"Modality": "MR", "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"], "SeriesInstances": 3},
    {
        "Modality": "MR",
        "ImageType": ["ORIGINAL", "PRIMARY", "M"],
        "ScanningSequence": ["SE"],
        "MRAcquisitionType": "2D",
        "RepetitionTime": 6000.0,
        "EchoTime": 95.0,
        "SeriesInstances": 30,
    },
    {**TAGS, "ImageType": ["DERIVED", "SECONDARY", "MPR"], "SeriesInstances": 40},
]


def test_default_rule_set_decisions():
    t1, localizer, t2, mpr = route_exam(DEFAULT_RULE_SET, EXAM)
    assert (t1.selected, t1.action, t1.rule, t1.analyses) == (True, "process", "3d-t1", None)
    assert (localizer.selected, localizer.action, localizer.rule) == (
        False,
        "discard",
        "localizers-and-derived",
    )
    assert (mpr.selected, mpr.rule) == (False, "localizers-and-derived")
    assert (t2.selected, t2.action, t2.rule) == (False, "none", None)
    assert t1.explanation[-1] == (
        "3d-t1: SeriesClass equals T1 -> true (is T1); MRAcquisitionType equals 3D -> true (is 3D) => match"
    )
    assert "MRAcquisitionType equals 3D -> false (is 2D)" in t2.explanation[3]
    assert [len(d.explanation) for d in (t1, localizer, t2, mpr)] == [4, 3, 5, 3]


def test_default_rule_set_processes_a_one_series_upload_whatever_it_is():
    (only,) = route_exam(DEFAULT_RULE_SET, [EXAM[2]])
    assert (only.selected, only.rule, only.tags["ExamSeriesCount"]) == (True, "only-series", 1)
    (nothing_known,) = route_exam(DEFAULT_RULE_SET, [{"SeriesInstances": 5}])
    assert nothing_known.selected and nothing_known.tags["SeriesClass"] == SeriesClass.OTHER


def test_decisions_never_carry_a_removed_attributes_value():
    planted = "Zyxwv-Doe-4471"
    rule_set = RuleSet.model_validate(
        {
            "rules": [
                {
                    "name": "by-description",
                    "condition": {
                        "all": [
                            {"field": "SeriesDescription", "regex": "Doe"},
                            {"field": "ProtocolName", "equals": planted},
                            {"field": "StationName", "exists": True},
                            {"field": "InstitutionName", "in": [planted, "other"]},
                        ]
                    },
                    "action": {"kind": "process"},
                }
            ]
        }
    )
    tags = {
        **TAGS,
        "SeriesDescription": f"T1 {planted}",
        "ProtocolName": planted,
        "StudyDescription": planted,
        "StationName": planted,
        "InstitutionName": planted,
        "SeriesInstances": 9,
    }
    for rules in (rule_set, DEFAULT_RULE_SET):
        (decision,) = route_exam(rules, [tags])
        text = json.dumps(decision.as_json())
        assert planted not in text and "Doe" not in text.replace("regex <withheld>", "")
        assert set(decision.tags) <= safe_keywords()
        assert not {"SeriesDescription", "ProtocolName", "StudyDescription", "StationName"} & set(
            decision.tags
        )
    (decision,) = route_exam(rule_set, [tags])
    assert decision.rule == "by-description"  # the conditions were tested, only not quoted
    assert "SeriesDescription regex <withheld> -> true" in decision.explanation[-1]


def test_safe_keywords_follow_the_basic_profile():
    assert {"ImageType", "RepetitionTime", "Modality", "SeriesClass", "ExamSeriesCount"} <= safe_keywords()
    assert (
        not {"SeriesDescription", "ProtocolName", "StudyDescription", "ContrastBolusAgent"} & safe_keywords()
    )
    assert safe_keywords() < RULE_FIELDS


def test_a_discard_action_with_nothing_else_is_valid():
    assert RoutingAction(kind="discard").destinations == []
