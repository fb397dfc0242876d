"""Viewer grants: what a grant allows, and every way a token is refused."""

from __future__ import annotations

import jwt
import pytest

from voxelpipe.viewer_grants import (
    GRANT_ALGORITHM,
    MAX_TTL_S,
    InvalidGrant,
    grant_key,
    issue_grant,
    verify_grant,
)

KEY = grant_key(b"deployment secret")
STUDY = "0" * 32
NOW = 1_800_000_000.0


def test_a_study_grant_covers_that_study_of_that_tenant_only() -> None:
    token, issued = issue_grant(KEY, tenant="clinic", issued_to="alice", study_id=STUDY, now=NOW)
    grant = verify_grant(KEY, token, now=NOW + 1)
    assert grant == issued
    assert grant.covers("clinic", STUDY, None)
    assert not grant.covers("clinic", "1" * 32, None)
    assert not grant.covers("other", STUDY, None)


def test_a_subject_grant_covers_that_subjects_studies() -> None:
    token, _ = issue_grant(KEY, tenant="clinic", issued_to="alice", subject_ref="sub-01", now=NOW)
    grant = verify_grant(KEY, token, now=NOW)
    assert grant.covers("clinic", "1" * 32, "sub-01")
    assert not grant.covers("clinic", "1" * 32, "sub-02")
    assert not grant.covers("clinic", "1" * 32, None)


def test_an_expired_grant_is_refused() -> None:
    token, grant = issue_grant(KEY, tenant="clinic", issued_to="alice", study_id=STUDY, ttl_s=60, now=NOW)
    with pytest.raises(InvalidGrant, match="expired"):
        verify_grant(KEY, token, now=grant.expires_at)


def test_a_grant_signed_with_another_key_is_refused() -> None:
    token, _ = issue_grant(grant_key(b"another"), tenant="clinic", issued_to="a", study_id=STUDY, now=NOW)
    with pytest.raises(InvalidGrant, match="Signature"):
        verify_grant(KEY, token, now=NOW)


@pytest.mark.parametrize(
    "scope",
    [{}, {"study_id": STUDY, "subject_ref": "s"}, {"study_id": "../x"}, {"subject_ref": ""}, "all"],
    ids=["empty", "both", "bad-study", "empty-subject", "not-an-object"],
)
def test_a_grant_of_no_single_study_or_subject_is_refused(scope: object) -> None:
    claims = {"iss": "voxelpipe-viewer", "sub": "a", "iat": int(NOW), "exp": int(NOW) + 60}
    token = jwt.encode({**claims, "tenant": "clinic", "scope": scope}, KEY, algorithm=GRANT_ALGORITHM)
    with pytest.raises(InvalidGrant):
        verify_grant(KEY, token, now=NOW)


def test_a_grant_lives_minutes_not_days() -> None:
    with pytest.raises(ValueError, match="lives"):
        issue_grant(KEY, tenant="clinic", issued_to="a", study_id=STUDY, ttl_s=MAX_TTL_S + 1)
    with pytest.raises(ValueError, match="one study or one subject"):
        issue_grant(KEY, tenant="clinic", issued_to="a")
