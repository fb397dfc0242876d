"""infra/niivue.py: the NiiVue tarball is checked against its pin before anything is taken from it."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from infra.niivue import (
    IntegrityError,
    check_integrity,
    install_bundle,
    installed,
    sri_digest,
    tarball_url,
)
from voxelpipe.viewer.assets import NIIVUE_BUNDLE_MEMBER, NIIVUE_INTEGRITY

BUNDLE = b"export class Niivue {}\n"


def _tarball(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_the_pinned_tarball_url_and_integrity_are_the_registry_s():
    assert tarball_url() == "https://registry.npmjs.org/@niivue/niivue/-/niivue-0.69.0.tgz"
    assert NIIVUE_INTEGRITY.startswith("sha512-") and len(NIIVUE_INTEGRITY) == len("sha512-") + 88


def test_a_tarball_matching_its_pin_is_installed(tmp_path: Path):
    tarball = _tarball({NIIVUE_BUNDLE_MEMBER: BUNDLE, "package/package.json": b"{}"})
    dest = tmp_path / "niivue" / "niivue.js"
    install_bundle(tarball, dest, integrity=sri_digest(tarball))
    assert dest.read_bytes() == BUNDLE
    assert installed(dest)
    dest.write_bytes(BUNDLE + b"// edited\n")
    assert not installed(dest)  # the next `make setup` fetches it again


def test_a_tampered_tarball_is_refused_and_nothing_is_written(tmp_path: Path):
    genuine = _tarball({NIIVUE_BUNDLE_MEMBER: BUNDLE})
    tampered = _tarball({NIIVUE_BUNDLE_MEMBER: BUNDLE + b"fetch('https://evil.example')\n"})
    dest = tmp_path / "niivue.js"
    with pytest.raises(IntegrityError, match="not the pinned"):
        install_bundle(tampered, dest, integrity=sri_digest(genuine))
    assert not dest.exists()


def test_the_real_pin_refuses_any_other_tarball():
    with pytest.raises(IntegrityError, match="not the pinned"):
        check_integrity(_tarball({NIIVUE_BUNDLE_MEMBER: BUNDLE}))


def test_a_tarball_without_the_bundle_is_refused(tmp_path: Path):
    tarball = _tarball({"package/dist/other.js": BUNDLE})
    with pytest.raises(IntegrityError, match=r"has no package/dist/index\.js"):
        install_bundle(tarball, tmp_path / "niivue.js", integrity=sri_digest(tarball))


def test_a_pin_that_is_not_an_sri_digest_is_refused():
    with pytest.raises(IntegrityError, match="not an SRI"):
        check_integrity(b"", integrity="md5-abc")
