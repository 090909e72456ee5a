"""One webhook attempt: a total deadline, the address checked is the address used (no rebinding, no
private address for a clinic), HTTPS to the checked address with the URL's host name verified,
and what a clinic and the platform read when it fails."""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from backups.models.webhooks import WebhookEndpoint
from backups.operations import webhooks
from backups.tests.helpers import free_port, logged_in
from backups.tests.operations.helpers import ENDPOINTS, Receiver, attempted, endpoint, verified

pytestmark = pytest.mark.django_db


# --- One attempt: a total deadline, the address checked is the address used -----------------------


class Trickler:
    """A TCP server in a thread that reads a request, then answers one byte every ``interval``
    seconds (a status line, then a header that never ends) until the client goes away or
    ``give_up`` seconds pass."""

    def __init__(self, interval: float = 0.5, give_up: float = 30.0) -> None:
        self.sent = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/slow"
        self.interval, self.give_up = interval, give_up
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            conn.recv(65536)
            answer = b"HTTP/1.1 200 OK\r\nX-Trickle: "
            started = time.monotonic()
            while time.monotonic() - started < self.give_up:
                try:
                    conn.sendall(answer[self.sent : self.sent + 1] if self.sent < len(answer) else b"a")
                except OSError:
                    return  # the client hung up
                self.sent += 1
                time.sleep(self.interval)

    def close(self) -> None:
        self.listener.close()
        self.thread.join(35)


def test_a_trickling_endpoint_is_cut_at_the_total_deadline(settings, monkeypatch):
    settings.BACKUPS_WEBHOOKS_ALLOW_HTTP_LOCALHOST = True
    monkeypatch.setattr(webhooks, "TIMEOUT", 2)  # each read gets a byte within 0.5 s: only a total deadline ends it
    trickler = Trickler(interval=0.5)
    try:
        started = time.monotonic()
        delivery = attempted(endpoint(trickler.url), event="backup.succeeded")
        took = time.monotonic() - started
    finally:
        trickler.close()
    assert took < 8, f"the attempt took {took:.1f} s: the deadline is per read, not total"
    assert trickler.sent >= 3  # bytes kept coming: no single read waited out a per-read time-out
    assert (delivery.status, delivery.attempts, delivery.last_response_code) == ("pending", 1, None)
    assert "timed out" in delivery.last_error and delivery.failure == "timeout"  # a time-out, retried later


class Listener:
    """A TCP listener in a thread that records each connection it accepts, then closes it."""

    def __init__(self) -> None:
        self.connections: list[tuple] = []
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                conn, address = self.socket.accept()
            except OSError:
                return
            self.connections.append(address)
            conn.close()

    def close(self) -> None:
        self.socket.close()
        self.thread.join(5)


PUBLIC = "93.184.215.14"  # a globally routable address (no listener of ours behind it)


