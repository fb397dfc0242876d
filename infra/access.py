"""What each function may do, read from its code: the least-privilege half of the wiring.

A function's environment (wiring.FunctionSpec.env) says which resources it is told of; this
module says what it may do with them. A function that is told of the bucket must be listed in
BUCKET_ACCESS (synthesis fails otherwise), so a new function starts with no S3 rights.
"""

from __future__ import annotations

from enum import Enum

from infra.security import BucketAccess
from voxelpipe.wiring import (
    API,
    DISPATCH,
    FINALIZE,
    INGEST,
    MARK_FAILED,
    PREPARE,
    RUN_ANALYSIS,
    Prefix,
    Resource,
)

UPLOADS, QUARANTINE, DERIVED, WORK = Prefix.UPLOADS, Prefix.QUARANTINE, Prefix.DERIVED, Prefix.WORK
ALL_PREFIXES = (UPLOADS, QUARANTINE, DERIVED, WORK)

BUCKET_ACCESS: dict[str, BucketAccess] = {
    # Reads each upload (HEAD and range reads are s3:GetObject), lists a DICOM study's uploads,
    # and moves rejected ones to quarantine/ (copy = read + write, then delete).
    INGEST.name: BucketAccess(read=[UPLOADS], write=[QUARANTINE], delete=[UPLOADS], list=[UPLOADS]),
    # Reads the upload, writes the canonical volume (work/) and converted volume (derived/),
    # keeps DICOM originals under work/ if so configured, then removes every version of the upload.
    PREPARE.name: BucketAccess(
        read=[UPLOADS],
        write=[DERIVED, WORK],
        delete=[UPLOADS],
        list=[UPLOADS],
        list_versions=[UPLOADS],
    ),
    # Reads the prepared volume and earlier analyses' outputs; writes artifacts and outputs.
    RUN_ANALYSIS.name: BucketAccess(read=[WORK, DERIVED], write=[WORK, DERIVED]),
    # Writes results.json.
    FINALIZE.name: BucketAccess(write=[DERIVED]),
    # Presigns uploads (POST and multipart, signed by this role: s3:PutObject) and artifact
    # downloads; completing a rejected DICOM study quarantines it; deleting a study removes every
    # version of every object it has.
    API.name: BucketAccess(
        read=[UPLOADS, DERIVED],
        write=[UPLOADS, QUARANTINE],
        delete=ALL_PREFIXES,
        list=[UPLOADS, DERIVED],
        list_versions=ALL_PREFIXES,
    ),
}

# Status tables a function reads but never writes (everything else it is told of: read-write).
READ_ONLY_TABLES: dict[str, frozenset[Resource]] = {
    # Only DICOM ingest and the API's /complete touch the objects table.
    spec.name: frozenset({Resource.OBJECTS_TABLE})
    for spec in (DISPATCH, PREPARE, RUN_ANALYSIS, FINALIZE, MARK_FAILED)
}


class ExecutionAccess(Enum):
    START = "start"  # states:StartExecution on the state machine
    STOP = "stop"  # states:DescribeExecution and states:StopExecution on its executions


STATE_MACHINE_ACCESS: dict[str, ExecutionAccess] = {
    DISPATCH.name: ExecutionAccess.START,
    API.name: ExecutionAccess.STOP,  # deleting a study stops its running execution
}
