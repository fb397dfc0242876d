"""S3 access for the handlers: the few operations the pipeline needs."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Final

import boto3
from botocore.config import Config

from voxelpipe.ports import ObjectInfo
from voxelpipe.wiring import EnvVar

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef


# Where clients reach S3, when that differs from where this code does: the local `voxelpipe serve`
# (its S3 gateway on loopback), or a private deployment's S3 interface endpoint. Unset: S3's names.
PUBLIC_ENDPOINT_ENV = EnvVar.S3_PUBLIC_ENDPOINT
# What iter_chunks reads at a time by default: one read's worth of the body, not the object.
STREAM_CHUNK_BYTES: Final = 1 << 20
# A streamed upload's part size (write_parts): S3's minimum is 5 MiB for every part but the last.
MULTIPART_PART_BYTES: Final = 8 << 20


@cache
def _client() -> S3Client:
    return boto3.client("s3")


@cache
def _presigner(endpoint: str | None) -> S3Client:
    # SigV4 and path-style: a localhost endpoint has no bucket subdomains.
    config = Config(signature_version="s3v4", s3={"addressing_style": "path" if endpoint else "auto"})
    return boto3.client("s3", endpoint_url=endpoint, config=config)


def presigner() -> S3Client:
    return _presigner(os.environ.get(PUBLIC_ENDPOINT_ENV) or None)


@dataclass(frozen=True)
class Storage:
    bucket: str

    @classmethod
    def from_environment(cls) -> Storage:
        return cls(os.environ[EnvVar.BUCKET])

    def head(self, key: str) -> ObjectInfo:
        response = _client().head_object(Bucket=self.bucket, Key=key)
        version = response.get("VersionId")
        return ObjectInfo(
            size=response["ContentLength"],
            content_type=response.get("ContentType"),
            metadata=response.get("Metadata", {}),
            version_id=None if version in (None, "null") else version,
        )

    def exists(self, key: str) -> bool:
        """Whether the object is there now (a HEAD: no listing right needed, only reading)."""
        client = _client()
        try:
            client.head_object(Bucket=self.bucket, Key=key)
        except client.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def read(self, key: str, first_bytes: int | None = None) -> bytes:
        """The object's bytes; with `first_bytes`, only that many from the start (a range read)."""
        if first_bytes is None:
            return _client().get_object(Bucket=self.bucket, Key=key)["Body"].read()
        byte_range = f"bytes=0-{first_bytes - 1}"
        client = _client()
        try:
            return client.get_object(Bucket=self.bucket, Key=key, Range=byte_range)["Body"].read()
        except client.exceptions.ClientError as error:
            # S3 refuses any range of an empty object; its first bytes are simply none.
            if error.response.get("Error", {}).get("Code") == "InvalidRange":
                return b""
            raise

    def iter_chunks(self, key: str, chunk_bytes: int = STREAM_CHUNK_BYTES) -> Iterator[bytes]:
        """The object's bytes in order, at most `chunk_bytes` at a time: never held whole."""
        if chunk_bytes <= 0:
            raise ValueError("chunk_bytes must be > 0")
        body = _client().get_object(Bucket=self.bucket, Key=key)["Body"]
        try:
            yield from body.iter_chunks(chunk_bytes)
        finally:
            body.close()

    def sha256(self, key: str, chunk_bytes: int = 8 * 1024**2) -> str:
        """The object's SHA-256 (hex), streamed: large objects are never held in memory."""
        digest = hashlib.sha256()
        for chunk in self.iter_chunks(key, chunk_bytes):
            digest.update(chunk)
        return digest.hexdigest()

    def write(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        _client().put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def write_parts(
        self,
        key: str,
        first: bytes,
        rest: Iterator[bytes],
        content_type: str = "application/octet-stream",
        part_bytes: int = MULTIPART_PART_BYTES,
    ) -> int:
        """Write `first` then every chunk of `rest` to `key` as one multipart upload, holding at most
        one part (`part_bytes`, at least S3's 5 MiB but the last) in memory; the bytes written. An
        upload left unfinished is aborted by the bucket's lifecycle rule."""
        client = _client()
        upload_id = client.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType=content_type)[
            "UploadId"
        ]
        parts: list[CompletedPartTypeDef] = []
        buffer = bytearray(first)
        written = 0

        def send(data: bytes) -> None:
            number = len(parts) + 1
            answer = client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})

        for chunk in rest:
            buffer += chunk
            while len(buffer) >= part_bytes:
                send(bytes(buffer[:part_bytes]))
                written += part_bytes
                del buffer[:part_bytes]
        if buffer or not parts:
            send(bytes(buffer))
            written += len(buffer)
        client.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )
        return written

    def copy(self, key: str, destination: str) -> None:
        _client().copy_object(
            Bucket=self.bucket, Key=destination, CopySource={"Bucket": self.bucket, "Key": key}
        )

    def move(self, key: str, destination: str) -> None:
        self.copy(key, destination)
        _client().delete_object(Bucket=self.bucket, Key=key)

    def delete_all_versions(self, prefix: str) -> int:
        """Delete every version and delete marker under `prefix` (nothing of it stays); the count."""
        client = _client()
        deleted = 0
        for page in client.get_paginator("list_object_versions").paginate(Bucket=self.bucket, Prefix=prefix):
            entries = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
            objects = [{"Key": e["Key"], "VersionId": e["VersionId"]} for e in entries]
            for start in range(0, len(objects), 1000):
                client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects[start : start + 1000]})  # type: ignore[typeddict-item]
            deleted += len(objects)
        return deleted

    def presign_post(self, key: str, size: int, expires_s: int) -> dict[str, Any]:
        """A form upload of exactly `size` bytes to exactly `key` (S3 enforces both)."""
        return presigner().generate_presigned_post(
            Bucket=self.bucket,
            Key=key,
            Conditions=[["content-length-range", size, size]],
            ExpiresIn=expires_s,
        )

    def presign_get(self, key: str, expires_s: int) -> str:
        return presigner().generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_s
        )

    def presign_multipart(self, key: str, size: int, part_size: int, expires_s: int) -> dict[str, Any]:
        """A multipart upload: one presigned URL per part, and one to complete it."""
        upload_id = _client().create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        count = max(1, -(-size // part_size))
        signer = presigner()
        parts = [
            {
                "part_number": number,
                "url": signer.generate_presigned_url(
                    "upload_part",
                    Params={"Bucket": self.bucket, "Key": key, "UploadId": upload_id, "PartNumber": number},
                    ExpiresIn=expires_s,
                ),
            }
            for number in range(1, count + 1)
        ]
        complete = signer.generate_presigned_url(
            "complete_multipart_upload",
            Params={"Bucket": self.bucket, "Key": key, "UploadId": upload_id},
            ExpiresIn=expires_s,
            HttpMethod="POST",
        )
        return {"upload_id": upload_id, "part_size": part_size, "parts": parts, "complete_url": complete}

    def list_keys(self, prefix: str) -> list[str]:
        paginator = _client().get_paginator("list_objects_v2")
        return [
            item["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]
