"""Signing in to Salesforce the ways real orgs do, through simple-salesforce's own login code.

- JWT bearer, client credentials and the legacy username-password login go through
  `Salesforce(...)`, which posts to `https://{domain}.salesforce.com/services/oauth2/token` (or
  SOAP `login()`). On a 401 INVALID_SESSION_ID in a REST call, simple-salesforce signs in again
  itself and retries (up to 3 times), but not in Bulk API 2.0 calls, which carry the session
  they were made with.
- A refresh token is one POST to the same endpoint (simple-salesforce has no helper); the client
  then runs in direct mode (`instance_url` + `session_id`), where it never signs in again.

So the connector renews a session itself when a call is refused with INVALID_SESSION_ID: it signs
in again with the same flow (`renewal`) and retries the call once.

`route_to_sandbox` makes a session send Salesforce's login hosts (login.salesforce.com,
test.salesforce.com, My Domains *.my.salesforce.com) to the sandbox, so these same code paths run
against it.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import BaseAdapter
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceAuthenticationFailed

from connectors.base import AuthenticationFailed
from connectors.signin_modes import (
    SalesforceClientCredentials,
    SalesforceJwtBearer,
    SalesforcePassword,
    SalesforceRefreshToken,
    SalesforceSession,
    SalesforceSignIn,
)

LOGIN_HOSTS = ("login.salesforce.com", "test.salesforce.com")
MY_DOMAIN_SUFFIX = ".my.salesforce.com"
SIGN_IN_PATHS = ("/services/oauth2/", "/services/Soap/u/")
FLOW_NAMES = {
    "session": "session",
    "jwt_bearer": "JWT bearer",
    "client_credentials": "client credentials",
    "refresh_token": "refresh token",
    "password": "username-password (SOAP login)",
}


class SandboxRoute(BaseAdapter):
    """Sends requests for Salesforce's login and My Domain hosts to `target` (scheme, host and
    port), through the adapter it wraps; every other request goes as it is."""

    def __init__(self, inner: BaseAdapter, target: str):
        super().__init__()
        self.inner = inner
        self.target = urlsplit(target)

    def send(self, request: requests.PreparedRequest, **kwargs) -> requests.Response:
        url = urlsplit(request.url)
        if is_salesforce_login_host(url.hostname or ""):
            target = url._replace(scheme=self.target.scheme, netloc=self.target.netloc)
            request.url = urlunsplit(target)
        return self.inner.send(request, **kwargs)

    def close(self) -> None:
        self.inner.close()


def is_salesforce_login_host(host: str) -> bool:
    return host in LOGIN_HOSTS or host.endswith(MY_DOMAIN_SUFFIX)


def is_sign_in(path: str) -> bool:
    """Whether a request path is a sign-in (not an API call: Salesforce does not count it)."""
    return path.startswith(SIGN_IN_PATHS)


def route_to_sandbox(session: requests.Session, sandbox_url: str) -> None:
    """Make `session` send Salesforce's login hosts to the sandbox at `sandbox_url`."""
    session.mount("https://", SandboxRoute(session.get_adapter("https://"), sandbox_url))


def sign_in(mode: SalesforceSignIn, session: requests.Session) -> Salesforce:
    """A client signed in with `mode`, every request through `session`."""
    try:
        return _sign_in(mode, session)
    except SalesforceAuthenticationFailed as error:
        raise AuthenticationFailed(
            f"Salesforce refused the {FLOW_NAMES[mode.mode]} sign-in: {error.code}: "
            f"{error.auth_message}"
        ) from None


def renewal(mode: SalesforceSignIn, session: requests.Session) -> Callable[[], Salesforce] | None:
    """How to sign in again when a session expires; None for a session given as it is."""
    if isinstance(mode, SalesforceSession):
        return None
    return lambda: sign_in(mode, session)


def _sign_in(mode: SalesforceSignIn, session: requests.Session) -> Salesforce:
    if isinstance(mode, SalesforceSession):
        return Salesforce(
            instance_url=mode.instance_url,
            session_id=mode.session_id.get_secret_value(),
            session=session,
        )
    if isinstance(mode, SalesforceJwtBearer):
        key = mode.private_key.get_secret_value() if mode.private_key else None
        return Salesforce(
            username=mode.username,
            consumer_key=mode.consumer_key,
            privatekey_file=mode.private_key_file,
            privatekey=key,
            domain=mode.domain,
            session=session,
        )
    if isinstance(mode, SalesforceClientCredentials):
        return Salesforce(
            consumer_key=mode.consumer_key,
            consumer_secret=mode.consumer_secret.get_secret_value(),
            domain=mode.domain,
            session=session,
        )
    if isinstance(mode, SalesforcePassword):
        return Salesforce(
            username=mode.username,
            password=mode.password.get_secret_value(),
            security_token=mode.security_token.get_secret_value(),
            domain=mode.domain,
            session=session,
        )
    return _refresh(mode, session)


def _refresh(mode: SalesforceRefreshToken, session: requests.Session) -> Salesforce:
    """The refresh token grant: one POST, then a client in direct mode."""
    form = {
        "grant_type": "refresh_token",
        "client_id": mode.consumer_key,
        "refresh_token": mode.refresh_token.get_secret_value(),
    }
    if mode.consumer_secret is not None:
        form["client_secret"] = mode.consumer_secret.get_secret_value()
    token_url = f"https://{mode.domain}.salesforce.com/services/oauth2/token"
    response = session.post(token_url, data=form)
    try:
        token = response.json()
    except ValueError:
        token = {}
    if response.status_code != 200 or "access_token" not in token:
        raise SalesforceAuthenticationFailed(
            token.get("error", response.status_code),
            token.get("error_description", response.text[:200]),
        )
    return Salesforce(
        instance_url=token["instance_url"], session_id=token["access_token"], session=session
    )