def test_a_rebinding_name_never_reaches_a_local_listener(monkeypatch):
    """The resolver answers a public address, then 127.0.0.1 to whoever asks next (as a
    rebinding DNS server does): the attempt connects to the address it checked, never asks twice."""
    monkeypatch.setattr(webhooks, "TIMEOUT", 1)
    listener, real, answers = Listener(), socket.getaddrinfo, []

    def rebinding(host, port, *args, **kwargs):
        if host != "rebind.example":
            return real(host, port, *args, **kwargs)
        address = "127.0.0.1" if answers else PUBLIC
        answers.append(address)
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    try:
        hook = endpoint(f"https://rebind.example:{listener.port}/hook")
        for _ in range(3):
            answers.clear()
            delivery = attempted(hook, event="backup.succeeded")
            assert answers == [PUBLIC]  # asked once, and that answer was checked
            assert delivery.status == "pending" and delivery.failure in ("timeout", "conn_refused", "network"), (
                delivery.last_error
            )
    finally:
        listener.close()
    assert not listener.connections


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b:1::808:808",  # local-use NAT64
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "::a00:1",  # IPv4-compatible 10.0.0.1
        "::808:808",  # IPv4-compatible, even of a public address (deprecated, not routable)
        "::ffff:a00:1",  # IPv4-mapped 10.0.0.1
        "::ffff:7f00:1",  # IPv4-mapped 127.0.0.1
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo
        "fec0::1",  # site-local
        "ff0e::1",  # global-scope multicast
        "ff02::1",  # link-local multicast
        "224.0.0.1",
        "239.1.1.1",
        "fe80::1",
        "fc00::1",
        "::1",
        "127.0.0.1",
        "10.0.0.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",  # noqa: S104 - an address refused, not bound
        "255.255.255.255",
    ],
)
def test_a_clinic_endpoint_refuses_every_address_that_is_not_globally_routable(address):
    assert not webhooks.is_public_address(ipaddress.ip_address(address))
    host = f"[{address}]" if ":" in address else address
    delivery = attempted(endpoint(f"https://{host}/hook"))
    assert (delivery.status, delivery.failure) == ("failed", "refused") and "non-public" in delivery.last_error


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "2606:4700::1111", "64:ff9b::808:808", "2002:808:808::1", "::ffff:808:808"]
)
def test_public_addresses_are_allowed(address):
    assert webhooks.is_public_address(ipaddress.ip_address(address))


def test_a_clinic_reads_one_wording_per_kind_of_failure_and_the_platform_the_detail(settings, monkeypatch):
    """A name that does not resolve, a refused port and a listener that never answers: the clinic
    reads each in plain words (never an exception's name or errno); the platform reads the
    same words with the recorded detail."""
    settings.BACKUPS_WEBHOOKS_ALLOW_HTTP_LOCALHOST = True
    monkeypatch.setattr(webhooks, "TIMEOUT", 2)
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel does), never answers
    try:
        closed = endpoint(f"http://127.0.0.1:{free_port()}/closed")
        filtered = endpoint(f"http://127.0.0.1:{silent.getsockname()[1]}/silent")
        nowhere = endpoint("https://nowhere.invalid/hook")  # .invalid never resolves (RFC 2606)
        refused_at, timed_out = attempted(closed, "backup.failed"), attempted(filtered, "backup.failed")
        not_found = attempted(nowhere, "backup.failed")
    finally:
        silent.close()
    assert (refused_at.failure, timed_out.failure, not_found.failure) == ("conn_refused", "timeout", "not_found")

    client = logged_in("admin", "admin")
    hooks = (closed, filtered, nowhere)
    pages = {hook.pk: client.get(f"{ENDPOINTS}{hook.pk}/change/").content.decode() for hook in hooks}
    rows = {pk: re.search(r"<td>Pending</td><td>1</td><td>([^<]*)</td>", page).group(1) for pk, page in pages.items()}
    assert rows == {
        closed.pk: "no answer: the connection was refused",
        filtered.pk: "no answer within 2 seconds",
        nowhere.pk: "no answer: the address could not be found",
    }
    listing = client.get(ENDPOINTS).content.decode()
    for page in [*pages.values(), listing]:
        assert "ConnectionRefused" not in page and "Errno" not in page and "timed out" not in page
        assert "cannot resolve" not in page and "NotFound" not in page
    for wording in rows.values():
        assert f"Pending · {wording}" in listing

    assert "ConnectionRefusedError" in refused_at.last_error and "timed out" in timed_out.last_error
    platform = logged_in("superadmin", "superadmin", host="localhost")
    deliveries = platform.get("/admin/backups/webhookdelivery/").content.decode()
    assert "no answer: the connection was refused (ConnectionRefusedError" in deliveries
    assert "no answer within 2 seconds (TimeoutError: timed out" in deliveries
    assert "no answer: the address could not be found (NotFound: cannot resolve nowhere.invalid" in deliveries
    detail = platform.get(f"/admin/backups/webhookdelivery/{timed_out.pk}/change/").content.decode()
    assert "timed out" in detail


