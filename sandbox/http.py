"""The HTTPS plumbing both sandbox CRMs share: TLS from a local CA, a threaded server, faults.

Each CRM is an `Api`: it turns a `Request` into a `Response` and knows its own error shapes.
`SandboxServer` serves one Api over HTTPS on a port, adds the configured latency, and injects
faults (429, 5xx, slow responses, dropped connections, requests left unanswered). Each draw is a
function of the seed, the request's identity (the Api's `fault_key`) and how many times that
request was seen before: the same requests get the same faults in whatever order they arrive.
"""

from __future__ import annotations

import hashlib
import json
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

import trustme

HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    @property
    def bearer_token(self) -> str | None:
        scheme, _, token = self.headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None


@dataclass
class Response:
    status: int
    body: Any = None  # JSON-serializable, or bytes/str sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json;charset=UTF-8"

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return json.dumps(self.body, separators=(",", ":")).encode()


class Api(Protocol):
    name: str

    def handle(self, request: Request) -> Response: ...

    def fault_response(self, kind: str) -> Response:
        """The CRM's own response for an injected 'rate_limited' or 'server_error' fault."""
        ...

    def fault_key(self, request: Request) -> str:
        """What the request is, for fault draws (optional; default `request_identity`): the
        same for a retry of it and for the same request in another run, whatever the arrival
        order; so nothing that changes between runs, such as timestamps in a body."""
        ...


def request_identity(request: Request) -> str:
    """The default fault key: method and path."""
    return f"{request.method} {request.path}"


@dataclass(frozen=True)
class FaultPlan:
    """What can go wrong, and how often (each rate is a probability per request)."""

    rate_limited: float = 0.0
    server_error: float = 0.0
    slow: float = 0.0
    dropped: float = 0.0
    write_error: float = 0.0  # per record, in batch and single-record writes
    hang: float = 0.0  # read the request, then answer nothing for hang_seconds and close
    slow_seconds: float = 2.0
    hang_seconds: float = 3600.0
    latency_seconds: float = 0.0  # added to every request
    seed: int = 0


class Faults:
    """Seeded, thread-safe fault draws keyed on what is drawn for: a request's identity, a
    record's id. The n-th draw for a key depends only on the seed, the key and n, so a retry
    gets a fresh draw, and the same requests get the same faults whatever their arrival order."""

    REQUEST_FAULTS = ("dropped", "rate_limited", "server_error", "slow", "hang")

    def __init__(self, plan: FaultPlan | None = None):
        self.plan = plan or FaultPlan()
        self.injected: Counter[str] = Counter()  # request faults injected so far, by kind
        self._seen: Counter[tuple[str, str]] = Counter()  # draws so far, by (kind, key)
        self._lock = threading.Lock()

    def configure(self, plan: FaultPlan) -> None:
        with self._lock:
            self.plan = plan
            self._seen.clear()

    def next_request_fault(self, key: str = "") -> str | None:
        """The fault for the request `key` names (its `Api.fault_key`), or None."""
        plan = self.plan
        if not any(getattr(plan, kind) > 0 for kind in self.REQUEST_FAULTS):
            return None
        draw = self._draw("request", key, plan.seed)
        threshold = 0.0
        for kind in self.REQUEST_FAULTS:
            threshold += getattr(plan, kind)
            if draw < threshold:
                with self._lock:
                    self.injected[kind] += 1
                return kind
        return None

    def write_fails(self, key: str = "") -> bool:
        """Whether this write of the record `key` names (its id) fails."""
        plan = self.plan
        if plan.write_error <= 0:
            return False
        return self._draw("write", key, plan.seed) < plan.write_error

    def _draw(self, kind: str, key: str, seed: int) -> float:
        with self._lock:
            occurrence = self._seen[kind, key]
            self._seen[kind, key] += 1
        text = f"{seed}\x1f{kind}\x1f{key}\x1f{occurrence}".encode()
        return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big") / 2**64


class InFlight:
    """Requests being served right now, and the most there ever were at once."""

    def __init__(self) -> None:
        self.now = self.peak = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self.now -= 1


