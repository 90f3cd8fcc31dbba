"""Salesforce sign-in: the OAuth 2.0 token endpoint (`/services/oauth2/token`) and SOAP API
`login()`, with Salesforce's request and error shapes, and the sessions they issue.

Grants: `urn:ietf:params:oauth:grant-type:jwt-bearer` (an RS256 assertion signed with the
connected app's certificate key: iss = consumer key, sub = username, aud = the login URL, exp),
`client_credentials` (the connected app's key and secret, as HTTP Basic or in the form; the
session belongs to the app's run-as user), `refresh_token` (from a web-server flow) and
`password`. Issued sessions expire after `session_ttl` seconds; the static session of the
sandbox info file never does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from sandbox.http import Request, Response

TOKEN_PATH = "/services/oauth2/token"
SOAP_LOGIN = re.compile(r"^/services/Soap/u/(?P<version>\d+\.\d+)$")
LAST_SOAP_LOGIN_VERSION = 64.0  # login() is not available from API version 65.0
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
LOGIN_AUDIENCES = ("https://login.salesforce.com", "https://test.salesforce.com")
# The form fields each grant takes (anything else is refused, never ignored).
GRANT_FIELDS = {
    JWT_GRANT: {"assertion"},
    "client_credentials": {"client_id", "client_secret"},
    "refresh_token": {"refresh_token", "client_id", "client_secret"},
    "password": {"username", "password", "client_id", "client_secret"},
}
COMMON_FIELDS = {"grant_type", "format", "scope"}
SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
PARTNER = "urn:partner.soap.sforce.com"
INVALID_LOGIN = "Invalid username, password, security token; or user locked out."


@dataclass(frozen=True)
class ConnectedApp:
    """What the org knows of leadsync's connected app."""

    consumer_key: str
    consumer_secret: str
    certificate: x509.Certificate | None  # uploaded for the JWT bearer flow ("Use digital
    # signatures"); None: the app has none, and JWT bearer sign-in fails
    refresh_token: str  # issued to the user in an earlier web-server flow


class ConnectedAppKeys:
    """The connected app's certificate and its private key, kept in `directory` (the key, mode
    600, is what an admin keeps on leadsync's side)."""

    def __init__(self, directory: Path):
        self.key_path = directory / "connected-app-key.pem"
        self.cert_path = directory / "connected-app-cert.pem"
        if not (self.key_path.exists() and self.cert_path.exists()):
            self._generate()

    def _generate(self) -> None:
        key, certificate = _key_and_certificate()
        self.key_path.touch(mode=0o600)
        self.key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


class _Refused(Exception):
    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


