"""Where the connectors' credentials come from, in order:

1. a Prefect block, when a block name is given (admins fill these in the Prefect UI);
2. environment variables (SALESFORCE_<FIELD>, HUBSPOT_<FIELD>: the blocks' field names in upper
   case; LEADSYNC_CA_BUNDLE for either's ca_bundle);
3. the sandbox info file named by LEADSYNC_SANDBOX_INFO, or the default sandbox's
   `.leadsync/sandbox/info.json` when it exists: the sandbox is the default when nothing is given.

Whichever gives them, the settings must name exactly one sign-in: `SalesforceCredentials.sign_in()`
and `HubSpotCredentials.sign_in()` return its typed model (connectors/signin_modes.py), or raise
CredentialsInvalid naming the variable that is missing or contradicts another.

Secrets are pydantic SecretStr: they print as '**********' in reprs, logs and exceptions.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TypeVar

from prefect.blocks.core import Block
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.base import ConnectorError
from connectors.signin_modes import (
    HUBSPOT_API,
    CredentialsInvalid,
    HubSpotSignIn,
    SalesforceSignIn,
    hubspot_sign_in,
    salesforce_sign_in,
)

BlockT = TypeVar("BlockT", bound=Block)

DEFAULT_SANDBOX_INFO = Path(".leadsync/sandbox/info.json")

__all__ = [
    "HUBSPOT_API",
    "CredentialsInvalid",
    "CredentialsMissing",
    "HubSpotCredentials",
    "SalesforceCredentials",
    "environment_has_credentials",
    "hubspot_credentials",
    "salesforce_credentials",
]


class CredentialsMissing(ConnectorError):
    pass


class SalesforceCredentials(Block):
    """Salesforce: one of a connected app's OAuth sign-ins (JWT bearer, client credentials, a
    refresh token), an existing session, or a username-password login (legacy: SOAP API login(),
    which Salesforce retires in Summer '27)."""

    _block_type_name = "leadsync Salesforce"
    _description = (
        "How leadsync signs in to Salesforce: JWT bearer (consumer_key, username, "
        "private_key_file or private_key), client credentials (consumer_key, consumer_secret, "
        "My Domain), refresh token (consumer_key, refresh_token, consumer_secret if the app "
        "requires it), a session (instance_url, session_id), or legacy username, password and "
        "security_token (SOAP API login(), which Salesforce retires in Summer '27)."
    )

    instance_url: str | None = Field(
        default=None, description="e.g. https://acme.my.salesforce.com (with session_id)"
    )
    session_id: SecretStr | None = Field(default=None, description="an access token / session id")
    username: str | None = Field(
        default=None, description="the integration user (JWT bearer; legacy login)"
    )
    password: SecretStr | None = Field(default=None, description="legacy login only")
    security_token: SecretStr | None = Field(default=None, description="legacy login only")
    consumer_key: str | None = Field(default=None, description="connected app consumer key")
    consumer_secret: SecretStr | None = Field(
        default=None, description="connected app consumer secret"
    )
    private_key_file: str | None = Field(
        default=None, description="JWT bearer: the connected app certificate's private key (PEM)"
    )
    private_key: SecretStr | None = Field(
        default=None, description="JWT bearer: the private key itself, instead of a file"
    )
    refresh_token: SecretStr | None = Field(
        default=None, description="a refresh token from the connected app's web-server flow"
    )
    domain: str = Field(
        default="login",
        description="login, test, or your My Domain (e.g. acme.my; client credentials needs it)",
    )
    ca_bundle: str | None = Field(
        default=None, description="CA bundle to trust, if not the system's"
    )
    sandbox_url: str | None = Field(
        default=None,
        description="send Salesforce's login and My Domain hosts to this server (the sandbox)",
    )

    def sign_in(self) -> SalesforceSignIn:
        """The one sign-in these fields name, checked (CredentialsInvalid names what is wrong)."""
        return salesforce_sign_in(self)


class HubSpotCredentials(Block):
    """HubSpot: a private app access token, or a public app's OAuth refresh token."""

    _block_type_name = "leadsync HubSpot"
    _description = (
        "How leadsync signs in to HubSpot: a private app access token, or a public app's "
        "OAuth client_id, client_secret and refresh_token."
    )

    access_token: SecretStr | None = Field(
        default=None, description="private app access token (pat-...)"
    )
    client_id: str | None = Field(default=None, description="OAuth: the public app's client id")
    client_secret: SecretStr | None = Field(default=None, description="OAuth: its client secret")
    refresh_token: SecretStr | None = Field(
        default=None, description="OAuth: the refresh token from the app's install"
    )
    base_url: str = Field(default=HUBSPOT_API, description="API host, without a trailing slash")
    ca_bundle: str | None = Field(
        default=None, description="CA bundle to trust, if not the system's"
    )

    def sign_in(self) -> HubSpotSignIn:
        """The one sign-in these fields name, checked (CredentialsInvalid names what is wrong)."""
        return hubspot_sign_in(self)


class _SalesforceEnvironment(BaseSettings):
    """SALESFORCE_* variables: the block's fields, and LEADSYNC_CA_BUNDLE."""

    model_config = SettingsConfigDict(env_prefix="SALESFORCE_", extra="ignore")

    instance_url: str | None = None
    session_id: SecretStr | None = None
    username: str | None = None
    password: SecretStr | None = None
    security_token: SecretStr | None = None
    consumer_key: str | None = None
    consumer_secret: SecretStr | None = None
    private_key_file: str | None = None
    private_key: SecretStr | None = None
    refresh_token: SecretStr | None = None
    domain: str | None = None
    sandbox_url: str | None = None
    ca_bundle: str | None = Field(default=None, validation_alias=AliasChoices("LEADSYNC_CA_BUNDLE"))


class _HubSpotEnvironment(BaseSettings):
    """HUBSPOT_* variables: the block's fields, and LEADSYNC_CA_BUNDLE."""

    model_config = SettingsConfigDict(env_prefix="HUBSPOT_", extra="ignore")

    access_token: SecretStr | None = None
    client_id: str | None = None
    client_secret: SecretStr | None = None
    refresh_token: SecretStr | None = None
    base_url: str | None = None
    ca_bundle: str | None = Field(default=None, validation_alias=AliasChoices("LEADSYNC_CA_BUNDLE"))


# Not credentials by themselves: with only these set, the sandbox info file still applies.
_SETTINGS_ONLY = {"domain", "sandbox_url", "base_url", "ca_bundle"}


def _given(environment: BaseSettings) -> dict:
    return {name: value for name, value in environment if value not in (None, "")}


def _has_credentials(environment: BaseSettings) -> bool:
    return bool(set(_given(environment)) - _SETTINGS_ONLY)


def environment_has_credentials() -> bool:
    return _has_credentials(_SalesforceEnvironment()) or _has_credentials(_HubSpotEnvironment())


def salesforce_credentials(block: str | None = None) -> SalesforceCredentials:
    if block:
        credentials = _load(SalesforceCredentials, block)
    else:
        environment = _SalesforceEnvironment()
        if _has_credentials(environment):
            credentials = SalesforceCredentials(**_given(environment))
        else:
            info = sandbox_info()
            credentials = SalesforceCredentials(
                instance_url=info["salesforce"]["instance_url"],
                session_id=info["salesforce"]["session_id"],
                ca_bundle=info["ca_cert"],
            )
    credentials.sign_in()  # a missing or contradictory setting stops here, named
    return credentials


def hubspot_credentials(block: str | None = None) -> HubSpotCredentials:
    if block:
        credentials = _load(HubSpotCredentials, block)
    else:
        environment = _HubSpotEnvironment()
        if _has_credentials(environment):
            given = _given(environment)
            if "base_url" in given:
                given["base_url"] = given["base_url"].rstrip("/")
            credentials = HubSpotCredentials(**given)
        else:
            info = sandbox_info()
            credentials = HubSpotCredentials(
                access_token=info["hubspot"]["access_token"],
                base_url=info["hubspot"]["base_url"],
                ca_bundle=info["ca_cert"],
            )
    credentials.sign_in()
    return credentials


def _load(kind: type[BlockT], name: str) -> BlockT:
    try:
        return kind.load(name)
    except ValueError as error:  # Prefect's answer when no such block document exists
        raise CredentialsMissing(
            f"No {kind.get_block_type_name()} block named {name!r} on this Prefect server "
            f"({error}); create it in the UI (Blocks) or correct the credentials_block parameter."
        ) from None


def sandbox_info() -> dict:
    """The sandbox info file: LEADSYNC_SANDBOX_INFO, or the default sandbox's."""
    path = Path(os.environ.get("LEADSYNC_SANDBOX_INFO") or DEFAULT_SANDBOX_INFO)
    if not path.exists():
        raise CredentialsMissing(
            "No CRM credentials: give a Prefect block name, set SALESFORCE_* / HUBSPOT_* "
            f"environment variables, or start the sandbox (python -m sandbox serve) so that {path} "
            "exists (LEADSYNC_SANDBOX_INFO names another info file)."
        )
    return json.loads(path.read_text())
