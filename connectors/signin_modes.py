"""One typed model per sign-in mode, and the rules that pick exactly one from a credentials
block's (or the environment's) fields.

A setting that is missing or contradicts another is a CredentialsInvalid at start that names the
variable, e.g. "SALESFORCE_PRIVATE_KEY_FILE is set but SALESFORCE_CONSUMER_KEY is not". Block
fields have the same names in lower case, without the prefix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from connectors.base import ConnectorError

if TYPE_CHECKING:
    from connectors.credentials import HubSpotCredentials, SalesforceCredentials

HUBSPOT_API = "https://api.hubapi.com"
LOGIN_DOMAINS = ("login", "test")


class CredentialsInvalid(ConnectorError):
    pass


class _Mode(BaseModel):
    model_config = ConfigDict(frozen=True)


class SalesforceSession(_Mode):
    """An access token someone already has (e.g. from the Salesforce CLI); it cannot be renewed."""

    mode: Literal["session"] = "session"
    instance_url: str
    session_id: SecretStr


class SalesforceJwtBearer(_Mode):
    """OAuth 2.0 JWT bearer: a connected app with a certificate ("Use digital signatures"), the
    integration user pre-authorized (admin-approved users, a profile or permission set)."""

    mode: Literal["jwt_bearer"] = "jwt_bearer"
    consumer_key: str
    username: str
    private_key_file: str | None = None
    private_key: SecretStr | None = None
    domain: str = "login"


class SalesforceClientCredentials(_Mode):
    """OAuth 2.0 client credentials: a connected app with the flow enabled and a run-as user;
    the token comes from the org's My Domain."""

    mode: Literal["client_credentials"] = "client_credentials"
    consumer_key: str
    consumer_secret: SecretStr
    domain: str = Field(description="the My Domain, e.g. acme.my (not login or test)")


class SalesforceRefreshToken(_Mode):
    """OAuth 2.0 refresh token: one stored from the connected app's web-server flow (scopes
    `api refresh_token`); each sign-in trades it for a session."""

    mode: Literal["refresh_token"] = "refresh_token"
    consumer_key: str
    refresh_token: SecretStr
    consumer_secret: SecretStr | None = None  # if the app requires the secret for this flow
    domain: str = "login"


class SalesforcePassword(_Mode):
    """Legacy: username, password and security token through SOAP API login(). Salesforce
    retires login() in Summer '27 (it is already absent from API version 65.0 and off by default
    in new orgs): use a connected app's JWT bearer or client credentials instead."""

    mode: Literal["password"] = "password"
    username: str
    password: SecretStr
    security_token: SecretStr
    domain: str = "login"


SalesforceSignIn = (
    SalesforceSession
    | SalesforceJwtBearer
    | SalesforceClientCredentials
    | SalesforceRefreshToken
    | SalesforcePassword
)


class HubSpotPrivateApp(_Mode):
    """A private app's access token (scopes crm.objects.contacts.read and .write,
    crm.schemas.contacts.read and .write); it does not expire."""

    mode: Literal["private_app"] = "private_app"
    access_token: SecretStr
    base_url: str = HUBSPOT_API


class HubSpotOAuth(_Mode):
    """A public app's OAuth: the refresh token from its install, traded for access tokens that
    expire (30 minutes)."""

    mode: Literal["oauth"] = "oauth"
    client_id: str
    client_secret: SecretStr
    refresh_token: SecretStr
    base_url: str = HUBSPOT_API


HubSpotSignIn = HubSpotPrivateApp | HubSpotOAuth


# Salesforce: the field that picks each mode, and what else the mode needs.
_SALESFORCE_MODES: dict[str, tuple[type[_Mode], tuple[str, ...]]] = {
    "session_id": (SalesforceSession, ("instance_url",)),
    "refresh_token": (SalesforceRefreshToken, ("consumer_key",)),
    "private_key_file": (SalesforceJwtBearer, ("consumer_key", "username")),
    "private_key": (SalesforceJwtBearer, ("consumer_key", "username")),
    "security_token": (SalesforcePassword, ("username", "password")),
}


