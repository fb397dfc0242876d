"""The C-STORE receiver's settings: AE titles mapped to tenants, timeouts and limits, checked at start."""

from __future__ import annotations

import json

import pytest

from voxelpipe.dimse.settings import AeTitle, InvalidReceiverSettings, ReceiverSettings, parse_ae_titles
from voxelpipe.wiring import EnvVar


def test_ae_titles_short_and_long_forms() -> None:
    titles = parse_ae_titles({"VOXELPIPE": "demo", "RESEARCH ": {"tenant": "lab-2", "calling": ["PACS1 "]}})
    assert titles == {"VOXELPIPE": AeTitle("demo"), "RESEARCH": AeTitle("lab-2", frozenset({"PACS1"}))}
    assert titles["VOXELPIPE"].accepts_calling("ANYONE")
    assert titles["RESEARCH"].accepts_calling("PACS1")
    assert not titles["RESEARCH"].accepts_calling("PACS2")


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ({}, "JSON object"),
        (["VOXELPIPE"], "JSON object"),
        ({"A" * 17: "demo"}, "1 to 16"),
        ({"BAD\\AE": "demo"}, "backslash"),
        ({"   ": "demo"}, "1 to 16"),
        ({"VOXELPIPE": "Not A Tenant"}, ".tenant"),
        ({"VOXELPIPE": {"tenant": "demo", "calling": []}}, ".calling"),
        ({"VOXELPIPE": {"tenant": "demo", "calling": ["x\x01"]}}, "printable"),
        ({"VOXELPIPE": {"tenant": "demo", "colling": ["X"]}}, "unknown field"),
        ({"VOXELPIPE": 3}, "a tenant name"),
    ],
)
def test_bad_ae_titles_are_refused_naming_the_setting(value: object, names: str) -> None:
    with pytest.raises(InvalidReceiverSettings, match=EnvVar.DICOM_AE_TITLES.value) as raised:
        parse_ae_titles(value)
    assert names in str(raised.value)


def test_from_environment_with_overrides() -> None:
    settings = ReceiverSettings.from_environment(
        {
            EnvVar.DICOM_AE_TITLES: json.dumps({"VOXELPIPE": "demo"}),
            EnvVar.DICOM_PORT: "104",
            EnvVar.DICOM_SETTINGS: json.dumps({"network_timeout_s": 5, "max_associations": 2}),
        }
    )
    assert (settings.port, settings.network_timeout_s, settings.max_associations) == (104, 5, 2)
    assert settings.acse_timeout_s == ReceiverSettings(ae_titles=settings.ae_titles).acse_timeout_s


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({EnvVar.DICOM_AE_TITLES: ""}, EnvVar.DICOM_AE_TITLES.value),
        ({EnvVar.DICOM_AE_TITLES: "{not json"}, "not JSON"),
        ({EnvVar.DICOM_PORT: "eleven"}, EnvVar.DICOM_PORT.value),
        ({EnvVar.DICOM_PORT: "70000"}, EnvVar.DICOM_PORT.value),
        ({EnvVar.DICOM_SETTINGS: '{"network_timeout_s": 0}'}, "network_timeout_s"),
        ({EnvVar.DICOM_SETTINGS: '{"max_pdu_bytes": 100}'}, "max_pdu_bytes"),
        ({EnvVar.DICOM_SETTINGS: '{"port": 1}'}, "unknown field"),
    ],
)
def test_bad_environment_is_refused(env: dict[str, str], names: str) -> None:
    base = (
        {EnvVar.DICOM_AE_TITLES.value: '{"VOXELPIPE": "demo"}'} if EnvVar.DICOM_AE_TITLES not in env else {}
    )
    with pytest.raises(InvalidReceiverSettings, match=names):
        ReceiverSettings.from_environment({**base, **{str(k): v for k, v in env.items()}})
