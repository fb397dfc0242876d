"""A tenant's routing rule sets: save and delete them (each change audited), and try one on an
exam's series without changing anything (docs/rules.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from voxelpipe import tracking
from voxelpipe.keys import rules_audit_key
from voxelpipe.ports import ActiveRuleSet, RuleSets, RuleSetVersion, StudyStore
from voxelpipe.records import StudyRecord
from voxelpipe.routing import RuleSet, SeriesDecision, TagValue, route_exam

RULES_SAVED = "rules_saved"
RULES_DELETED = "rules_deleted"


def _summary(rule_set: RuleSet) -> dict[str, Any]:
    return {
        "rules": [rule.name for rule in rule_set.rules],
        "quiet_period_seconds": rule_set.quiet_period_seconds,
    }


def save_rule_set(
    rule_sets: RuleSets, store: StudyStore, tenant: str, rule_set: RuleSet, *, actor: str, source: str
) -> int:
    """Store a (validated) rule set as the tenant's next version, which becomes the active one."""
    version = rule_sets.save(tenant, rule_set, actor)
    detail = {"tenant": tenant, "version": version, **_summary(rule_set)}
    tracking.audit(store, rules_audit_key(tenant), RULES_SAVED, actor=actor, source=source, detail=detail)
    return version


def delete_rule_set(
    rule_sets: RuleSets, store: StudyStore, tenant: str, version: int, *, actor: str, source: str
) -> RuleSetVersion:
    """Mark a version deleted (the newest one left becomes active; none: the default). Raises
    RuleSetNotFound for a version the tenant does not have. Deleting it again changes nothing and
    writes no audit row."""
    before = rule_sets.get(tenant, version)
    if before.deleted:
        return before
    deleted = rule_sets.delete(tenant, version, actor)
    detail = {"tenant": tenant, "version": version, "active": rule_sets.current(tenant).version}
    tracking.audit(store, rules_audit_key(tenant), RULES_DELETED, actor=actor, source=source, detail=detail)
    return deleted


class NoExamSeries(LookupError):
    """The study has no series recorded (not a DICOM exam, or not split into series yet)."""


@dataclass(frozen=True)
class TriedSeries:
    """One series of a trial run: what identifies it (where an exam names it) and its decision."""

    index: int
    decision: SeriesDecision
    series_instance_uid: str | None = None
    series_number: int | None = None
    study_id: str | None = None


def exam_series(study: StudyRecord) -> list[dict[str, Any]]:
    """The series ingest recorded on an exam's study (`dicom.series`); NoExamSeries if none."""
    dicom = getattr(study, "dicom", None)
    series = dicom.get("series") if isinstance(dicom, dict) else None
    if not isinstance(series, list) or not series:
        raise NoExamSeries(f"study {study.study_id} has no DICOM series recorded")
    return [entry for entry in series if isinstance(entry, dict)]


def try_on_tags(rule_set: RuleSet, series: Sequence[Mapping[str, TagValue]]) -> list[TriedSeries]:
    """Each given series' decision (its tags with SeriesInstances)."""
    return [TriedSeries(i, decision) for i, decision in enumerate(route_exam(rule_set, series))]


def try_on_exam(rule_set: RuleSet, study: StudyRecord) -> list[TriedSeries]:
    """Each recorded series of an exam, decided again under `rule_set`."""
    entries = exam_series(study)
    tags = [{**dict(entry.get("tags") or {}), "SeriesInstances": entry.get("instances")} for entry in entries]
    decisions = route_exam(rule_set, tags)
    return [
        TriedSeries(
            i,
            decision,
            series_instance_uid=entry.get("series_instance_uid"),
            series_number=entry.get("series_number"),
            study_id=entry.get("study_id"),
        )
        for i, (entry, decision) in enumerate(zip(entries, decisions, strict=True))
    ]


def rule_set_to_try(rule_sets: RuleSets, tenant: str, given: RuleSet | None) -> tuple[RuleSet, str]:
    """The rule set a trial uses, and which it is: "given", "version N" or "default"."""
    if given is not None:
        return given, "given"
    active: ActiveRuleSet = rule_sets.current(tenant)
    return active.rule_set, "default" if active.version is None else f"version {active.version}"
