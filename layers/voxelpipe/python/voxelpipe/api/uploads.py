"""Where clients upload: presigned form POSTs, or multipart uploads for large files."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from voxelpipe.adapters.storage import Storage
from voxelpipe.api.schemas import PartTarget, UploadTarget

# Presigned URLs live this long; uploads above the threshold go multipart (S3's single PUT/POST
# tops out at 5 GB, and parts can be retried one by one).
URL_EXPIRY = timedelta(hours=1)
MULTIPART_THRESHOLD_ENV = "VOXELPIPE_MULTIPART_THRESHOLD_BYTES"
MULTIPART_PART_ENV = "VOXELPIPE_MULTIPART_PART_BYTES"
DEFAULT_MULTIPART_THRESHOLD = 100 * 1024**2
DEFAULT_PART_BYTES = 64 * 1024**2


def expiry() -> datetime:
    """When URLs presigned now expire."""
    return datetime.now(UTC) + URL_EXPIRY


def post_target(storage: Storage, key: str, filename: str, size: int, expires_at: datetime) -> UploadTarget:
    """A presigned form POST of `size` bytes to `key`."""
    post = storage.presign_post(key, size, int(URL_EXPIRY.total_seconds()))
    return UploadTarget(
        file=filename, key=key, method="post", url=post["url"], fields=post["fields"], expires_at=expires_at
    )


def upload_target(storage: Storage, key: str, filename: str, size: int, expires_at: datetime) -> UploadTarget:
    """A form POST for a file up to the multipart threshold; above it, a multipart upload."""
    threshold = int(os.environ.get(MULTIPART_THRESHOLD_ENV, DEFAULT_MULTIPART_THRESHOLD))
    if size <= threshold:
        return post_target(storage, key, filename, size, expires_at)
    part_size = max(5 * 1024**2, int(os.environ.get(MULTIPART_PART_ENV, DEFAULT_PART_BYTES)))
    multipart = storage.presign_multipart(key, size, part_size, int(URL_EXPIRY.total_seconds()))
    return UploadTarget(
        file=filename,
        key=key,
        method="multipart",
        upload_id=multipart["upload_id"],
        part_size=multipart["part_size"],
        parts=[PartTarget(**part) for part in multipart["parts"]],
        complete_url=multipart["complete_url"],
        expires_at=expires_at,
    )