def test_a_clinics_url_help_names_no_setting_the_platforms_does(settings):
    client = logged_in("admin", "admin")
    page = client.get(f"{ENDPOINTS}add/").content.decode()
    assert "An https:// address that accepts POST requests with a JSON body. Plain http is refused." in page
    assert "BACKUPS_" not in page
    platform = logged_in("superadmin", "superadmin", host="localhost")
    assert (
        "BACKUPS_WEBHOOKS_ALLOW_HTTP_LOCALHOST" in platform.get("/admin/backups/webhookendpoint/add/").content.decode()
    )


def test_the_signing_secret_is_on_the_page_the_message_names(settings):
    client = logged_in("admin", "admin")
    data = {"url": "https://hooks.example/in", "on_backup": "on", "active": "on"}
    added = client.post(f"{ENDPOINTS}add/", data, follow=True)
    hook = WebhookEndpoint.objects.get(url="https://hooks.example/in")
    page = added.content.decode()
    assert added.redirect_chain[-1][0] == f"{ENDPOINTS}{hook.pk}/change/"
    assert (
        "Copy its signing secret, below, into the receiving service" in page and f"<code>{hook.secret}</code>" in page
    )
    another = client.post(f"{ENDPOINTS}add/", {**data, "url": "https://hooks.example/two", "_addanother": "1"})
    second = WebhookEndpoint.objects.get(url="https://hooks.example/two")
    assert "signing secret is on the endpoint" in client.get(another["Location"]).content.decode()
    assert f"<code>{second.secret}</code>" in client.get(f"{ENDPOINTS}{second.pk}/change/").content.decode()


def certificate(tmp_path, name: str) -> tuple[str, str, str]:
    """A throwaway authority and a server certificate for ``name``: (CA file, cert file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    def build(subject: str, key, issuer: str, issuer_key, *, ca: bool):
        now = datetime.now(UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(subject)]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("Respaldo test CA", ca_key, "Respaldo test CA", ca_key, ca=True)
    cert = build(name, key, "Respaldo test CA", ca_key, ca=False)
    files = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    files[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tuple(str(f) for f in files)


def test_https_connects_to_the_checked_address_and_verifies_the_urls_host_name(tmp_path, monkeypatch):
    """hooks.example resolves (once) to 127.0.0.1, where a TLS receiver holds a certificate for
    hooks.example: the request goes there, with hooks.example as TLS server name and Host; a name
    the certificate does not hold is refused by the certificate check."""
    ca_file, cert_file, key_file = certificate(tmp_path, "hooks.example")
    monkeypatch.setenv("SSL_CERT_FILE", ca_file)  # the system's authorities, for this test: ours
    receiver, names = Receiver(), []
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert_file, key_file)
    server_side.sni_callback = lambda sock, name, context: names.append(name)
    receiver.server.socket = server_side.wrap_socket(receiver.server.socket, server_side=True)
    port, real = receiver.server.server_address[1], socket.getaddrinfo

    def resolver(host, *args, **kwargs):
        if host in ("hooks.example", "other.example"):
            return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("127.0.0.1", port))]
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    try:
        good = endpoint(f"https://hooks.example:{port}/in", schema=None)  # the platform's may be internal
        delivered = attempted(good)
        wrong = attempted(endpoint(f"https://other.example:{port}/in", schema=None))
    finally:
        receiver.close()
    assert (delivered.status, delivered.last_response_code) == ("delivered", 200), delivered.last_error
    (request,) = receiver.requests
    assert request["headers"]["Host"] == f"hooks.example:{port}" and names[0] == "hooks.example"
    verified(request, good.secret)
    assert wrong.status == "failed" and "certificate" in wrong.last_error.lower() and wrong.failure == "tls"
