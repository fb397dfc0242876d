"""A tenant's delivery destinations (docs/deliveries.md): where a study's DICOM outputs are sent.

Three kinds: `dicomweb` (a STOW-RS URL, no auth, basic or bearer), `dimse` (a C-STORE SCP: host,
port, called and calling AE titles, TLS or not) and `s3` (a bucket, usually in another account,
written through a role we assume). `internal` marks the tenant's own PACS: only there do outputs
go re-identified; everything else leaves de-identified.

Secrets (a password, a token) never live here: the API takes them with the destination, puts them
in Secrets Manager, and the stored destination names the secret (`secret_id`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator

NAME_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"
AE_TITLE_PATTERN = r"^[A-Za-z0-9 ._-]{1,16}$"  # PS3.5 AE VR: 16 characters, no backslash or control
# The roles egress may assume (infra/access.py grants sts:AssumeRole on this name prefix only).
DELIVERY_ROLE_NAME_PREFIX = "voxelpipe-delivery-"
ROLE_ARN_PATTERN = (
    r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/" + DELIVERY_ROLE_NAME_PREFIX + r"[A-Za-z0-9+=,.@_-]{1,44}$"
)
BUCKET_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"


class DestinationKind(StrEnum):
    DICOMWEB = "dicomweb"
    DIMSE = "dimse"
    S3 = "s3"


class HttpAuth(StrEnum):
    NONE = "none"
    BASIC = "basic"  # username here, password in the secret
    BEARER = "bearer"  # the token in the secret


class _Destination(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="unique within the tenant; rules and studies name it")
    internal: bool = Field(
        default=False, description="the tenant's own PACS: outputs go re-identified (else de-identified)"
    )
    description: str = Field(default="", max_length=500)
    secret_id: str | None = Field(
        default=None,
        description="the Secrets Manager secret holding its password or token (set by voxelpipe)",
    )

    def needs_secret(self) -> bool:
        return False


class DicomWebDestination(_Destination):
    kind: Literal[DestinationKind.DICOMWEB] = DestinationKind.DICOMWEB
    url: HttpUrl = Field(
        description="the STOW-RS URL instances are POSTed to, e.g. https://pacs/dicom-web/studies"
    )
    auth: HttpAuth = HttpAuth.NONE
    username: str | None = Field(default=None, min_length=1, max_length=256, description="basic auth only")

    @model_validator(mode="after")
    def _auth_fields(self) -> DicomWebDestination:
        if (self.auth is HttpAuth.BASIC) != (self.username is not None):
            raise ValueError("basic auth takes a username; no other auth does")
        return self

    def needs_secret(self) -> bool:
        return self.auth is not HttpAuth.NONE


class DimseDestination(_Destination):
    kind: Literal[DestinationKind.DIMSE] = DestinationKind.DIMSE
    host: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:-]+$")
    port: int = Field(ge=1, le=65535)
    called_ae: str = Field(pattern=AE_TITLE_PATTERN, description="the receiver's AE title")
    calling_ae: str = Field(default="VOXELPIPE", pattern=AE_TITLE_PATTERN, description="our AE title")
    tls: bool = Field(default=False, description="DICOM TLS (the receiver's certificate is verified)")


class S3Destination(_Destination):
    kind: Literal[DestinationKind.S3] = DestinationKind.S3
    bucket: str = Field(pattern=BUCKET_PATTERN)
    prefix: str = Field(default="", max_length=512, pattern=r"^([A-Za-z0-9!_.*'()/-]*)$")
    role_arn: str = Field(
        pattern=ROLE_ARN_PATTERN,
        description="the role voxelpipe assumes to write there (named voxelpipe-delivery-*)",
    )


Destination = Annotated[DicomWebDestination | DimseDestination | S3Destination, Field(discriminator="kind")]


class Credentials(BaseModel):
    """What a destination's secret holds (JSON in Secrets Manager)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    password: str | None = None
    token: str | None = None


def check_secret(
    destination: DicomWebDestination | DimseDestination | S3Destination, secret: str | None
) -> None:
    """ValueError unless a secret is given exactly when the destination's auth needs one."""
    if destination.needs_secret() and not secret:
        raise ValueError(f"a {destination.kind} destination with this auth needs `secret`")
    if secret and not destination.needs_secret():
        raise ValueError(f"a {destination.kind} destination with this auth takes no `secret`")


def credentials_for(
    destination: DicomWebDestination | DimseDestination | S3Destination, secret: str
) -> Credentials:
    if isinstance(destination, DicomWebDestination) and destination.auth is HttpAuth.BASIC:
        return Credentials(password=secret)
    return Credentials(token=secret)
