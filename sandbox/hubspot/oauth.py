"""HubSpot OAuth: `POST /oauth/v1/token` (the endpoint hubspot-api-client 12 calls; HubSpot
deprecates it on 16 February 2027 for the dated `/oauth/2026-03/token`, same grants, parameters
in the body) with grant_type `refresh_token` and `authorization_code`, HubSpot's form fields
and error shapes, and access tokens that expire.

The app's private app token (the sandbox info file's `access_token`) never expires; OAuth access
tokens expire after `access_token_ttl` seconds, then calls with them get HubSpot's 401
`EXPIRED_AUTHENTICATION`.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qs

from sandbox.http import Request, Response

TOKEN_PATH = "/oauth/v1/token"
GRANT_FIELDS = {
    "refresh_token": {"client_id", "client_secret", "refresh_token", "redirect_uri"},
    "authorization_code": {"client_id", "client_secret", "code", "redirect_uri", "code_verifier"},
}


@dataclass(frozen=True)
class PublicApp:
    """An installed public app: what HubSpot holds of leadsync's OAuth app."""

    client_id: str
    client_secret: str
    redirect_uri: str
    refresh_token: str  # issued at install, kept by leadsync
    authorization_code: str  # single use, from the install redirect


class HubSpotOAuth:
    """Issues access tokens and tells a live one from an expired or unknown one."""

    def __init__(self, app: PublicApp, private_app_token: str, access_token_ttl: float):
        self.app, self.access_token_ttl = app, access_token_ttl
        self._private_app_token = private_app_token
        self._tokens: dict[str, float] = {}  # access token -> when it expires (monotonic)
        self._revoked: set[str] = set()
        self._codes_used: set[str] = set()
        self._lock = threading.Lock()
        self.issued = 0

    def refusal(self, token: str | None) -> Response | None:
        """None for a valid token, else HubSpot's 401."""
        token = token or ""
        if self._private_app_token and _same(token, self._private_app_token):
            return None
        with self._lock:
            expires = self._tokens.get(token)
        if expires is None:
            return _unauthenticated()
        if time.monotonic() >= expires:
            ago = int(time.monotonic() - expires)
            return _error(
                401,
                "EXPIRED_AUTHENTICATION",
                f"The OAuth token used to make this call expired {ago} second(s) ago.",
                "error",
            )
        return None

    def expire_access_tokens(self) -> None:
        """Every access token issued so far expires now, whatever its expires_in said."""
        with self._lock:
            now = time.monotonic()
            self._tokens = {token: now for token in self._tokens}

    def revoke_refresh_token(self) -> None:
        """As when the portal uninstalls the app: its refresh token stops working."""
        with self._lock:
            self._revoked.add(self.app.refresh_token)

    def token(self, request: Request) -> Response:
        if request.method != "POST":
            return _error(405, "BAD_REQUEST", "only POST is supported")
        form = {name: values[-1] for name, values in parse_qs(request.body.decode()).items()}
        grant = form.get("grant_type")
        if grant not in GRANT_FIELDS:
            return _error(400, "BAD_GRANT_TYPE", "missing or unknown grant type")
        unknown = sorted(set(form) - GRANT_FIELDS[grant] - {"grant_type"})
        if unknown:
            return _error(400, "BAD_REQUEST", f"unknown parameter: {unknown[0]}")
        if not _same(form.get("client_id"), self.app.client_id):
            return _error(400, "BAD_CLIENT_ID", "missing or unknown client id")
        if not _same(form.get("client_secret"), self.app.client_secret):
            return _error(400, "BAD_CLIENT_SECRET", "missing or invalid client secret")
        if grant == "refresh_token":
            with self._lock:
                revoked = form.get("refresh_token") in self._revoked
            if revoked or not _same(form.get("refresh_token"), self.app.refresh_token):
                return _error(400, "BAD_REFRESH_TOKEN", "missing or unknown refresh token")
        else:
            if not _same(form.get("redirect_uri"), self.app.redirect_uri):
                return _error(400, "BAD_REDIRECT_URI", "redirect_uri does not match")
            with self._lock:
                used = form.get("code") in self._codes_used
                self._codes_used.add(form.get("code") or "")
            if used or not _same(form.get("code"), self.app.authorization_code):
                return _error(400, "BAD_AUTH_CODE", "missing or unknown auth code")
        return Response(
            200,
            {
                "token_type": "bearer",
                "refresh_token": self.app.refresh_token,
                "access_token": self._issue(),
                "expires_in": int(self.access_token_ttl),
            },
        )

    def _issue(self) -> str:
        token = "COj-sandbox-" + secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            self._tokens = {t: e for t, e in self._tokens.items() if e > now - 3600}
            self._tokens[token] = now + self.access_token_ttl
            self.issued += 1
        return token


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _unauthenticated() -> Response:
    return _error(
        401,
        "INVALID_AUTHENTICATION",
        "Authentication credentials not found. This API supports OAuth 2.0 authentication and "
        "you can find more details at https://developers.hubspot.com/docs/methods/auth/"
        "oauth-overview",
        "error",
    )


def _error(status: int, code: str, message: str, shape: str = "oauth") -> Response:
    """An OAuth endpoint error (`status` names the problem) or an API call's 401 (`status`
    'error', `category` names it)."""
    body = {"status": code, "message": message, "correlationId": str(uuid.uuid4())}
    if shape == "error":
        body = {**body, "status": "error", "category": code}
    return Response(status, body)


def for_settings(settings) -> HubSpotOAuth:
    """The OAuth side of a sandbox portal with these `HubSpotSettings`."""
    app = PublicApp(
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        redirect_uri=settings.redirect_uri,
        refresh_token=settings.refresh_token or secrets.token_urlsafe(32),
        authorization_code=settings.authorization_code or secrets.token_urlsafe(16),
    )
    return HubSpotOAuth(app, settings.access_token, settings.access_token_ttl)