def salesforce_sign_in(fields: SalesforceCredentials) -> SalesforceSignIn:
    """The one sign-in `fields` name."""
    given = {name for name in _SALESFORCE_FIELDS if getattr(fields, name, None) not in (None, "")}
    picks = [name for name in _SALESFORCE_MODES if name in given]
    if len(picks) > 1:
        first, second = (_salesforce(name) for name in picks[:2])
        raise CredentialsInvalid(
            f"{first} and {second} are both set: a Salesforce sign-in takes one of them; "
            "unset the other."
        )
    if picks:
        model, needed = _SALESFORCE_MODES[picks[0]]
    elif "consumer_key" in given and "consumer_secret" in given:
        model, needed = SalesforceClientCredentials, ()
    else:
        raise CredentialsInvalid(_no_salesforce_mode(given))
    _require(picks[0] if picks else "consumer_secret", needed, given, _salesforce)
    extra = given - set(model.model_fields) - {"domain"}
    if extra:
        raise CredentialsInvalid(
            f"{_salesforce(min(extra))} is set but the {model.__name__} sign-in "
            f"(picked by {_salesforce(picks[0] if picks else 'consumer_secret')}) does not use "
            "it; unset it."
        )
    if model is SalesforceClientCredentials and fields.domain in LOGIN_DOMAINS:
        raise CredentialsInvalid(
            "the client credentials sign-in needs the org's My Domain: set SALESFORCE_DOMAIN "
            "(e.g. acme.my for acme.my.salesforce.com), not login or test."
        )
    return model(**{name: getattr(fields, name) for name in given & set(model.model_fields)})


_SALESFORCE_FIELDS = (
    "instance_url",
    "session_id",
    "username",
    "password",
    "security_token",
    "consumer_key",
    "consumer_secret",
    "private_key_file",
    "private_key",
    "refresh_token",
    "domain",
)


def _no_salesforce_mode(given: set[str]) -> str:
    if "consumer_key" in given:
        return (
            "SALESFORCE_CONSUMER_KEY is set but no sign-in is complete: add "
            "SALESFORCE_PRIVATE_KEY_FILE (JWT bearer), SALESFORCE_CONSUMER_SECRET (client "
            "credentials) or SALESFORCE_REFRESH_TOKEN."
        )
    if "password" in given or "username" in given:
        return (
            "SALESFORCE_USERNAME/SALESFORCE_PASSWORD are set but SALESFORCE_SECURITY_TOKEN is "
            "not (legacy login), nor SALESFORCE_CONSUMER_KEY with SALESFORCE_PRIVATE_KEY_FILE "
            "(JWT bearer)."
        )
    if "instance_url" in given:
        return "SALESFORCE_INSTANCE_URL is set but SALESFORCE_SESSION_ID is not."
    return "No Salesforce sign-in is set (see README, 'Pointing leadsync at real CRMs')."


def hubspot_sign_in(fields: HubSpotCredentials) -> HubSpotSignIn:
    """The one sign-in `fields` name."""
    oauth = ("client_id", "client_secret", "refresh_token")
    given = {name for name in ("access_token", *oauth) if getattr(fields, name, None)}
    if "access_token" in given and given & set(oauth):
        raise CredentialsInvalid(
            f"HUBSPOT_ACCESS_TOKEN and {_hubspot(min(given & set(oauth)))} are both set: a "
            "private app token and a public app's OAuth are two different sign-ins; set one."
        )
    if "access_token" in given:
        return HubSpotPrivateApp(access_token=fields.access_token, base_url=fields.base_url)
    if not given:
        raise CredentialsInvalid(
            "No HubSpot sign-in is set: HUBSPOT_ACCESS_TOKEN (private app), or "
            "HUBSPOT_CLIENT_ID, HUBSPOT_CLIENT_SECRET and HUBSPOT_REFRESH_TOKEN (OAuth)."
        )
    _require(min(given), tuple(name for name in oauth if name != min(given)), given, _hubspot)
    return HubSpotOAuth(
        client_id=fields.client_id,
        client_secret=fields.client_secret,
        refresh_token=fields.refresh_token,
        base_url=fields.base_url,
    )


def _require(picked: str, needed: tuple[str, ...], given: set[str], label) -> None:
    missing = [name for name in needed if name not in given]
    if missing:
        raise CredentialsInvalid(f"{label(picked)} is set but {label(missing[0])} is not.")


def _salesforce(field: str) -> str:
    return f"SALESFORCE_{field.upper()}"


def _hubspot(field: str) -> str:
    return f"HUBSPOT_{field.upper()}"