class SalesforceSignIn:
    """Issues sessions and tells a live one from an expired or unknown one."""

    def __init__(
        self,
        app: ConnectedApp,
        username: str,
        password: str,
        security_token: str,
        static_session: str,
        session_ttl: float,
        base_url: Callable[[], str],
        identity: Callable[[str], str],
    ):
        self.app, self.username = app, username
        self._password, self._security_token = password, security_token
        self._static_session, self.session_ttl = static_session, session_ttl
        self._base_url, self._identity = base_url, identity
        self._sessions: dict[str, float] = {}  # session id -> when it expires (monotonic)
        self._revoked: set[str] = set()
        self._lock = threading.Lock()
        self.issued = 0  # sessions issued so far, by any flow

    # --- sessions ----------------------------------------------------------------------------

    def is_valid(self, session_id: str) -> bool:
        if self._static_session and hmac.compare_digest(
            session_id.encode(), self._static_session.encode()
        ):
            return True
        with self._lock:
            expires = self._sessions.get(session_id)
        return expires is not None and time.monotonic() < expires

    def expire_sessions(self) -> None:
        """Every session issued so far expires now (as after an admin's "Revoke" in Session
        Management); the info file's session stays."""
        with self._lock:
            self._sessions.clear()

    def revoke_refresh_token(self) -> None:
        """As when the user or an admin revokes the app's access (Setup > Connected Apps OAuth
        Usage): the refresh token stops working."""
        with self._lock:
            self._revoked.add(self.app.refresh_token)

    def _issue(self) -> str:
        session_id = "00Dsandbox!" + secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self._sessions = {s: t for s, t in self._sessions.items() if t > now}
            self._sessions[session_id] = now + self.session_ttl
            self.issued += 1
        return session_id

    # --- the OAuth token endpoint ------------------------------------------------------------

    def token(self, request: Request) -> Response:
        if request.method != "POST":
            body = {"error": "invalid_request", "error_description": "must use HTTP POST"}
            return Response(405, body)
        form = {name: values[-1] for name, values in parse_qs(request.body.decode()).items()}
        try:
            self._grant(form, request.headers.get("authorization", ""))
        except _Refused as refused:
            return Response(
                refused.status, {"error": refused.error, "error_description": refused.description}
            )
        return Response(200, self._token_body(self._issue()))

    def _grant(self, form: dict[str, str], authorization: str) -> None:
        grant = form.get("grant_type")
        if grant not in GRANT_FIELDS:
            raise _Refused("unsupported_grant_type", "grant type not supported")
        unknown = sorted(set(form) - GRANT_FIELDS[grant] - COMMON_FIELDS)
        if unknown:
            raise _Refused("invalid_request", f"unsupported parameter: {unknown[0]}")
        if grant == JWT_GRANT:
            self._check_assertion(form.get("assertion", ""))
        elif grant == "client_credentials":
            self._check_client(*_client_of(form, authorization), secret_required=True)
        elif grant == "refresh_token":
            self._check_client(form.get("client_id"), form.get("client_secret"), False)
            with self._lock:
                revoked = form.get("refresh_token") in self._revoked
            if revoked or not _same(form.get("refresh_token"), self.app.refresh_token):
                raise _Refused("invalid_grant", "expired access/refresh token")
        else:
            self._check_client(form.get("client_id"), form.get("client_secret"), True)
            if not (
                _same(form.get("username"), self.username)
                and _same(form.get("password"), self._password)
            ):
                raise _Refused("invalid_grant", "authentication failure")

    def _check_client(
        self, client_id: str | None, secret: str | None, secret_required: bool
    ) -> None:
        if not _same(client_id, self.app.consumer_key):
            raise _Refused("invalid_client_id", "client identifier invalid")
        if (secret_required or secret is not None) and not _same(secret, self.app.consumer_secret):
            raise _Refused("invalid_client", "invalid client credentials")

    def _check_assertion(self, assertion: str) -> None:
        try:
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _Refused("invalid_grant", "invalid assertion") from None
        if not _same(str(claims.get("iss", "")), self.app.consumer_key):
            raise _Refused("invalid_client_id", "client identifier invalid")
        if self.app.certificate is None:
            raise _Refused("invalid_grant", "invalid assertion")
        try:
            jwt.decode(
                assertion,
                self.app.certificate.public_key(),
                algorithms=["RS256"],
                audience=list(LOGIN_AUDIENCES),
                options={"require": ["iss", "sub", "aud", "exp"]},
            )
        except jwt.ExpiredSignatureError:
            raise _Refused("invalid_grant", "expired authorization code") from None
        except jwt.InvalidAudienceError:
            raise _Refused("invalid_grant", "audience is invalid") from None
        except jwt.PyJWTError:
            raise _Refused("invalid_grant", "invalid assertion") from None
        if claims.get("sub") != self.username:
            raise _Refused("invalid_grant", "user hasn't approved this consumer")

    def _token_body(self, session_id: str) -> dict[str, str]:
        identity = self._identity(self._base_url())
        issued_at = str(int(time.time() * 1000))
        digest = hmac.new(
            self.app.consumer_secret.encode(), (identity + issued_at).encode(), hashlib.sha256
        ).digest()
        return {
            "access_token": session_id,
            "instance_url": self._base_url(),
            "id": identity,
            "token_type": "Bearer",
            "scope": "api refresh_token",
            "issued_at": issued_at,
            "signature": base64.b64encode(digest).decode(),
        }

    # --- SOAP API login() (legacy) -----------------------------------------------------------

    def soap_login(self, request: Request, version: str) -> Response:
        if float(version) > LAST_SOAP_LOGIN_VERSION:
            return _soap_fault(
                "UNSUPPORTED_API_VERSION", f"login() is not available in API version {version}"
            )
        try:
            body = ElementTree.fromstring(request.body)
            username = body.findtext(f".//{{{PARTNER}}}username") or ""
            password = body.findtext(f".//{{{PARTNER}}}password") or ""
        except ElementTree.ParseError:
            return _soap_fault("INVALID_LOGIN", INVALID_LOGIN)
        if not (
            _same(username, self.username)
            and _same(password, self._password + self._security_token)
        ):
            return _soap_fault("INVALID_LOGIN", INVALID_LOGIN)
        server_url = f"{self._base_url()}/services/Soap/u/{version}"
        envelope = (
            f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{SOAP}" '
            f'xmlns="{PARTNER}"><soapenv:Body><loginResponse><result>'
            f"<serverUrl>{escape(server_url)}</serverUrl>"
            f"<sessionId>{escape(self._issue())}</sessionId>"
            f"<userName>{escape(self.username)}</userName>"
            "</result></loginResponse></soapenv:Body></soapenv:Envelope>"
        )
        return Response(200, envelope, content_type="text/xml;charset=UTF-8")


def _client_of(form: dict[str, str], authorization: str) -> tuple[str | None, str | None]:
    """The client id and secret, from HTTP Basic (as simple-salesforce sends them) or the form."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() == "basic":
        try:
            client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return None, None
        return client_id, secret
    return form.get("client_id"), form.get("client_secret")


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _soap_fault(code: str, message: str) -> Response:
    envelope = (
        f'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="{SOAP}" '
        'xmlns:sf="urn:fault.partner.soap.sforce.com" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>sf:{code}</faultcode><faultstring>{code}: {escape(message)}</faultstring>"
        '<detail><sf:LoginFault xsi:type="sf:LoginFault">'
        f"<sf:exceptionCode>{code}</sf:exceptionCode>"
        f"<sf:exceptionMessage>{escape(message)}</sf:exceptionMessage>"
        "</sf:LoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
    return Response(500, envelope, content_type="text/xml;charset=UTF-8")


def sign_in_for(
    settings, base_url: Callable[[], str], identity: Callable[[str], str]
) -> SalesforceSignIn:
    """The sign-in of a sandbox org with these `SalesforceSettings`. The client credentials
    flow's run-as user is `settings.username`, like every other flow's."""
    certificate = None
    if settings.connected_app_cert is not None:
        certificate = x509.load_pem_x509_certificate(Path(settings.connected_app_cert).read_bytes())
    app = ConnectedApp(
        consumer_key=settings.client_id,
        consumer_secret=settings.client_secret,
        certificate=certificate,
        refresh_token=settings.refresh_token or secrets.token_urlsafe(32),
    )
    return SalesforceSignIn(
        app,
        settings.username,
        settings.password,
        settings.security_token,
        settings.session_id,
        settings.session_ttl,
        base_url,
        identity,
    )


def _key_and_certificate() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """A connected app's RSA key and the self-signed certificate an admin would upload."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leadsync sandbox app")])
    now = datetime.now(timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    return key, certificate
