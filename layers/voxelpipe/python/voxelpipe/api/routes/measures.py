"""Cohort export: the tenant's measures across its studies, as CSV or Parquet (docs/api.md).

In AWS API Gateway sends GET /measures to the export function (function_specs.EXPORT), which runs
this app with pyarrow; its answer must fit Lambda's 6 MB response payload, so with
`VOXELPIPE_EXPORT_INLINE_MAX_BYTES` set the export is produced into memory up to that size, and
beyond it continues as a multipart upload to exports/ (one part in memory at a time) and the answer
is a 303 to a presigned GET. Without the setting (`voxelpipe serve`, tests) the answer streams.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response, StreamingResponse

from voxelpipe.api.audit import note
from voxelpipe.api.auth import Action
from voxelpipe.api.dependencies import Bucket, Caller, Store, requires
from voxelpipe.api.problems import Problem, ProblemDetails, invalid_request
from voxelpipe.api.uploads import URL_EXPIRY
from voxelpipe.cohort import MeasureFilter, measure_pages
from voxelpipe.keys import export_key
from voxelpipe.measure_tables import TableFormat, parquet_available, table_chunks
from voxelpipe.status import StudyStatus
from voxelpipe.wiring import EnvVar

router = APIRouter(prefix="/measures", tags=["measures"])

SUBJECT_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"  # as POST /studies takes subject_ref
ANALYSIS_PATTERN = r"^[a-z0-9][a-z0-9:_-]{0,99}$"  # catalogue names and model:NAME


def inline_max_bytes() -> int | None:
    value = os.environ.get(EnvVar.EXPORT_INLINE_MAX_BYTES)
    return int(value) if value else None


def _route_spec() -> dict[str, Any]:
    """The route's access (any role may read), and its answers beside the problems."""
    spec = requires(Action.READ, audit="measures.export")
    spec["responses"] = {
        **spec["responses"],
        200: {
            "description": "The rows, one per study and measure (columns: docs/api.md)",
            "content": {fmt.media_type: {} for fmt in TableFormat},
        },
        303: {"description": "Too large for one response: the file, at a presigned GET URL valid an hour"},
        422: {"model": ProblemDetails, "description": "A format or filter that is not valid"},
    }
    return spec


@router.get("", response_class=Response, **_route_spec())
def export_measures(
    caller: Caller,
    request: Request,
    store: Store,
    bucket: Bucket,
    format: Annotated[TableFormat, Query(description="csv or parquet")] = TableFormat.CSV,
    subject: Annotated[
        str | None, Query(pattern=SUBJECT_PATTERN, description="only this subject_ref's studies")
    ] = None,
    scan_from: Annotated[
        date | None, Query(alias="from", description="scan date on or after (YYYY-MM-DD)")
    ] = None,
    scan_to: Annotated[
        date | None, Query(alias="to", description="scan date on or before (YYYY-MM-DD)")
    ] = None,
    since: Annotated[datetime | None, Query(description="created at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="created at or before (ISO 8601)")] = None,
    analysis: Annotated[
        list[Annotated[str, Query(pattern=ANALYSIS_PATTERN)]] | None,
        Query(description="only this analysis (repeat the parameter for several)"),
    ] = None,
    status: Annotated[StudyStatus, Query(description="studies in this status")] = StudyStatus.COMPLETED,
) -> Response:
    if scan_from and scan_to and scan_from > scan_to:
        raise invalid_request("from", f"the scan date range is empty: from {scan_from} is after to {scan_to}")
    if since and until and since > until:
        raise invalid_request("since", f"the creation range is empty: since {since} is after until {until}")
    if format is TableFormat.PARQUET and not parquet_available():
        raise Problem(
            503,
            "export_unavailable",
            "Parquet exports are not available here",
            "pyarrow is not installed (the export extra); ask for format=csv",
        )
    filters = MeasureFilter(
        status=status,
        subject_ref=subject,
        scan_from=scan_from,
        scan_to=scan_to,
        since=since,
        until=until,
        analyses=frozenset(analysis or ()),
    )
    # The audit row: what was exported (the filters; pseudonymous like every key).
    note(request, format=format.value, subject_ref=subject, status=status.value)
    chunks = table_chunks(format, measure_pages(store, caller.tenant, filters))
    headers = {"content-disposition": f'attachment; filename="measures.{format.value}"'}
    limit = inline_max_bytes()
    if limit is None:
        return StreamingResponse(chunks, media_type=format.media_type, headers=headers)
    head, rest = _first_bytes(chunks, limit)
    if rest is None:
        return Response(head, media_type=format.media_type, headers=headers)
    key = export_key(caller.tenant, uuid.uuid4().hex, format.value)
    bucket.write_parts(key, head, rest, content_type=format.media_type)
    url = bucket.presign_get(key, int(URL_EXPIRY.total_seconds()))
    note(request, download_links=1)  # the presigned link issued is an access too
    return RedirectResponse(url, status_code=303)


def _first_bytes(chunks: Iterator[bytes], limit: int) -> tuple[bytes, Iterator[bytes] | None]:
    """The export's bytes if they come to at most `limit`, with None; else those read so far (a
    little over `limit`) with the iterator of the rest."""
    head = bytearray()
    for chunk in chunks:
        head += chunk
        if len(head) > limit:
            return bytes(head), chunks
    return bytes(head), None
