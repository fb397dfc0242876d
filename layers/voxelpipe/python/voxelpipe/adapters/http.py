"""Outgoing HTTP, for webhooks: the standard library's urllib (no `requests` in Lambda packages)."""

from __future__ import annotations

import urllib.error
import urllib.request

TIMEOUT_S = 10.0


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    # A webhook is POSTed where the study said, not wherever a redirect points.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirects)


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    """POST `body`; the response's status (an error status too). OSError when unreachable."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with _opener.open(request, timeout=TIMEOUT_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
