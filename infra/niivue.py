"""Fetch the pinned NiiVue bundle into the viewer's static files (`make setup` runs it).

The npm registry's tarball of `NIIVUE_PACKAGE@NIIVUE_VERSION` is downloaded, its sha512 checked
against the pin (`NIIVUE_INTEGRITY`, the registry's SRI string) before anything is read from it,
and its self-contained ES module bundle written to `voxelpipe/viewer/static/niivue/{version}/`.
Plain Python rather than `npm pack`: no npm is needed on the build machine, and the integrity is
checked here against our own pin (npm would check it against the registry's metadata).

Already in place (and the same bytes as a checked tarball gave) is not fetched again.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

from voxelpipe.viewer.assets import (
    NIIVUE_BUNDLE,
    NIIVUE_BUNDLE_MEMBER,
    NIIVUE_INTEGRITY,
    NIIVUE_PACKAGE,
    NIIVUE_VERSION,
)

REGISTRY = "https://registry.npmjs.org"
DOWNLOAD_TIMEOUT_S = 120
MAX_TARBALL_BYTES = 64 * 1024**2  # 0.69.0's is 6.8 MB
# Beside the bundle: the sha256 of the bundle written, so that a later run knows it is intact.
DIGEST_SUFFIX = ".sha256"


class IntegrityError(ValueError):
    """A tarball whose digest is not the pinned one, or that lacks the bundle."""


def tarball_url(package: str = NIIVUE_PACKAGE, version: str = NIIVUE_VERSION) -> str:
    """The registry's tarball URL: `{registry}/@scope/name/-/name-{version}.tgz`."""
    name = package.rsplit("/", 1)[-1]
    return f"{REGISTRY}/{package}/-/{name}-{version}.tgz"


def sri_digest(data: bytes, algorithm: str = "sha512") -> str:
    """The Subresource Integrity string of `data` (`sha512-<base64>`), as npm records it."""
    return f"{algorithm}-{base64.b64encode(hashlib.new(algorithm, data).digest()).decode()}"


def check_integrity(tarball: bytes, integrity: str = NIIVUE_INTEGRITY) -> None:
    """IntegrityError unless `tarball`'s digest is the pinned one."""
    algorithm, _, _ = integrity.partition("-")
    if algorithm not in ("sha512", "sha384", "sha256"):
        raise IntegrityError(f"the pin {integrity[:20]}… is not an SRI sha256/384/512 digest")
    found = sri_digest(tarball, algorithm)
    if not hmac.compare_digest(found, integrity):
        raise IntegrityError(
            f"the tarball's digest {found} is not the pinned {integrity}: refusing it (a tampered or "
            "different tarball; to bump NiiVue, change the version and integrity together)"
        )


def bundle_from_tarball(tarball: bytes, member: str = NIIVUE_BUNDLE_MEMBER) -> bytes:
    """The bundle's bytes, from a tarball already checked (check_integrity)."""
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as archive:
        try:
            info = archive.getmember(member)
        except KeyError:
            raise IntegrityError(f"the tarball has no {member}") from None
        extracted = archive.extractfile(info) if info.isfile() else None
        if extracted is None:
            raise IntegrityError(f"the tarball's {member} is not a file")
        return extracted.read()


def install_bundle(tarball: bytes, dest: Path = NIIVUE_BUNDLE, integrity: str = NIIVUE_INTEGRITY) -> Path:
    """Check `tarball` against the pin and write its bundle to `dest` (and its sha256 beside it)."""
    check_integrity(tarball, integrity)
    bundle = bundle_from_tarball(tarball)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.write_bytes(bundle)
    partial.replace(dest)
    dest.with_name(dest.name + DIGEST_SUFFIX).write_text(hashlib.sha256(bundle).hexdigest() + "\n")
    return dest


def installed(dest: Path = NIIVUE_BUNDLE) -> bool:
    """Whether `dest` holds the bundle a checked tarball gave (its recorded sha256 matches)."""
    recorded = dest.with_name(dest.name + DIGEST_SUFFIX)
    if not (dest.is_file() and recorded.is_file()):
        return False
    return hashlib.sha256(dest.read_bytes()).hexdigest() == recorded.read_text().strip()


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        data: bytes = response.read(MAX_TARBALL_BYTES + 1)
    if len(data) > MAX_TARBALL_BYTES:
        raise IntegrityError(f"{url} is over {MAX_TARBALL_BYTES} bytes")
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--force", action="store_true", help="fetch again even if in place")
    args = parser.parse_args(argv)
    if installed() and not args.force:
        return
    url = tarball_url()
    try:
        path = install_bundle(download(url))
    except (OSError, IntegrityError) as error:
        sys.exit(f"NiiVue {NIIVUE_VERSION} from {url}: {error}")
    print(f"NiiVue {NIIVUE_VERSION} ({NIIVUE_INTEGRITY[:19]}…) checked and installed at {path}")


if __name__ == "__main__":
    main()
