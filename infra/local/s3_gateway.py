"""`voxelpipe serve`'s S3 endpoint: the presigned requests the API hands out, checked as S3 checks them.

A moto server would answer anyone everything: every bucket and key, every other service, and its
own reset API. This gateway serves only what the API's clients need — the presigned form POST of
an upload, the presigned GET of an artifact, and a multipart upload's presigned part PUTs and
complete POST — and checks each as S3 does (`infra/local/s3_auth.py`); it answers CORS as S3 does,
from the bucket's CORS configuration (`infra/local/s3_cors.py`), preflights included. It then performs the
request with an in-process S3 client in the local cloud's moto, acting as the signer (the API
function, whose role the local IAM holds it to), so the bucket's notification runs ingest exactly
as an SDK upload does. Anything else gets S3's refusal, as S3's XML error.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from email.utils import format_datetime
from tempfile import SpooledTemporaryFile
from typing import IO, TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote
from xml.etree import ElementTree

from botocore.exceptions import ClientError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NeedData

from infra.local import s3_cors
from infra.local.s3_auth import (
    MAX_FIELD_BYTES,
    FormUpload,
    Keys,
    PresignedRequest,
    S3Error,
    access_denied,
    check_length,
    check_post_form,
    check_presigned,
    is_presigned,
    parse_query,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

T = TypeVar("T")

log = logging.getLogger(__name__)

S3_NAMESPACE = "http://s3.amazonaws.com/doc/2006-03-01/"
METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS"})
SPOOL_BYTES = 8 * 1024**2  # request bodies past this go to a temporary file
MAX_XML_BYTES = 1024**2
SERVED = (
    "the local S3 endpoint serves only presigned POST uploads and presigned GetObject, UploadPart "
    "and CompleteMultipartUpload requests"
)
# A form's fields that become the object's headers; `key`, the policy's and the signature's
# fields are the request's own. Any other field is refused rather than silently dropped.
OBJECT_FIELDS = {
    "content-type": "ContentType",
    "cache-control": "CacheControl",
    "content-disposition": "ContentDisposition",
    "content-encoding": "ContentEncoding",
    "expires": "Expires",
}
REQUEST_FIELDS = frozenset(
    {
        "key",
        "bucket",
        "policy",
        "success_action_status",
        "x-amz-algorithm",
        "x-amz-credential",
        "x-amz-date",
        "x-amz-signature",
        "x-amz-security-token",
    }
)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _xml(root: str, elements: Mapping[str, str], namespace: str | None = None) -> bytes:
    element = ElementTree.Element(root, {"xmlns": namespace} if namespace else {})
    for name, text in elements.items():
        ElementTree.SubElement(element, name).text = text
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(element)


def error_response(error: S3Error, resource: str) -> Response:
    """S3's error answer: `<Error><Code>…</Code><Message>…</Message>…</Error>`."""
    request_id = secrets.token_hex(8).upper()
    body = _xml(
        "Error",
        {
            "Code": error.code,
            "Message": error.message,
            **error.details,
            "Resource": resource,
            "RequestId": request_id,
        },
    )
    headers = {"content-type": "application/xml", "x-amz-request-id": request_id}
    return Response(body, status_code=error.status, headers=headers)


def _from_client_error(error: ClientError) -> S3Error:
    """The performed call's refusal (moto's, or the local IAM's), passed on as S3 answers it."""
    details: Mapping[str, Any] = error.response.get("Error", {})
    code = str(details.get("Code", "InternalError"))
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if not status:  # raised in process (the local IAM): no HTTP answer to read it from
        status = 403 if code == "AccessDenied" else 500
    return S3Error(status, code, str(details.get("Message", "")))


def _object_params(upload: FormUpload) -> dict[str, Any]:
    """PutObject's parameters for a form's fields."""
    params: dict[str, Any] = {}
    metadata: dict[str, str] = {}
    for name, value in upload.fields.items():
        if name in OBJECT_FIELDS:
            params[OBJECT_FIELDS[name]] = value
        elif name.startswith("x-amz-meta-"):
            metadata[name.removeprefix("x-amz-meta-")] = value
        elif name not in REQUEST_FIELDS and name != "file" and not name.startswith("x-ignore-"):
            raise S3Error(
                501,
                "NotImplemented",
                "A header you provided implies functionality that is not implemented",
                Header=name,
            )
    if metadata:
        params["Metadata"] = metadata
    return params


