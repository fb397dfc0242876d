"""The receiver's configuration: which called AE titles we answer to, for which tenant, from which
calling AE titles, and the network timeouts and limits that keep a hostile peer from holding it.

Read from the environment (names in voxelpipe.wiring.EnvVar); every value is checked here, so a
deployment with a bad setting fails at start with a sentence naming the setting, not on the first
association.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from voxelpipe.keys import is_tenant
from voxelpipe.limits import Limits
from voxelpipe.wiring import EnvVar

__all__ = ["DEFAULT_PORT", "AeTitle", "InvalidReceiverSettings", "ReceiverSettings", "parse_ae_titles"]

DEFAULT_PORT = 11112  # the registered DICOM port (IANA "dicom-iscl"/"dicom" alternative), as Orthanc uses
_AE_TITLE_MAX = 16


class InvalidReceiverSettings(ValueError):
    """A receiver setting that cannot be used; the message names the setting and the value's fault."""


def _check_ae_title(title: object, where: str) -> str:
    """A valid AE title (PS3.5 AE: 1-16 characters of the default repertoire, no backslash, no
    control characters, not only spaces); leading/trailing spaces are not significant."""
    if not isinstance(title, str):
        raise InvalidReceiverSettings(f"{where}: an AE title must be a string, not {type(title).__name__}")
    stripped = title.strip()
    if not stripped or len(title) > _AE_TITLE_MAX:
        raise InvalidReceiverSettings(f"{where}: an AE title has 1 to {_AE_TITLE_MAX} characters: {title!r}")
    if "\\" in title or any(not (32 <= ord(c) < 127) for c in title):
        raise InvalidReceiverSettings(
            f"{where}: an AE title is printable ASCII without a backslash: {title!r}"
        )
    return stripped


@dataclass(frozen=True)
class AeTitle:
    """One of our AE titles: the tenant whose instances it receives, and (when given) the only
    calling AE titles it accepts associations from."""

    tenant: str
    calling: frozenset[str] | None = None  # None: any calling AE title

    def accepts_calling(self, calling: str) -> bool:
        return self.calling is None or calling.strip() in self.calling


def parse_ae_titles(value: Any, where: str = EnvVar.DICOM_AE_TITLES.value) -> dict[str, AeTitle]:
    """Our AE titles from their JSON form: {"CALLED": "tenant"} or
    {"CALLED": {"tenant": "tenant", "calling": ["PACS1", "SCANNER2"]}}."""
    if not isinstance(value, Mapping) or not value:
        raise InvalidReceiverSettings(
            f"{where}: give a JSON object mapping our AE titles to tenants, e.g. "
            '{"VOXELPIPE": "demo"} or {"VOXELPIPE": {"tenant": "demo", "calling": ["ORTHANC"]}}'
        )
    titles: dict[str, AeTitle] = {}
    for called, entry in value.items():
        title = _check_ae_title(called, where)
        here = f"{where}[{title!r}]"
        if title in titles:
            raise InvalidReceiverSettings(f"{here}: given twice")
        if isinstance(entry, str):
            entry = {"tenant": entry}
        if not isinstance(entry, Mapping):
            raise InvalidReceiverSettings(f"{here}: a tenant name, or an object with tenant and calling")
        unknown = set(entry) - {"tenant", "calling"}
        if unknown:
            raise InvalidReceiverSettings(f"{here}: unknown field(s) {', '.join(sorted(unknown))}")
        tenant = entry.get("tenant")
        if not isinstance(tenant, str) or not is_tenant(tenant):
            raise InvalidReceiverSettings(
                f"{here}.tenant: a tenant is lower-case letters, digits and '-' (up to 63): {tenant!r}"
            )
        calling: frozenset[str] | None = None
        if "calling" in entry:
            listed = entry["calling"]
            if not isinstance(listed, list) or not listed:
                raise InvalidReceiverSettings(f"{here}.calling: a non-empty list of calling AE titles")
            calling = frozenset(_check_ae_title(item, f"{here}.calling") for item in listed)
        titles[title] = AeTitle(tenant=tenant, calling=calling)
    return titles


