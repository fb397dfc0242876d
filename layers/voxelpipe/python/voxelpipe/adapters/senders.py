"""Sending DICOM objects to a destination: STOW-RS (urllib3, which boto3 brings, with the
multipart/related encoder voxelpipe.dicom.web uses), C-STORE (pynetdicom: the egress function's
DIMSE dependency layer) and S3 PutObject with the credentials of a role assumed in the
destination's account.

Each `send` returns only once the destination accepted the object, so the caller may record it
acknowledged; anything else raises SendFailed.
"""

from __future__ import annotations

import base64
import io
import ssl
from typing import TYPE_CHECKING, Any

import boto3
import urllib3

from voxelpipe.deliveries import OutputObject
from voxelpipe.destinations import Credentials, DicomWebDestination, DimseDestination, HttpAuth, S3Destination
from voxelpipe.dicom.web import multipart_related
from voxelpipe.ports import SendFailed

if TYPE_CHECKING:
    from voxelpipe.ports import AnyDestination, Sender

TIMEOUT_S = 30.0
ROLE_SESSION_NAME = "voxelpipe-egress"


class StowRsSender:
    """POSTs each object to the destination's STOW-RS URL as a one-part multipart/related body."""

    def __init__(self, destination: DicomWebDestination, credentials: Credentials | None) -> None:
        self.url = str(destination.url)
        self.headers = {"Accept": "application/dicom+json", "User-Agent": "voxelpipe-egress/1"}
        if destination.auth is HttpAuth.BASIC:
            pair = f"{destination.username}:{(credentials or Credentials()).password or ''}"
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        elif destination.auth is HttpAuth.BEARER:
            self.headers["Authorization"] = f"Bearer {(credentials or Credentials()).token or ''}"
        # Never a redirect: the object goes where the tenant said, or nowhere.
        self.http = urllib3.PoolManager(timeout=urllib3.Timeout(total=TIMEOUT_S), retries=False)

    def send(self, data: bytes, item: OutputObject) -> None:
        body, content_type = multipart_related([(data, "application/dicom")])
        try:
            response = self.http.request(
                "POST", self.url, body=body, headers={**self.headers, "Content-Type": content_type}
            )
        except urllib3.exceptions.HTTPError as error:
            raise SendFailed(f"STOW-RS: {type(error).__name__}: {error}") from error
        # 200: stored; 202: some stored (ours is one instance: check it is not in the failed list).
        if response.status == 202 or not 200 <= response.status < 300:
            raise SendFailed(f"STOW-RS answered {response.status}")

    def close(self) -> None:
        self.http.clear()


class DimseSender:
    """One C-STORE association for a delivery; each object one C-STORE."""

    def __init__(self, destination: DimseDestination) -> None:
        self.destination = destination
        self.association: Any = None

    def _associate(self, sop_class_uid: str) -> Any:
        from pynetdicom import AE  # the DIMSE layer: only egress ships it
        from pynetdicom.presentation import build_context

        ae = AE(ae_title=self.destination.calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_S
        context = build_context(sop_class_uid)
        tls = (ssl.create_default_context(), self.destination.host) if self.destination.tls else None
        association = ae.associate(
            self.destination.host,
            self.destination.port,
            contexts=[context],
            ae_title=self.destination.called_ae,
            tls_args=tls,
        )
        if not association.is_established:
            raise SendFailed(
                f"C-STORE: no association with {self.destination.called_ae}@"
                f"{self.destination.host}:{self.destination.port}"
            )
        return association

    def send(self, data: bytes, item: OutputObject) -> None:
        from pydicom import dcmread

        dataset = dcmread(io.BytesIO(data))
        # A context per SOP class: SEG, SR and encapsulated PDF each get their association.
        if self.association is None or self.association_class != item.sop_class_uid:
            self.close()
            self.association = self._associate(item.sop_class_uid)
            self.association_class = item.sop_class_uid
        try:
            status = self.association.send_c_store(dataset)
        except (RuntimeError, ValueError, OSError) as error:
            self.close()
            raise SendFailed(f"C-STORE: {type(error).__name__}: {error}") from error
        code = getattr(status, "Status", None)
        if code is None:
            self.close()
            raise SendFailed("C-STORE: no response (the association ended)")
        if code != 0x0000 and not 0xB000 <= code <= 0xBFFF:  # success, or a warning (stored)
            raise SendFailed(f"C-STORE: status 0x{code:04X}")

    def close(self) -> None:
        if self.association is not None:
            try:
                self.association.release()
            finally:
                self.association = None

    association_class = ""


class S3Sender:
    """PutObject into the destination's bucket with a role assumed in its account."""

    def __init__(self, destination: S3Destination, study_id: str) -> None:
        try:
            credentials = boto3.client("sts").assume_role(
                RoleArn=destination.role_arn, RoleSessionName=ROLE_SESSION_NAME
            )["Credentials"]
        except Exception as error:  # botocore's errors: a role we may not assume (yet) is retried
            raise SendFailed(
                f"S3: assuming {destination.role_arn}: {type(error).__name__}: {error}"
            ) from error
        self.s3 = boto3.client(
            "s3",
            aws_access_key_id=credentials["AccessKeyId"],
            aws_secret_access_key=credentials["SecretAccessKey"],
            aws_session_token=credentials["SessionToken"],
        )
        self.bucket = destination.bucket
        prefix = destination.prefix
        self.prefix = f"{prefix.rstrip('/')}/{study_id}/" if prefix else f"{study_id}/"

    def send(self, data: bytes, item: OutputObject) -> None:
        try:
            self.s3.put_object(
                Bucket=self.bucket,
                Key=f"{self.prefix}{item.sop_instance_uid}.dcm",
                Body=data,
                ContentType="application/dicom",
            )
        except Exception as error:  # botocore's errors: any refusal is a failed send, retried
            raise SendFailed(f"S3: {type(error).__name__}: {error}") from error

    def close(self) -> None:
        pass


def sender_for(destination: AnyDestination, credentials: Credentials | None, study_id: str) -> Sender:
    if isinstance(destination, DicomWebDestination):
        return StowRsSender(destination, credentials)
    if isinstance(destination, DimseDestination):
        return DimseSender(destination)
    return S3Sender(destination, study_id)
