"""Outgoing HTTP, for webhooks: the standard library's http.client (no `requests` in Lambda packages).

The connection goes to the address the webhook check resolved and approved (WebhookTarget.address),
not to a fresh lookup of the host name, so DNS rebinding between the check and the connection
cannot reach another host; the Host header and TLS (server name and certificate check) use the
name. Redirects are never followed: a webhook is POSTed where the study said.
"""

from __future__ import annotations

import http.client
import socket
import ssl

from voxelpipe.webhook_urls import WebhookTarget

TIMEOUT_S = 10.0


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: WebhookTarget) -> None:
        super().__init__(target.host, target.port, timeout=TIMEOUT_S)
        self._address = target.address

    def connect(self) -> None:
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: WebhookTarget) -> None:
        self._tls = ssl.create_default_context()
        super().__init__(target.host, target.port, timeout=TIMEOUT_S, context=self._tls)
        self._address = target.address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def post(target: WebhookTarget, body: bytes, headers: dict[str, str]) -> int:
    """POST `body` to the target's checked address; the response's status (an error status too).
    OSError when unreachable (ssl.SSLError, a certificate that does not match, is one)."""
    connection = _PinnedHTTPSConnection(target) if target.scheme == "https" else _PinnedHTTPConnection(target)
    try:
        connection.request("POST", target.path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return int(response.status)
    except http.client.HTTPException as error:  # a receiver that does not speak HTTP
        raise OSError(f"the receiver's answer is not HTTP: {error!r}") from error
    finally:
        connection.close()