class _Form:
    """A multipart/form-data body read as S3 reads it: the fields up to `file`, then the file's bytes
    (spooled, and counted past the most the policy allows); whatever follows the file is ignored.

    `on_file` checks the fields when the file starts: a refused form's file is read, not kept."""

    def __init__(
        self, boundary: bytes, file: IO[bytes], on_file: Callable[[list[tuple[str, str]], str], FormUpload]
    ) -> None:
        self._decoder = MultipartDecoder(boundary, max_parts=1000)
        self._on_file = on_file
        self.fields: list[tuple[str, str]] = []
        self.file = file
        self.size = 0
        self.upload: FormUpload | None = None
        self.refusal: S3Error | None = None
        self._field: str | None = None  # the field being read, until the file starts
        self._value = bytearray()
        self._field_bytes = 0
        self._in_file = False
        self._done = False  # the file has ended: the rest is ignored

    def feed(self, data: bytes | None) -> None:
        """The body's next chunk; None at its end."""
        try:
            self._decoder.receive_data(data)
            while not isinstance(event := self._decoder.next_event(), NeedData | Epilogue):
                if isinstance(event, Field | File):
                    self._start(event)
                elif isinstance(event, Data):
                    self._data(event)
        except (ValueError, RequestEntityTooLarge):  # werkzeug's word for a body it cannot parse
            raise S3Error(
                400,
                "MalformedPOSTRequest",
                "The body of your POST request is not well-formed multipart/form-data.",
            ) from None

    def _start(self, part: Field | File) -> None:
        if self._done:
            return
        if part.name.lower() != "file":
            self._field, self._value = part.name, bytearray()
            self._count(len(part.name))
            return
        self._in_file = True
        try:
            self.upload = self._on_file(self.fields, part.filename if isinstance(part, File) else "")
        except S3Error as refusal:
            self.refusal = refusal

    def _data(self, data: Data) -> None:
        if self._done:
            return
        if self._in_file:
            self.size += len(data.data)
            limit = self.upload.length_range if self.upload else (0, 0)  # a refused file is not kept
            if limit is None or self.size <= limit[1]:
                self.file.write(data.data)
            self._done = not data.more_data
            return
        self._count(len(data.data))
        self._value.extend(data.data)
        if not data.more_data and self._field is not None:
            self.fields.append((self._field, self._value.decode("utf-8", errors="replace")))
            self._field = None

    def _count(self, size: int) -> None:
        self._field_bytes += size
        if self._field_bytes > MAX_FIELD_BYTES:
            raise S3Error(
                400,
                "MaxPostPreDataLengthExceededError",
                "Your POST request fields preceding the upload file were too large.",
                MaxPostPreDataLength=MAX_FIELD_BYTES,
            )