@dataclass(frozen=True)
class ReceiverSettings:
    """Everything the SCP is configured with. The timeouts are what end an association whose peer
    stops talking: acse_timeout for the association request and release, dimse_timeout for a DIMSE
    message, network_timeout for silence on an established association (then we abort it)."""

    ae_titles: dict[str, AeTitle]
    port: int = DEFAULT_PORT
    acse_timeout_s: float = 30.0
    dimse_timeout_s: float = 60.0
    network_timeout_s: float = 60.0
    # What we announce as our Maximum Length Received; a PDU declaring more than pdu_ceiling_bytes
    # closes the connection before it is read.
    max_pdu_bytes: int = 262144
    max_associations: int = 10
    # The largest instance taken (the whole dataset is held in memory while it is received).
    max_instance_bytes: int = field(default_factory=lambda: Limits().max_upload_bytes)

    def __post_init__(self) -> None:
        if not self.ae_titles:
            raise InvalidReceiverSettings(f"{EnvVar.DICOM_AE_TITLES}: give at least one AE title")
        if not 0 <= self.port < 65536:  # 0: any free port (tests)
            raise InvalidReceiverSettings(f"{EnvVar.DICOM_PORT}: a TCP port, 1-65535: {self.port}")
        for name in ("acse_timeout_s", "dimse_timeout_s", "network_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not 0 < value <= 3600:
                raise InvalidReceiverSettings(f"{EnvVar.DICOM_SETTINGS}.{name}: seconds, >0 and <=3600")
        # PS3.8: a receiver's maximum length is at least 4096 (pynetdicom refuses less) bytes.
        if not isinstance(self.max_pdu_bytes, int) or not 4096 <= self.max_pdu_bytes <= 2**24:
            raise InvalidReceiverSettings(f"{EnvVar.DICOM_SETTINGS}.max_pdu_bytes: 4096 to 16 MiB")
        if not isinstance(self.max_associations, int) or not 1 <= self.max_associations <= 1000:
            raise InvalidReceiverSettings(f"{EnvVar.DICOM_SETTINGS}.max_associations: 1 to 1000")
        if not isinstance(self.max_instance_bytes, int) or self.max_instance_bytes < 1024:
            raise InvalidReceiverSettings(f"{EnvVar.DICOM_SETTINGS}.max_instance_bytes: at least 1024")

    @property
    def pdu_ceiling_bytes(self) -> int:
        """The largest PDU read: our maximum length plus room for the PDU's own headers (an
        A-ASSOCIATE-RQ with many presentation contexts can be a few tens of KiB)."""
        return max(self.max_pdu_bytes + 1024, 256 * 1024)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ReceiverSettings:
        env = os.environ if environ is None else environ
        raw = env.get(EnvVar.DICOM_AE_TITLES)
        if not raw:
            raise InvalidReceiverSettings(f"{EnvVar.DICOM_AE_TITLES} is not set: name our AE titles")
        try:
            titles = parse_ae_titles(json.loads(raw))
        except json.JSONDecodeError as error:
            raise InvalidReceiverSettings(f"{EnvVar.DICOM_AE_TITLES}: not JSON ({error})") from None
        settings = cls(ae_titles=titles)
        if port := env.get(EnvVar.DICOM_PORT):
            if not port.isdigit():
                raise InvalidReceiverSettings(f"{EnvVar.DICOM_PORT}: a TCP port: {port!r}")
            settings = replace(settings, port=int(port))
        if extra := env.get(EnvVar.DICOM_SETTINGS):
            try:
                overrides = json.loads(extra)
            except json.JSONDecodeError as error:
                raise InvalidReceiverSettings(f"{EnvVar.DICOM_SETTINGS}: not JSON ({error})") from None
            settings = settings.with_overrides(overrides)
        return settings

    def with_overrides(self, overrides: Any) -> ReceiverSettings:
        """These settings with the timeouts and limits of a JSON object changed (the others refused)."""
        allowed = {f.name for f in fields(self)} - {"ae_titles", "port"}
        if not isinstance(overrides, Mapping):
            raise InvalidReceiverSettings(f"{EnvVar.DICOM_SETTINGS}: a JSON object")
        unknown = set(overrides) - allowed
        if unknown:
            raise InvalidReceiverSettings(
                f"{EnvVar.DICOM_SETTINGS}: unknown field(s) {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(allowed))})"
            )
        return replace(self, **overrides)
