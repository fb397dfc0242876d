"""The RuleSets contract, held by both implementations: DynamoRuleSets (moto, as in production and
the local cloud) and the in-memory fake (tests/fakes.py) the use cases' unit tests may use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from infra.local.cloud import LocalCloud
from tests.fakes import InMemoryRuleSets
from voxelpipe.adapters.rule_sets import DynamoRuleSets
from voxelpipe.ports import RuleSetNotFound, RuleSets
from voxelpipe.routing import DEFAULT_RULE_SET, RuleSet


@pytest.fixture(params=["dynamodb", "in-memory"])
def rule_sets(request: pytest.FixtureRequest) -> Iterator[RuleSets]:
    if request.param == "in-memory":
        yield InMemoryRuleSets()
    else:
        cloud: LocalCloud = request.getfixturevalue("cloud")
        assert cloud.bucket
        yield DynamoRuleSets()


def _rule_set(quiet: int) -> RuleSet:
    return RuleSet.model_validate({**DEFAULT_RULE_SET.as_json(), "quiet_period_seconds": quiet})


def test_versions_are_added_deleted_and_the_newest_left_is_active(rule_sets: RuleSets):
    assert rule_sets.current("lab") == rule_sets.current("other")
    assert rule_sets.current("lab").version is None and rule_sets.current("lab").rule_set == DEFAULT_RULE_SET
    assert [rule_sets.save("lab", _rule_set(q), "ann") for q in (10, 20, 30)] == [1, 2, 3]
    assert rule_sets.save("other", _rule_set(99), None) == 1  # per tenant
    active = rule_sets.current("lab")
    assert active.version == 3 and active.rule_set.quiet_period_seconds == 30
    assert [v.version for v in rule_sets.versions("lab")] == [3, 2, 1]
    two = rule_sets.get("lab", 2)
    assert (two.rule_set.quiet_period_seconds, two.created_by, two.deleted) == (20, "ann", False)

    deleted = rule_sets.delete("lab", 3, "bob")
    assert deleted.deleted and deleted.deleted_by == "bob" and deleted.deleted_at is not None
    assert rule_sets.delete("lab", 3, "carl").deleted_by == "bob"  # again: nothing changes
    assert rule_sets.current("lab").version == 2
    assert rule_sets.save("lab", _rule_set(40), "ann") == 4  # a deleted number is never reused
    for version in (4, 2, 1):
        rule_sets.delete("lab", version, None)
    assert rule_sets.current("lab").version is None
    assert [v.deleted for v in rule_sets.versions("lab")] == [True] * 4
    for missing in (5, 0):
        with pytest.raises(RuleSetNotFound):
            rule_sets.get("lab", missing)
        with pytest.raises(RuleSetNotFound):
            rule_sets.delete("lab", missing, None)
    with pytest.raises(RuleSetNotFound):
        rule_sets.get("nobody", 1)
    assert rule_sets.current("other").rule_set.quiet_period_seconds == 99
