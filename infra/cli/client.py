"""A small HTTP client of the voxelpipe API, for the CLI and for scripts."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, cast

import httpx

from voxelpipe.status import TERMINAL_STATUSES

Progress = Callable[[int], None]  # called with the number of bytes just sent


class ApiError(Exception):
    """A problem-details answer from the API."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status, self.problem = status, problem
        detail = problem.get("detail") or ""
        super().__init__(
            f"{status} {problem.get('code', 'error')}: {problem.get('title', '')} {detail}".strip()
        )


class _CountingReader:
    """A file whose reads report progress (httpx streams multipart bodies by reading)."""

    def __init__(self, path: Path, progress: Progress | None) -> None:
        self._file = path.open("rb")
        self._progress = progress
        self.name = path.name

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        if self._progress and chunk:
            self._progress(len(chunk))
        return chunk

    # httpx sizes the body from these: S3 refuses a chunked (length-less) form upload.
    def fileno(self) -> int:
        return self._file.fileno()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._file.seek(offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def close(self) -> None:
        self._file.close()


def _save(response: httpx.Response, output: Path) -> int:
    """The answer's body into `output`, chunk by chunk; the bytes written."""
    written = 0
    with output.open("wb") as file:
        for chunk in response.iter_bytes():
            file.write(chunk)
            written += len(chunk)
    return written


class Client:
    def __init__(self, api_url: str, token: str | None, timeout_s: float = 60.0) -> None:
        self.token = token  # also the live WebSocket's (`status --watch`)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=api_url.rstrip("/"), headers=headers, timeout=timeout_s)
        # Presigned links the API answers with: never sent the token (S3 refuses a second credential).
        self.downloads = httpx.Client(timeout=None)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                problem = response.json()
            except ValueError:
                problem = {"title": response.text[:200]}
            raise ApiError(response.status_code, problem)
        return response.json()

    def create_study(
        self, files: list[Path], names: list[str] | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Register a study of `files`, declared under `names` (default: the files' own names)."""
        declared = names or [f.name for f in files]
        body = {
            **fields,
            "files": [
                {"name": name, "size": f.stat().st_size} for name, f in zip(declared, files, strict=True)
            ],
        }
        return dict(self._call("POST", "/studies", json=body))

    def complete(self, study_id: str) -> dict[str, Any]:
        """Declare the study's upload whole (POST /studies/{id}/complete)."""
        return dict(self._call("POST", f"/studies/{study_id}/complete"))

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")  # type: ignore[no-any-return]

    def study(self, study_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/studies/{study_id}"))

    def results(self, study_id: str, attempt: int | None = None) -> dict[str, Any]:
        params = {"attempt": attempt} if attempt is not None else {}
        return dict(self._call("GET", f"/studies/{study_id}/results", params=params))

    def reprocess(self, study_id: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", f"/studies/{study_id}/reprocess", json=body or None))

    def attempts(self, study_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/studies/{study_id}/attempts"))

    def create_batch(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/reprocess-batches", json=body))

    def batch(self, batch_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/reprocess-batches/{batch_id}"))

    def list_batches(self) -> dict[str, Any]:
        return dict(self._call("GET", "/reprocess-batches"))

    def subject(self, subject_ref: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/subjects/{subject_ref}"))

    def list_subjects(self, **params: Any) -> dict[str, Any]:
        return dict(self._call("GET", "/subjects", params={k: v for k, v in params.items() if v is not None}))

    def timeline(self, subject_ref: str, **params: Any) -> dict[str, Any]:
        query = {k: v for k, v in params.items() if v is not None}
        return dict(self._call("GET", f"/subjects/{subject_ref}/timeline", params=query))

    def audit(self, **params: Any) -> dict[str, Any]:
        """One page of the tenant's access audit (GET /audit; `from`/`to` as the API names them)."""
        return dict(self._call("GET", "/audit", params={k: v for k, v in params.items() if v is not None}))

    def usage(self) -> dict[str, Any]:
        return dict(self._call("GET", "/usage"))

    def list_studies(self, **params: Any) -> dict[str, Any]:
        return dict(self._call("GET", "/studies", params={k: v for k, v in params.items() if v is not None}))

    def register_model(
        self, name: str, spec: dict[str, Any], size: int, sha256: str | None, scope: str = "tenant"
    ) -> dict[str, Any]:
        body = {"name": name, "spec": spec, "size": size, "sha256": sha256, "scope": scope}
        return dict(self._call("POST", "/models", json={k: v for k, v in body.items() if v is not None}))

    def complete_model(self, name: str, version: int | None = None, scope: str = "tenant") -> dict[str, Any]:
        body: dict[str, Any] = {"scope": scope} if version is None else {"version": version, "scope": scope}
        return dict(self._call("POST", f"/models/{name}/complete", json=body))

    def list_models(self) -> dict[str, Any]:
        return dict(self._call("GET", "/models"))

    def retire_model(self, name: str, version: int | None = None, scope: str = "tenant") -> dict[str, Any]:
        params: dict[str, Any] = {"scope": scope} if version is None else {"version": version, "scope": scope}
        return dict(self._call("DELETE", f"/models/{name}", params=params))

    def register_reference(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", f"/references/{kind}", json=body))

    def complete_reference(
        self, kind: str, name: str, version: int | None = None, scope: str = "tenant"
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"scope": scope} if version is None else {"version": version, "scope": scope}
        return dict(self._call("POST", f"/references/{kind}/{name}/complete", json=body))

    def list_references(self, kind: str | None = None) -> dict[str, Any]:
        return dict(self._call("GET", "/references" if kind is None else f"/references/{kind}"))

    def retire_reference(
        self, kind: str, name: str, version: int | None = None, scope: str = "tenant"
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"scope": scope} if version is None else {"version": version, "scope": scope}
        return dict(self._call("DELETE", f"/references/{kind}/{name}", params=params))

    def list_rule_sets(self) -> dict[str, Any]:
        return dict(self._call("GET", "/rules"))

    def rule_set(self, version: int | str = "current") -> dict[str, Any]:
        return dict(self._call("GET", f"/rules/{version}"))

    def save_rule_set(self, rule_set: Any) -> dict[str, Any]:
        return dict(self._call("POST", "/rules", json=rule_set))

    def delete_rule_set(self, version: int) -> dict[str, Any]:
        return dict(self._call("DELETE", f"/rules/{version}"))

    def test_rules(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/rules/test", json=body))

    def list_destinations(self) -> dict[str, Any]:
        return dict(self._call("GET", "/destinations"))

    def destination(self, name: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/destinations/{name}"))

    def add_destination(self, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("POST", "/destinations", json=body))

    def delete_destination(self, name: str) -> dict[str, Any]:
        return dict(self._call("DELETE", f"/destinations/{name}"))

    def create_client(self, name: str, scopes: list[str], valid_days: int | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"name": name, "scopes": scopes}
        if valid_days is not None:
            body["valid_days"] = valid_days
        return dict(self._call("POST", "/clients", json=body))

    def list_clients(self) -> dict[str, Any]:
        return dict(self._call("GET", "/clients"))

    def delete_client(self, name: str) -> dict[str, Any]:
        return dict(self._call("DELETE", f"/clients/{name}"))

    def deliveries(self, study_id: str) -> dict[str, Any]:
        return dict(self._call("GET", f"/studies/{study_id}/deliveries"))

    def redrive_delivery(self, study_id: str, destination: str) -> dict[str, Any]:
        return dict(self._call("POST", f"/studies/{study_id}/deliveries/{destination}/redrive"))

    def export_measures(self, params: dict[str, Any], output: Path, media_type: str) -> int:
        """GET /measures into `output`, streamed; a 303 (an export too large for one answer) is
        followed to its presigned URL, without this client's token. The bytes written."""
        query = {k: v for k, v in params.items() if v is not None}
        headers = {"accept": media_type}  # API Gateway passes a binary answer only when it is asked for
        with self.http.stream("GET", "/measures", params=query, headers=headers) as response:
            if response.status_code == 303:
                location = response.headers["location"]
            elif response.status_code >= 400:
                response.read()
                try:
                    problem = response.json()
                except ValueError:
                    problem = {"title": response.text[:200]}
                raise ApiError(response.status_code, problem)
            else:
                return _save(response, output)
        with self.downloads.stream("GET", location) as response:
            if response.status_code >= 300:
                response.read()
                raise ApiError(
                    response.status_code, {"title": "download refused", "detail": response.text[:500]}
                )
            return _save(response, output)

    def upload(
        self, target: dict[str, Any], path: Path, progress: Progress | None = None, name: str | None = None
    ) -> None:
        """Send one file to its presigned target (form POST, or multipart parts then complete),
        naming it `name` in the form (default: the file's own name)."""
        if target["method"] == "post":
            reader = _CountingReader(path, progress)
            try:
                response = httpx.post(
                    target["url"],
                    data=target["fields"],
                    files={"file": (name or path.name, cast(IO[bytes], reader))},
                    timeout=None,
                )
            finally:
                reader.close()
            if response.status_code >= 300:
                raise ApiError(
                    response.status_code, {"title": "upload refused", "detail": response.text[:500]}
                )
            return
        etags = []
        with path.open("rb") as source:
            for part in target["parts"]:
                chunk = source.read(target["part_size"])
                response = httpx.put(part["url"], content=chunk, timeout=None)
                if response.status_code >= 300:
                    raise ApiError(
                        response.status_code, {"title": "part refused", "detail": response.text[:500]}
                    )
                etags.append((part["part_number"], response.headers["etag"]))
                if progress:
                    progress(len(chunk))
        root = ET.Element("CompleteMultipartUpload")
        for number, etag in etags:
            element = ET.SubElement(root, "Part")
            ET.SubElement(element, "PartNumber").text = str(number)
            ET.SubElement(element, "ETag").text = etag
        response = httpx.post(target["complete_url"], content=ET.tostring(root), timeout=None)
        if response.status_code >= 300 or b"<Error>" in response.content:
            raise ApiError(
                response.status_code, {"title": "completion refused", "detail": response.text[:500]}
            )

    def wait(
        self,
        study_id: str,
        on_change: Callable[[dict[str, Any]], None] | None = None,
        timeout_s: float = 3600,
        poll_s: float = 0.5,
    ) -> dict[str, Any]:
        """Poll until the study is terminal (or the timeout); its last view."""
        terminal = {status.value for status in TERMINAL_STATUSES}
        deadline = time.monotonic() + timeout_s
        last: tuple[Any, ...] | None = None
        while True:
            view = self.study(study_id)
            state = (view["status"], tuple((s["step"], s["status"], s["progress"]) for s in view["steps"]))
            if on_change and state != last:
                on_change(view)
            last = state
            if view["status"] in terminal or time.monotonic() > deadline:
                return view
            time.sleep(poll_s)

    def download(self, results: dict[str, Any], directory: Path) -> list[Path]:
        written = []
        for artifact in results["artifacts"]:
            target = directory / artifact["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            response = httpx.get(artifact["url"], timeout=None)
            response.raise_for_status()
            target.write_bytes(response.content)
            written.append(target)
        return written

    def fetch(self, url: str) -> bytes:
        """The bytes behind a presigned link the API handed out."""
        response = httpx.get(url, timeout=None)
        response.raise_for_status()
        return response.content
