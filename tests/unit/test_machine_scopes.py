"""Machine clients' scopes: every action has its scope (or is for people only), decided in one place."""

from __future__ import annotations

import pytest

from voxelpipe.api.auth import PERMISSIONS, SCOPE_OF, Action, Principal, Role
from voxelpipe.api.problems import Problem
from voxelpipe.machine_clients import Scope, scopes_of


def test_every_action_is_mapped_and_every_scope_allows_something():
    assert set(SCOPE_OF) == set(Action)
    assert {scope for scope in SCOPE_OF.values() if scope is not None} == set(Scope)
    # What no machine may do: publish for every tenant, make machines, reprocess the tenant in bulk,
    # read the access audit or set quotas.
    assert {a for a, s in SCOPE_OF.items() if s is None} == {
        Action.PUBLISH_MODELS,
        Action.PUBLISH_REFERENCES,
        Action.MANAGE_CLIENTS,
        Action.REPROCESS_BATCHES,
        Action.READ_AUDIT,
        Action.MANAGE_QUOTAS,
    }


def test_a_token_scope_claim_keeps_only_voxelpipe_scopes():
    claim = "voxelpipe/studies.read openid voxelpipe/nope other/studies.write voxelpipe/dicomweb.stow"
    assert scopes_of(claim) == {Scope.STUDIES_READ, Scope.DICOMWEB_STOW}
    assert scopes_of("") == frozenset()


def test_machines_by_scope_people_by_role():
    reader = Principal("c1", "lab-a", None, frozenset({Scope.STUDIES_READ}), client="pacs")
    assert reader.may(Action.READ) and not reader.may(Action.UPLOAD)
    with pytest.raises(Problem) as refused:
        reader.require(Action.UPLOAD)
    assert refused.value.status == 403 and "voxelpipe/studies.write" in refused.value.detail
    everything = Principal("c2", "lab-a", None, frozenset(Scope), client="all")
    with pytest.raises(Problem) as people_only:
        everything.require(Action.MANAGE_CLIENTS)
    assert "people only" in people_only.value.detail
    for role in Role:
        person = Principal("u", "lab-a", role)
        assert {a for a in Action if person.may(a)} == PERMISSIONS[role]
