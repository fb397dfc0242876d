"""Live progress (voxelpipe.live): connections, subscriptions, and pushing study changes to them.

The same use cases run behind API Gateway's WebSocket API (functions/live, functions/live_push) and
behind `voxelpipe serve`'s local WebSocket; only the adapters differ.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from voxelpipe.live import (
    LiveCaller,
    SubscriptionRequest,
    error_message,
    follows,
    parse_request,
    status_message,
    step_message,
)
from voxelpipe.observability import logger
from voxelpipe.ports import ConnectionStore, LiveConnections, StudyStore
from voxelpipe.records import ALL_STUDIES, ConnectionRecord
from voxelpipe.status_events import StudyStatusChanged, StudyStepChanged


def connect(
    connections: ConnectionStore, connection_id: str, caller: LiveCaller, now: float
) -> ConnectionRecord:
    """Record a connection its caller's token opened; it follows nothing until it subscribes."""
    record = ConnectionRecord(
        connection_id,
        tenant=caller.tenant,
        subject=caller.subject,
        role=caller.role,
        grant_study_id=caller.grant_study_id,
        grant_subject_ref=caller.grant_subject_ref,
        studies=[],
        connected_at=datetime.fromtimestamp(now, UTC),
        expires_at=datetime.fromtimestamp(caller.expires_at, UTC),
    )
    connections.save_connection(record)
    return record


def disconnect(connections: ConnectionStore, connection_id: str) -> None:
    connections.delete_connection(connection_id)


def _may_follow(
    connection: ConnectionRecord, request: SubscriptionRequest, studies: StudyStore
) -> dict[str, Any] | None:
    """None when the connection may follow what it asks for, else the error to answer with."""
    if request.study_id is None:
        if connection.role is None:
            return error_message(
                "forbidden", "a viewer link may follow only the studies it opens: name a study_id"
            )
        return None
    study = studies.get_study(request.study_id)
    # Another tenant's study is refused exactly as a missing one.
    if study is None or study.tenant != connection.tenant:
        return error_message("study_not_found", f"no study {request.study_id}")
    if connection.role is None:
        # The live function has PyJWT (viewer_grants imports it); the push, which never gets
        # here, goes without.
        from voxelpipe.viewer_grants import ViewerGrant

        grant = ViewerGrant(
            tenant=connection.tenant,
            issued_to=connection.subject,
            expires_at=int(connection.expires_at.timestamp()) if connection.expires_at else 0,
            study_id=connection.grant_study_id,
            subject_ref=connection.grant_subject_ref,
        )
        if not grant.covers(study.tenant, study.study_id, (study.subject or {}).get("subject_ref")):
            return error_message("study_not_found", f"no study {request.study_id}")
    return None


def handle_message(
    connections: ConnectionStore, studies: StudyStore, connection_id: str, body: str | None
) -> dict[str, Any]:
    """Apply a client's subscribe/unsubscribe; the message to answer it with."""
    request = parse_request(body)
    if isinstance(request, dict):
        return request
    connection = connections.get_connection(connection_id)
    if connection is None:
        return error_message("gone", "this connection is not known (reconnect)")
    target = request.study_id or ALL_STUDIES
    following = list(connection.studies)
    if request.action == "unsubscribe":
        following = [study for study in following if study != target]
        connections.set_studies(connection_id, following)
        return {"type": "unsubscribed", "study_id": request.study_id, "studies": following}
    refusal = _may_follow(connection, request, studies)
    if refusal is not None:
        return refusal
    if target not in following:
        following.append(target)
    connections.set_studies(connection_id, following)
    return {"type": "subscribed", "study_id": request.study_id, "studies": following}


def push(
    event: StudyStatusChanged | StudyStepChanged,
    connections: ConnectionStore,
    live: LiveConnections,
    now: float,
) -> int:
    """Send a study's change to every connection of its tenant that follows it; connections found
    gone are deleted. Returns how many were sent to. A tenant without connections costs one query."""
    candidates = connections.tenant_connections(event.tenant)
    if not candidates:
        return 0
    message = status_message(event) if isinstance(event, StudyStatusChanged) else step_message(event)
    data = json.dumps(message).encode()
    sent = 0
    for connection in candidates:
        if not follows(connection, event.study_id, now):
            continue
        if live.post(connection.connection_id, data):
            sent += 1
        else:
            logger.info("live connection gone", extra={"connection_id": connection.connection_id})
            connections.delete_connection(connection.connection_id)
    return sent
