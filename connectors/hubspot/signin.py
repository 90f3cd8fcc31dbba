"""HubSpot sign-in: a private app token as it is, or a public app's OAuth refresh token traded
for access tokens (30 minutes each) through hubspot-api-client's own `oauth.tokens_api`.

Every API client the HubSpot client builds gets its configuration from `api_factory` (the
client's documented hook), so a refreshed token reaches every API object a connector keeps.
"""

from __future__ import annotations

import json
import threading
import time
import weakref

from hubspot import HubSpot
from hubspot.discovery.discovery_base import DiscoveryBase
from hubspot.oauth.exceptions import ApiException as OAuthApiException

from connectors.base import AuthenticationFailed
from connectors.retry import Transient
from connectors.signin_modes import HubSpotOAuth

# Refresh this long before the token says it expires (a tenth of its life if that is shorter):
# a call sent just before the end must not arrive just after it.
EARLY_SECONDS = 60.0


class OAuthTokens:
    """The current access token of a public app's install, refreshed before it expires or when
    HubSpot refuses it; shared by every API client made with `api_factory`."""

    def __init__(self, mode: HubSpotOAuth, ca_bundle: str | None, timeout: tuple[float, float]):
        self.mode, self._timeout = mode, timeout
        self._oauth = HubSpot(host=mode.base_url.rstrip("/"), ssl_ca_cert=ca_bundle, retry=False)
        self._tokens_api = self._oauth.oauth.tokens_api
        self._configurations: weakref.WeakSet = weakref.WeakSet()
        self._lock = threading.Lock()
        self._token, self._refresh_at = "", 0.0

    def api_factory(self, package, api_name: str, config: dict):
        """hubspot-api-client's `api_factory`: its default, with the configuration kept."""
        api = DiscoveryBase._default_api_factory(package, api_name, config)
        self._configurations.add(api.api_client.configuration)
        return api

    def current(self) -> str:
        """A token that has not expired (refreshed first if it is about to)."""
        with self._lock:
            if time.monotonic() >= self._refresh_at:
                self._refresh()
            return self._token

    def refused(self, token: str) -> str:
        """HubSpot refused `token` (401): a new one, unless another call already got one."""
        with self._lock:
            if self._token == token:
                self._refresh()
            return self._token

    def _refresh(self) -> None:
        try:
            response = self._tokens_api.create(
                grant_type="refresh_token",
                client_id=self.mode.client_id,
                client_secret=self.mode.client_secret.get_secret_value(),
                refresh_token=self.mode.refresh_token.get_secret_value(),
                _request_timeout=self._timeout,
            )
        except OAuthApiException as error:
            if error.status == 0 or error.status >= 500:  # 0: the connection failed
                raise Transient(f"HubSpot's token endpoint answered {error.status}") from None
            raise AuthenticationFailed(
                f"HubSpot refused the OAuth refresh token ({_reason(error)}): the app may have "
                "been uninstalled; install it again and update the refresh token "
                "(HUBSPOT_REFRESH_TOKEN or the block's refresh_token)."
            ) from None
        lifetime = float(response.expires_in or 0)
        self._token = response.access_token
        self._refresh_at = time.monotonic() + lifetime - min(EARLY_SECONDS, lifetime / 10)
        for configuration in list(self._configurations):
            configuration.access_token = self._token


def _reason(error: OAuthApiException) -> str:
    try:
        body = json.loads(error.body or "{}")
    except ValueError:
        body = {}
    return f"{body.get('status', error.status)}: {body.get('message', error.reason)}"


def oauth_tokens(credentials, timeout: tuple[float, float]) -> OAuthTokens | None:
    """The OAuth tokens of `credentials` (a HubSpotCredentials), or None for a private app."""
    mode = credentials.sign_in()
    if not isinstance(mode, HubSpotOAuth):
        return None
    return OAuthTokens(mode, credentials.ca_bundle, timeout)
