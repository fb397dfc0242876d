"""CORS as S3 answers it, from a bucket's CORS configuration (the local S3 endpoint's).

S3 (https://docs.aws.amazon.com/AmazonS3/latest/userguide/cors.html) evaluates a request that
carries `Origin` against the bucket's rules in order; the first rule whose AllowedOrigins match the
origin, whose AllowedMethods hold the method (a preflight's Access-Control-Request-Method) and,
for a preflight, whose AllowedHeaders match every header it asks for, answers. A preflight
(OPTIONS) with no CORS configuration, or no rule that matches, is a 403; an actual request that
matches no rule is served without CORS headers, so the browser refuses it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from infra.local.s3_auth import S3Error


@dataclass(frozen=True)
class CorsRule:
    allowed_origins: tuple[str, ...]
    allowed_methods: tuple[str, ...]
    allowed_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age_s: int | None = None

    @classmethod
    def from_s3(cls, rule: Mapping[str, Any]) -> CorsRule:
        """A rule as GetBucketCors returns it."""
        return cls(
            allowed_origins=tuple(rule.get("AllowedOrigins", ())),
            allowed_methods=tuple(m.upper() for m in rule.get("AllowedMethods", ())),
            allowed_headers=tuple(rule.get("AllowedHeaders", ())),
            expose_headers=tuple(rule.get("ExposeHeaders", ())),
            max_age_s=rule.get("MaxAgeSeconds"),
        )

    def allows_origin(self, origin: str) -> bool:
        # One `*` at most in an AllowedOrigin, matching any characters (S3's wildcard).
        return any(fnmatch.fnmatchcase(origin, allowed) for allowed in self.allowed_origins)

    def allows_headers(self, headers: Sequence[str]) -> bool:
        patterns = [h.lower() for h in self.allowed_headers]
        return all(any(fnmatch.fnmatchcase(h.lower(), p) for p in patterns) for h in headers)

    def headers(self, origin: str, requested_headers: Sequence[str] = ()) -> dict[str, str]:
        """The Access-Control-* headers of an answer this rule allows."""
        answer = {
            # A rule open to any origin answers `*` (no credentials ride along); else the origin.
            "access-control-allow-origin": "*" if "*" in self.allowed_origins else origin,
            "access-control-allow-methods": ", ".join(self.allowed_methods),
            "vary": "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
        }
        if requested_headers:
            answer["access-control-allow-headers"] = ", ".join(requested_headers)
        if self.expose_headers:
            answer["access-control-expose-headers"] = ", ".join(self.expose_headers)
        if self.max_age_s is not None:
            answer["access-control-max-age"] = str(self.max_age_s)
        return answer


def matching_rule(
    rules: Sequence[CorsRule], origin: str, method: str, requested_headers: Sequence[str] = ()
) -> CorsRule | None:
    return next(
        (
            rule
            for rule in rules
            if rule.allows_origin(origin)
            and method.upper() in rule.allowed_methods
            and rule.allows_headers(requested_headers)
        ),
        None,
    )


def requested_headers(value: str | None) -> list[str]:
    return [h.strip() for h in (value or "").split(",") if h.strip()]


def preflight(
    rules: Sequence[CorsRule] | None, origin: str | None, method: str | None, headers: str | None
) -> dict[str, str]:
    """The headers of a preflight's 200, or S3's 403 (S3Error) when it is not allowed."""
    if not origin or not method:
        raise S3Error(
            400,
            "BadRequest",
            "Insufficient information. Origin request header needed."
            if not origin
            else "Invalid Access-Control-Request-Method header.",
        )
    if not rules:
        raise S3Error(
            403, "AccessForbidden", "CORSResponse: CORS is not enabled for this bucket.", Method=method
        )
    asked = requested_headers(headers)
    rule = matching_rule(rules, origin, method, asked)
    if rule is None:
        raise S3Error(
            403,
            "AccessForbidden",
            "CORSResponse: This CORS request is not allowed. This is usually because the evalution of "
            "Origin, request method / Access-Control-Request-Method or Access-Control-Request-Headers "
            "are not whitelisted by the resource's CORS spec.",
            Method=method,
        )
    return rule.headers(origin, asked)


def actual(rules: Sequence[CorsRule] | None, origin: str | None, method: str) -> dict[str, str]:
    """The CORS headers an actual request's answer carries (none when no rule allows it)."""
    if not origin or not rules:
        return {}
    rule = matching_rule(rules, origin, method)
    return rule.headers(origin) if rule is not None else {}