class S3Gateway:
    """The ASGI app of the local S3 endpoint.

    `keys` are the credentials whose signatures it accepts; `acting` is what the checked requests
    run in (the local cloud's `acting_as` the signer); `client` performs them in process."""

    def __init__(
        self,
        keys: Keys,
        region: str,
        client: S3Client,
        acting: Callable[[], AbstractContextManager[None]],
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.keys, self.region, self.client = keys, region, client
        self._acting, self._clock = acting, clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        try:
            response = await self._answer(request)
        except S3Error as error:
            response = error_response(error, request.url.path)
        except Exception:  # a bug here: still S3's shape, and the traceback in the log
            log.exception("the S3 gateway failed on %s %s", request.method, request.url.path)
            internal = S3Error(500, "InternalError", "We encountered an internal error. Please try again.")
            response = error_response(internal, request.url.path)
        origin = request.headers.get("origin")
        if origin and request.method != "OPTIONS":  # a preflight's answer has its own (_preflight)
            rules = await self._cors_rules(self._bucket_of(request))
            response.headers.update(s3_cors.actual(rules, origin, request.method))
        await response(scope, receive, send)

    @staticmethod
    def _bucket_of(request: Request) -> str:
        return str(request.scope["path"]).lstrip("/").partition("/")[0]

    async def _cors_rules(self, bucket: str) -> list[s3_cors.CorsRule] | None:
        """The bucket's CORS rules (None: it has no CORS configuration). S3 reads them itself, not
        as the request's signer, so this call is not held to any role."""

        def read() -> list[s3_cors.CorsRule] | None:
            try:
                rules = self.client.get_bucket_cors(Bucket=bucket)["CORSRules"]
            except ClientError:  # NoSuchCORSConfiguration, or no such bucket
                return None
            return [s3_cors.CorsRule.from_s3(rule) for rule in rules]

        return await run_in_threadpool(read) if bucket else None

    async def _preflight(self, request: Request) -> Response:
        headers = s3_cors.preflight(
            await self._cors_rules(self._bucket_of(request)),
            request.headers.get("origin"),
            request.headers.get("access-control-request-method"),
            request.headers.get("access-control-request-headers"),
        )
        return Response(headers=headers)

    async def _answer(self, request: Request) -> Response:
        method = request.method
        if method not in METHODS:
            raise S3Error(
                405,
                "MethodNotAllowed",
                "The specified method is not allowed against this resource.",
                Method=method,
                ResourceType="OBJECT",
            )
        if method == "OPTIONS":  # a CORS preflight: answered from the bucket's rules, unsigned
            return await self._preflight(request)
        bucket, _, key = request.scope["path"].lstrip("/").partition("/")
        query = parse_query(request.scope["query_string"].decode("latin-1"))
        headers = {name: ",".join(request.headers.getlist(name)) for name in request.headers}
        if "authorization" in headers:
            raise self._header_signed(headers["authorization"])
        if is_presigned(query):
            raw_path = request.scope.get("raw_path") or request.scope["path"].encode()
            presigned = PresignedRequest(method, raw_path.decode("latin-1"), query, headers)
            check_presigned(presigned, self.keys, self.region, self._clock())
            return await self._presigned(request, bucket, key, query)
        if method == "POST" and bucket and not key and not query:
            return await self._form_upload(request, bucket)
        raise access_denied()  # anonymous: the bucket is private, and nothing here is public

    def _header_signed(self, authorization: str) -> S3Error:
        """SDK-style (Authorization header) requests: only this process holds the key that could
        sign them, and the API's clients never send them."""
        scheme, _, rest = authorization.partition(" ")
        if scheme != "AWS4-HMAC-SHA256":
            return S3Error(
                400, "InvalidArgument", "Unsupported Authorization Type", ArgumentName="Authorization"
            )
        credential = next((p.strip() for p in rest.split(",") if p.strip().startswith("Credential=")), "")
        access_key = credential.removeprefix("Credential=").split("/")[0]
        if access_key not in self.keys:
            return S3Error(
                403,
                "InvalidAccessKeyId",
                "The AWS Access Key Id you provided does not exist in our records.",
                AWSAccessKeyId=access_key,
            )
        return S3Error(501, "NotImplemented", f"Header-signed requests are not implemented: {SERVED}")

    async def _perform(self, call: Callable[[], T]) -> T:
        """Run an S3 call in a worker thread, as the signer."""

        def as_signer() -> T:
            with self._acting():
                try:
                    return call()
                except ClientError as error:
                    raise _from_client_error(error) from error

        return await run_in_threadpool(as_signer)

    # -- presigned URLs ----------------------------------------------------------------------
    async def _presigned(
        self, request: Request, bucket: str, key: str, query: list[tuple[str, str]]
    ) -> Response:
        params = {name: value for name, value in query if not name.startswith("X-Amz-")}
        if key and request.method == "GET" and not params:
            return await self._get_object(bucket, key)
        if key and request.method == "PUT" and params.keys() == {"partNumber", "uploadId"}:
            return await self._upload_part(request, bucket, key, params["uploadId"], params["partNumber"])
        if key and request.method == "POST" and params.keys() == {"uploadId"}:
            return await self._complete(request, bucket, key, params["uploadId"])
        raise S3Error(501, "NotImplemented", f"This request is not implemented: {SERVED}")

    async def _get_object(self, bucket: str, key: str) -> Response:
        def get() -> tuple[dict[str, Any], bytes]:
            response = self.client.get_object(Bucket=bucket, Key=key)
            return dict(response), response["Body"].read()

        response, body = await self._perform(get)
        headers = {
            "content-type": response.get("ContentType") or "binary/octet-stream",
            "etag": response["ETag"],
            "last-modified": format_datetime(response["LastModified"].astimezone(UTC), usegmt=True),
        }
        if response.get("VersionId"):
            headers["x-amz-version-id"] = response["VersionId"]
        return Response(body, headers=headers)

    async def _upload_part(
        self, request: Request, bucket: str, key: str, upload_id: str, part_number: str
    ) -> Response:
        if not part_number.isdigit() or not 1 <= int(part_number) <= 10000:
            raise S3Error(
                400,
                "InvalidArgument",
                "Part number must be an integer between 1 and 10000, inclusive",
                ArgumentName="partNumber",
                ArgumentValue=part_number,
            )
        with SpooledTemporaryFile(max_size=SPOOL_BYTES) as body:
            async for chunk in request.stream():
                body.write(chunk)
            body.seek(0)
            response = await self._perform(
                lambda: self.client.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=int(part_number), Body=body
                )
            )
        return Response(headers={"etag": response["ETag"]})

    async def _complete(self, request: Request, bucket: str, key: str, upload_id: str) -> Response:
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > MAX_XML_BYTES:
                raise S3Error(400, "MaxMessageLengthExceeded", "Your request was too big.")
        parts = _completed_parts(bytes(body))
        response = await self._perform(
            lambda: self.client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        )
        result = {
            "Location": f"{str(request.base_url).rstrip('/')}/{bucket}/{quote(key)}",
            "Bucket": bucket,
            "Key": key,
            "ETag": response["ETag"],
        }
        return Response(
            _xml("CompleteMultipartUploadResult", result, S3_NAMESPACE),
            headers={"content-type": "application/xml"},
        )

    # -- presigned POST forms ----------------------------------------------------------------
    async def _form_upload(self, request: Request, bucket: str) -> Response:
        content_type, options = parse_options_header(request.headers.get("content-type"))
        if content_type != "multipart/form-data" or "boundary" not in options:
            raise S3Error(
                412,
                "PreconditionFailed",
                "Bucket POST must be of the enclosure-type multipart/form-data",
                Condition="Bucket POST must be of the enclosure-type-multipart/form-data",
            )
        params: dict[str, Any] = {}

        def on_file(fields: list[tuple[str, str]], filename: str) -> FormUpload:
            upload = check_post_form(fields, bucket, filename, self.keys, self.region, self._clock())
            params.update(_object_params(upload))
            return upload

        with SpooledTemporaryFile(max_size=SPOOL_BYTES) as file:
            form = _Form(options["boundary"].encode("latin-1"), file, on_file)
            async for chunk in request.stream():
                form.feed(chunk)
            form.feed(None)
            if form.refusal is not None:
                raise form.refusal
            upload = form.upload
            if upload is None:
                raise S3Error(
                    400,
                    "InvalidArgument",
                    "POST requires exactly one file upload per request.",
                    ArgumentName="file",
                    ArgumentValue="0",
                )
            check_length(upload, form.size)
            form.file.seek(0)
            response = await self._perform(
                lambda: self.client.put_object(Bucket=bucket, Key=upload.key, Body=form.file, **params)
            )
        location = f"{str(request.base_url).rstrip('/')}/{bucket}/{quote(upload.key)}"
        headers = {"etag": response["ETag"], "location": location}
        status = upload.fields.get("success_action_status")
        if status == "201":
            result = {"Location": location, "Bucket": bucket, "Key": upload.key, "ETag": response["ETag"]}
            return Response(
                _xml("PostResponse", result), 201, headers={**headers, "content-type": "application/xml"}
            )
        return Response(status_code=200 if status == "200" else 204, headers=headers)


def _completed_parts(body: bytes) -> list[CompletedPartTypeDef]:
    """The parts a CompleteMultipartUpload document lists."""
    malformed = S3Error(
        400,
        "MalformedXML",
        "The XML you provided was not well-formed or did not validate against our published schema",
    )
    try:
        root = ElementTree.fromstring(body)
        parts: list[CompletedPartTypeDef] = [
            {"PartNumber": int(part.findtext("{*}PartNumber") or ""), "ETag": part.findtext("{*}ETag") or ""}
            for part in root.iterfind("{*}Part")
        ]
    except (ElementTree.ParseError, ValueError):
        raise malformed from None
    if not root.tag.endswith("CompleteMultipartUpload") or not parts:
        raise malformed
    return parts
