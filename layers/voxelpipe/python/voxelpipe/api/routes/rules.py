"""Routing rule sets (docs/rules.md): a tenant's admins save, list, read, delete and try them.

A rule set is validated when saved (a 422 names the failing field's path, e.g.
`rules.0.condition.field`); saving adds a version, which becomes the active one; deleting marks a
version deleted (the newest left becomes active; none left: voxelpipe's default rule set). Every
change is audited under the tenant's rules trail (keys.rules_audit_key). `POST /rules/test`
changes nothing: it shows what each series would get, explained.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from voxelpipe.api.auth import Action
from voxelpipe.api.dependencies import Caller, Rules, Store, owned_study, request_source, requires
from voxelpipe.api.problems import Problem
from voxelpipe.pipeline import rules as use_cases
from voxelpipe.ports import RuleSetNotFound, RuleSetVersion
from voxelpipe.routing import RuleSet, TagValue

router = APIRouter(prefix="/rules", tags=["rules"])

MAX_TEST_SERIES = 200
CURRENT = "current"


class RuleSetCreated(BaseModel):
    version: int
    active: bool = Field(description="always true: a saved version becomes the active one")


class RuleSetSummary(BaseModel):
    version: int
    active: bool
    deleted: bool
    description: str
    rules: list[str] = Field(description="the rules' names, in order")
    quiet_period_seconds: int
    created_at: datetime
    created_by: str | None = None
    deleted_at: datetime | None = None
    deleted_by: str | None = None


class RuleSetList(BaseModel):
    active_version: int | None = Field(description="the version in use; null: the default rule set")
    items: list[RuleSetSummary] = Field(description="every version, deleted ones included, newest first")


class RuleSetView(BaseModel):
    version: int | None = Field(description="null: voxelpipe's default rule set (none saved)")
    active: bool
    deleted: bool = False
    created_at: datetime | None = None
    created_by: str | None = None
    deleted_at: datetime | None = None
    deleted_by: str | None = None
    rule_set: dict[str, Any]


class RuleTest(BaseModel):
    """Series to try a rule set on: given tag sets, or the series recorded on an uploaded exam."""

    model_config = ConfigDict(extra="forbid")

    series: Annotated[
        list[dict[str, TagValue]] | None,
        Field(
            min_length=1,
            max_length=MAX_TEST_SERIES,
            description="each series' routing tags (DICOM keywords) with SeriesInstances, its instance count",
        ),
    ] = None
    study_id: str | None = Field(default=None, description="an uploaded DICOM exam of the tenant")
    rule_set: RuleSet | None = Field(
        default=None, description="the rule set to try (default: the active one)"
    )

    @model_validator(mode="after")
    def _one_source(self) -> RuleTest:
        if (self.series is None) == (self.study_id is None):
            raise ValueError("give either series or study_id")
        return self


class TriedSeriesView(BaseModel):
    index: int
    series_instance_uid: str | None = None
    series_number: int | None = None
    study_id: str | None = Field(default=None, description="the study the exam made of this series, if any")
    decision: dict[str, Any] = Field(description="selected, action, rule, analyses, ..., explanation, tags")


class RuleTestResult(BaseModel):
    rule_set: str = Field(description='which rule set was tried: "given", "version N" or "default"')
    series: list[TriedSeriesView]


def _summary(entry: RuleSetVersion, active: int | None) -> RuleSetSummary:
    return RuleSetSummary(
        version=entry.version,
        active=entry.version == active,
        deleted=entry.deleted,
        description=entry.rule_set.description,
        rules=[rule.name for rule in entry.rule_set.rules],
        quiet_period_seconds=entry.rule_set.quiet_period_seconds,
        created_at=entry.created_at,
        created_by=entry.created_by,
        deleted_at=entry.deleted_at,
        deleted_by=entry.deleted_by,
    )


def _view(entry: RuleSetVersion, active: int | None) -> RuleSetView:
    return RuleSetView(
        version=entry.version,
        active=entry.version == active,
        deleted=entry.deleted,
        created_at=entry.created_at,
        created_by=entry.created_by,
        deleted_at=entry.deleted_at,
        deleted_by=entry.deleted_by,
        rule_set=entry.rule_set.as_json(),
    )


def _not_found(error: RuleSetNotFound) -> Problem:
    return Problem(404, "rule_set_not_found", "No such rule set version", str(error))


@router.post(
    "", status_code=201, response_model=RuleSetCreated, **requires(Action.MANAGE_RULES, audit="rules.save")
)
def save_rule_set(
    body: RuleSet, caller: Caller, request: Request, store: Store, rules: Rules
) -> RuleSetCreated:
    version = use_cases.save_rule_set(
        rules, store, caller.tenant, body, actor=caller.subject, source=request_source(request)
    )
    return RuleSetCreated(version=version, active=True)


@router.get("", response_model=RuleSetList, **requires(Action.MANAGE_RULES, audit="rules.list"))
def list_rule_sets(caller: Caller, rules: Rules) -> RuleSetList:
    active = rules.current(caller.tenant).version
    return RuleSetList(
        active_version=active, items=[_summary(entry, active) for entry in rules.versions(caller.tenant)]
    )


@router.post(
    "/test", response_model=RuleTestResult, **requires(Action.MANAGE_RULES, 404, 409, audit="rules.test")
)
def test_rule_set(body: RuleTest, caller: Caller, store: Store, rules: Rules) -> RuleTestResult:
    rule_set, which = use_cases.rule_set_to_try(rules, caller.tenant, body.rule_set)
    if body.study_id is not None:
        study = owned_study(store, caller, body.study_id)
        try:
            tried = use_cases.try_on_exam(rule_set, study)
        except use_cases.NoExamSeries as error:
            raise Problem(
                409, "no_exam_series", "The study has no DICOM series recorded", str(error)
            ) from error
    else:
        tried = use_cases.try_on_tags(rule_set, body.series or [])
    return RuleTestResult(
        rule_set=which,
        series=[
            TriedSeriesView(
                index=entry.index,
                series_instance_uid=entry.series_instance_uid,
                series_number=entry.series_number,
                study_id=entry.study_id,
                decision=entry.decision.as_json(),
            )
            for entry in tried
        ],
    )


VersionPath = Annotated[
    str, Path(pattern=r"^(current|[1-9][0-9]{0,9})$", description="a version, or current")
]


@router.get(
    "/{version}", response_model=RuleSetView, **requires(Action.MANAGE_RULES, 404, audit="rules.read")
)
def get_rule_set(version: VersionPath, caller: Caller, rules: Rules) -> RuleSetView:
    active = rules.current(caller.tenant)
    if version == CURRENT:
        if active.version is None:
            return RuleSetView(version=None, active=True, rule_set=active.rule_set.as_json())
        version = str(active.version)
    try:
        return _view(rules.get(caller.tenant, int(version)), active.version)
    except RuleSetNotFound as error:
        raise _not_found(error) from error


@router.delete(
    "/{version}", response_model=RuleSetView, **requires(Action.MANAGE_RULES, 404, audit="rules.delete")
)
def delete_rule_set(
    version: Annotated[int, Path(ge=1, le=9_999_999_999)],
    caller: Caller,
    request: Request,
    store: Store,
    rules: Rules,
) -> RuleSetView:
    try:
        deleted = use_cases.delete_rule_set(
            rules, store, caller.tenant, version, actor=caller.subject, source=request_source(request)
        )
    except RuleSetNotFound as error:
        raise _not_found(error) from error
    return _view(deleted, rules.current(caller.tenant).version)
