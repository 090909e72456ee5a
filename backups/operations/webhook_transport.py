"""The transport of one webhook attempt: an HTTP(S) connection to an address resolved and checked
beforehand (never a fresh DNS answer), whose connect, TLS handshake, sends and reads all share one
:class:`Deadline` (a plain socket time-out is per call: an endpoint that sends a byte now and then
never trips it). Used by ``backups.operations.webhooks.post``.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from typing import Any


class Deadline:
    """The moment an attempt must be over: connect, TLS, send and read all share it."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.at = time.monotonic() + seconds

    def remaining(self) -> float:
        """Seconds left; raises ``TimeoutError`` once there are none."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out: no complete answer within {self.seconds:g} s")
        return left


class _DeadlineCalls:
    """Every send and receive of a socket may only use what is left of its ``deadline``."""

    deadline: Deadline | None = None

    def _arm(self) -> None:
        if self.deadline is not None:
            self.settimeout(self.deadline.remaining())

    def recv(self, *args: Any) -> bytes:
        self._arm()
        return super().recv(*args)

    def recv_into(self, *args: Any) -> int:
        self._arm()
        return super().recv_into(*args)

    def send(self, *args: Any) -> int:
        self._arm()
        return super().send(*args)

    def sendall(self, *args: Any) -> None:
        self._arm()
        return super().sendall(*args)


class _DeadlineSocket(_DeadlineCalls, socket.socket):
    """A plain socket under the attempt's deadline."""


class _DeadlineSSLSocket(_DeadlineCalls, ssl.SSLSocket):
    """A TLS socket under the attempt's deadline (``read`` too: the TLS layer reads through it)."""

    def read(self, *args: Any) -> Any:
        self._arm()
        return super().read(*args)


def tls_context() -> ssl.SSLContext:
    """Certificates verified against the system's authorities and the URL's host name."""
    context = ssl.create_default_context()
    context.sslsocket_class = _DeadlineSSLSocket
    return context


class PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to an address resolved (and checked) beforehand, never to a fresh DNS
    answer; the Host header still names the URL's host."""

    def __init__(self, host: str, port: int, targets: list[tuple[int, tuple[Any, ...]]], deadline: Deadline) -> None:
        super().__init__(host, port)
        self.targets, self.deadline = targets, deadline

    def connect(self) -> None:
        error: OSError | None = None
        for family, sockaddr in self.targets:
            sock = _DeadlineSocket(family, socket.SOCK_STREAM)
            try:
                sock.settimeout(self.deadline.remaining())
                sock.connect(sockaddr)
            except TimeoutError:
                sock.close()
                raise
            except OSError as exc:
                sock.close()
                error = exc
                continue
            sock.deadline = self.deadline
            self.sock = sock
            return
        raise error or ConnectionError("no address to connect to")


class PinnedHTTPSConnection(PinnedHTTPConnection):
    """TLS over :class:`PinnedHTTPConnection`: the certificate must name the URL's host (SNI too)."""

    default_port = 443

    def connect(self) -> None:
        super().connect()
        self.sock.settimeout(self.deadline.remaining())  # the handshake gets what is left, at most
        tls = tls_context().wrap_socket(self.sock, server_hostname=self.host)
        tls.deadline = self.deadline
        self.sock = tls
