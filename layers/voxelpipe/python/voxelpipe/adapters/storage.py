"""S3 access for the handlers: the few operations the pipeline needs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

import boto3

from voxelpipe.wiring import EnvVar

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


@cache
def _client() -> S3Client:
    return boto3.client("s3")


@dataclass(frozen=True)
class ObjectInfo:
    size: int
    content_type: str | None
    metadata: dict[str, str]
    version_id: str | None


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

    def write(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        _client().put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)

    def move(self, key: str, destination: str) -> None:
        _client().copy_object(
            Bucket=self.bucket, Key=destination, CopySource={"Bucket": self.bucket, "Key": key}
        )
        _client().delete_object(Bucket=self.bucket, Key=key)

    def list_keys(self, prefix: str) -> list[str]:
        paginator = _client().get_paginator("list_objects_v2")
        return [
            item["Key"]
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        ]