class CertificateAuthority:
    """A local CA (kept in `directory` when given, so clients keep trusting it across restarts)."""

    def __init__(self, directory: Path):
        directory.mkdir(parents=True, exist_ok=True)
        cert_path, key_path = directory / "sandbox-ca.pem", directory / "sandbox-ca-key.pem"
        if cert_path.exists() and key_path.exists():
            self._ca = trustme.CA.from_pem(cert_path.read_bytes(), key_path.read_bytes())
        else:
            self._ca = trustme.CA(organization_name="leadsync sandbox")
            self._ca.cert_pem.write_to_path(str(cert_path))
            self._ca.private_key_pem.write_to_path(str(key_path))
            key_path.chmod(0o600)
        self.cert_path = cert_path
        self._server_cert = self._ca.issue_cert(*HOSTS)

    def server_key_and_chain(self) -> tuple[bytes, bytes]:
        """The server certificate's private key and chain (PEM), for servers that take them as
        bytes (the Pub/Sub API's gRPC server)."""
        chain = b"".join(blob.bytes() for blob in self._server_cert.cert_chain_pems)
        return self._server_cert.private_key_pem.bytes(), chain

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_cert.configure_cert(context)
        return context


class SandboxServer:
    """One Api served over HTTPS in background threads; `stop()` shuts it down cleanly."""

    def __init__(
        self,
        api: Api,
        ca: CertificateAuthority,
        faults: Faults,
        port: int = 0,
        host: str = "127.0.0.1",
    ):
        self.api, self.faults = api, faults
        self.in_flight = InFlight()
        self._stopping = threading.Event()  # wakes requests held by a hang fault
        self._httpd = ThreadingHTTPServer(
            (host, port), _handler_for(api, faults, self.in_flight, self._stopping)
        )
        self._httpd.daemon_threads = True
        context = ca.server_context()
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name=f"{api.name}-sandbox", daemon=True
        )

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"https://{host}:{port}"

    def start(self) -> SandboxServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def _handler_for(
    api: Api, faults: Faults, in_flight: InFlight, stopping: threading.Event
) -> type[BaseHTTPRequestHandler]:
    fault_key = getattr(api, "fault_key", request_identity)

    def identity(request: Request) -> str:
        try:
            return fault_key(request)
        except Exception:  # noqa: BLE001 - a malformed request still gets a fault draw
            return request_identity(request)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the real APIs
        disable_nagle_algorithm = True  # headers and body go out in separate writes
        server_version = f"leadsync-sandbox-{api.name}"

        def do_GET(self) -> None:
            self._serve()

        do_POST = do_PATCH = do_PUT = do_DELETE = do_GET

        def __getattr__(self, name: str) -> Any:
            """Any other method (OPTIONS, TRACE, ...) goes to the Api too, which answers 405 in
            its CRM's error shape rather than http.server's 501 HTML page; HEAD is served as the
            GET it stands for, without the body, as both CRMs document it."""
            if name.startswith("do_"):
                return self._serve
            raise AttributeError(name)

        def _serve(self) -> None:
            with in_flight:
                self._handle()

        def _handle(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            request = Request(
                method="GET" if self.command == "HEAD" else self.command,
                path=url.path,
                query=parse_qs(url.query, keep_blank_values=True),
                headers={name.lower(): value for name, value in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
            )
            if faults.plan.latency_seconds:
                time.sleep(faults.plan.latency_seconds)
            fault = faults.next_request_fault(identity(request))
            if fault == "dropped":
                self.close_connection = True
                self.connection.shutdown(2)  # the peer sees the connection reset mid-request
                return
            if fault == "hang":
                stopping.wait(faults.plan.hang_seconds)  # silent; until then or the server stops
                self.close_connection = True
                return
            if fault == "slow":
                time.sleep(faults.plan.slow_seconds)
            if fault in ("rate_limited", "server_error"):
                response = api.fault_response(fault)
            else:
                response = api.handle(request)
            self._send(response)

        def _send(self, response: Response) -> None:
            payload = response.encoded()
            self.send_response(response.status)
            if response.body is not None:
                self.send_header("Content-Type", response.content_type)
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":  # a HEAD response has headers only
                self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # tokens travel in headers; the sandbox never logs requests

    return Handler
