"""What the viewer's pages read: a study's status, measures and short-lived links to its volumes.

A viewer grant (voxelpipe.viewer_grants) is the credential here, not a user's token: the pages
carry no user sign-in, and the grant lets them read one study (or one subject's studies) for
minutes. See docs/viewer.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import Request
from pydantic import BaseModel, Field

from voxelpipe.adapters import secrets
from voxelpipe.adapters.storage import Storage
from voxelpipe.analyses.catalogue import REGIONAL_LABELS_FILE, TISSUE_SEG_LABELS_FILE
from voxelpipe.api.problems import Problem
from voxelpipe.api.schemas import StudyView
from voxelpipe.api.views import study_view
from voxelpipe.keys import derived_key, work_key
from voxelpipe.live import live_url
from voxelpipe.pipeline.prepare import CANONICAL_NAME, CONVERTED_VOLUME
from voxelpipe.ports import StudyStore
from voxelpipe.records import StudyRecord
from voxelpipe.status import StudyStatus
from voxelpipe.viewer.legends import LegendEntry, regional_legend, tissue_legend
from voxelpipe.viewer_grants import InvalidGrant, ViewerGrant, grant_key, verify_grant

# Where the live progress WebSocket is (until the API's settings carry it): unset, no live updates.
# The volumes' presigned links live this long: a viewer reloads the data for fresh ones.
VOLUME_URL_EXPIRY = timedelta(minutes=15)
# A subject's studies the viewer shows, newest first: at most this many.
MAX_SUBJECT_STUDIES = 50
# Statuses in which Prepare has written the attempt's canonical volume (work/, kept WORK_DAYS).
PREPARED = frozenset({StudyStatus.RUNNING, StudyStatus.COMPLETED, StudyStatus.FAILED})
_EXPIRED = "the viewer link has expired"


class LegendLabel(BaseModel):
    index: int = Field(description="the voxel value")
    name: str
    colour: str = Field(description="#rrggbb", examples=["#2878ff"])


class ViewerVolume(BaseModel):
    name: str = Field(description="a file name with its type (NiiVue reads the type from it)")
    url: str = Field(description="presigned GET, short-lived")


class ViewerLabelMap(ViewerVolume):
    analysis: str
    legend: list[LegendLabel]


class StudyViewerData(BaseModel):
    study: StudyView
    measures: dict[str, Any] = Field(description="each completed analysis's measures (results.json)")
    volume: ViewerVolume | None = Field(description="the de-identified canonical volume, when kept")
    label_maps: list[ViewerLabelMap]
    urls_expire_at: datetime
    grant_expires_at: datetime
    live_url: str | None = Field(description="the live progress WebSocket; None: no live updates")


class SubjectViewerData(BaseModel):
    subject_ref: str
    studies: list[StudyViewerData] = Field(description="newest first")
    timeline: dict[str, Any] | None = Field(
        default=None,
        description="the subject's timeline (GET /subjects/{ref}/timeline's document, without rate "
        "z-scores): the page's chart",
    )
    grant_expires_at: datetime
    live_url: str | None


def _grant_problem(error: InvalidGrant) -> Problem:
    if str(error).startswith(_EXPIRED):
        return Problem(401, "grant_expired", "The viewer link has expired", f"{error}")
    return Problem(401, "invalid_grant", "The viewer link is not valid", str(error))


def viewer_grant(request: Request) -> ViewerGrant:
    """The grant the request presents (Authorization: Bearer); 401 without a valid one."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Problem(
            401, "unauthenticated", "A viewer grant is required", "no Authorization: Bearer <grant>"
        )
    try:
        return verify_grant(grant_key(secrets.webhook_secret()), token.strip())
    except InvalidGrant as error:
        raise _grant_problem(error) from error


def public_base_url(request: Request) -> str:
    """The API's address as clients reach it: behind API Gateway, its domain and stage (the app
    sees paths without the stage); locally, the request's own base URL."""
    event = request.scope.get("aws.event")
    context = event.get("requestContext") if isinstance(event, dict) else None
    if isinstance(context, dict) and context.get("domainName") and context.get("stage"):
        return f"https://{context['domainName']}/{context['stage']}"
    return str(request.base_url).rstrip("/")


def _legend(entries: list[LegendEntry]) -> list[LegendLabel]:
    return [LegendLabel(index=e.index, name=e.name, colour=e.hex) for e in entries]


def _measures(bucket: Storage, study: StudyRecord) -> dict[str, Any]:
    if study.status != StudyStatus.COMPLETED or study.results_key is None:
        return {}
    document = json.loads(bucket.read(study.results_key))
    return {name: entry.get("measures", {}) for name, entry in (document.get("analyses") or {}).items()}


def study_data(study: StudyRecord, store: StudyStore, bucket: Storage, grant: ViewerGrant) -> StudyViewerData:
    """The study as the viewer opens it: what is there now (a running study's label maps appear as
    its analyses write them)."""
    expires_s = int(VOLUME_URL_EXPIRY.total_seconds())
    study_id = study.study_id
    derived = set(bucket.list_keys(derived_key(study_id) + "/"))
    measures = _measures(bucket, study)
    volume: ViewerVolume | None = None
    converted = derived_key(study_id, CONVERTED_VOLUME)
    if converted in derived:  # the input as Prepare kept it with the results (a DICOM series de-identified)
        volume = ViewerVolume(name="volume.nii.gz", url=bucket.presign_get(converted, expires_s))
    elif study.status in PREPARED:
        # A study prepared before Prepare kept its input: the canonical volume under work/, once
        # it is written (a study is RUNNING before Prepare ends) and until work/ expires.
        canonical = work_key(study_id, int(study.attempt), CANONICAL_NAME)
        if bucket.exists(canonical):
            volume = ViewerVolume(name=CANONICAL_NAME, url=bucket.presign_get(canonical, expires_s))
    label_maps: list[ViewerLabelMap] = []
    tissue = derived_key(study_id, "tissue-seg", TISSUE_SEG_LABELS_FILE)
    if tissue in derived:
        label_maps.append(
            ViewerLabelMap(
                analysis="tissue-seg",
                name=TISSUE_SEG_LABELS_FILE,
                url=bucket.presign_get(tissue, expires_s),
                legend=_legend(tissue_legend()),
            )
        )
    regions = derived_key(study_id, "regional", REGIONAL_LABELS_FILE)
    if regions in derived:
        mapped = (measures.get("regional") or {}).get("regions")
        label_maps.append(
            ViewerLabelMap(
                analysis="regional",
                name=REGIONAL_LABELS_FILE,
                url=bucket.presign_get(regions, expires_s),
                legend=_legend(regional_legend(mapped.keys() if isinstance(mapped, dict) else None)),
            )
        )
    return StudyViewerData(
        study=study_view(study, store),
        measures=measures,
        volume=volume,
        label_maps=label_maps,
        urls_expire_at=datetime.now(UTC) + VOLUME_URL_EXPIRY,
        grant_expires_at=datetime.fromtimestamp(grant.expires_at, UTC),
        live_url=live_url(),
    )


def subject_studies(store: StudyStore, tenant: str, subject_ref: str) -> Iterator[StudyRecord]:
    """The tenant's studies of `subject_ref`, newest first (by scan date, then creation), at most
    MAX_SUBJECT_STUDIES: read through the subject index (docs/subjects.md)."""
    yield from list(reversed(store.studies_of_subject(tenant, subject_ref)))[:MAX_SUBJECT_STUDIES]
