"""Where the connectors' credentials come from, in order:

1. a Prefect block, when a block name is given (admins fill these in the Prefect UI);
2. environment variables (names below);
3. the sandbox info file named by LEADSYNC_SANDBOX_INFO, or the default sandbox's
   `.leadsync/sandbox/info.json` when it exists: the sandbox is the default when nothing is given.

Secrets are pydantic SecretStr: they print as '**********' in reprs, logs and exceptions.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypeVar

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from connectors.base import ConnectorError

BlockT = TypeVar("BlockT", bound=Block)

DEFAULT_SANDBOX_INFO = Path(".leadsync/sandbox/info.json")
HUBSPOT_API = "https://api.hubapi.com"


# Any of these set means real CRM credentials come from the environment.
CREDENTIAL_VARIABLES = (
    "SALESFORCE_SESSION_ID",
    "SALESFORCE_USERNAME",
    "SALESFORCE_CONSUMER_KEY",
    "HUBSPOT_ACCESS_TOKEN",
)


class CredentialsMissing(ConnectorError):
    pass


def environment_has_credentials(environ: Mapping[str, str] = os.environ) -> bool:
    return any(environ.get(name) for name in CREDENTIAL_VARIABLES)


class SalesforceCredentials(Block):
    """Salesforce: a session (instance URL + session id), a username-password login, or an
    OAuth client-credentials login (consumer key + secret)."""

    _block_type_name = "leadsync Salesforce"
    _description = "How leadsync signs in to Salesforce."

    instance_url: str | None = Field(
        default=None, description="e.g. https://acme.my.salesforce.com"
    )
    session_id: SecretStr | None = Field(default=None, description="an access token / session id")
    username: str | None = None
    password: SecretStr | None = None
    security_token: SecretStr | None = None
    consumer_key: str | None = Field(default=None, description="connected app client id")
    consumer_secret: SecretStr | None = None
    domain: str = Field(default="login", description="login, test, or your My Domain prefix")
    ca_bundle: str | None = Field(
        default=None, description="CA bundle to trust, if not the system's"
    )


class HubSpotCredentials(Block):
    """HubSpot: a private app access token."""

    _block_type_name = "leadsync HubSpot"
    _description = "How leadsync signs in to HubSpot."

    access_token: SecretStr = Field(description="private app access token (pat-...)")
    base_url: str = Field(default=HUBSPOT_API, description="API host, without a trailing slash")
    ca_bundle: str | None = Field(
        default=None, description="CA bundle to trust, if not the system's"
    )


def salesforce_credentials(
    block: str | None = None, environ: Mapping[str, str] = os.environ
) -> SalesforceCredentials:
    if block:
        return _load(SalesforceCredentials, block)
    ca_bundle = environ.get("LEADSYNC_CA_BUNDLE")
    from_env = {
        "instance_url": environ.get("SALESFORCE_INSTANCE_URL"),
        "session_id": environ.get("SALESFORCE_SESSION_ID"),
        "username": environ.get("SALESFORCE_USERNAME"),
        "password": environ.get("SALESFORCE_PASSWORD"),
        "security_token": environ.get("SALESFORCE_SECURITY_TOKEN"),
        "consumer_key": environ.get("SALESFORCE_CONSUMER_KEY"),
        "consumer_secret": environ.get("SALESFORCE_CONSUMER_SECRET"),
    }
    if any(environ.get(name) for name in CREDENTIAL_VARIABLES if name.startswith("SALESFORCE")):
        return SalesforceCredentials(
            **{key: value for key, value in from_env.items() if value},
            domain=environ.get("SALESFORCE_DOMAIN", "login"),
            ca_bundle=ca_bundle,
        )
    info = _sandbox_info(environ)
    return SalesforceCredentials(
        instance_url=info["salesforce"]["instance_url"],
        session_id=info["salesforce"]["session_id"],
        ca_bundle=info["ca_cert"],
    )


def hubspot_credentials(
    block: str | None = None, environ: Mapping[str, str] = os.environ
) -> HubSpotCredentials:
    if block:
        return _load(HubSpotCredentials, block)
    if environ.get("HUBSPOT_ACCESS_TOKEN"):
        return HubSpotCredentials(
            access_token=environ["HUBSPOT_ACCESS_TOKEN"],
            base_url=environ.get("HUBSPOT_BASE_URL", HUBSPOT_API).rstrip("/"),
            ca_bundle=environ.get("LEADSYNC_CA_BUNDLE"),
        )
    info = _sandbox_info(environ)
    return HubSpotCredentials(
        access_token=info["hubspot"]["access_token"],
        base_url=info["hubspot"]["base_url"],
        ca_bundle=info["ca_cert"],
    )


def _load(kind: type[BlockT], name: str) -> BlockT:
    try:
        return kind.load(name)
    except ValueError as error:  # Prefect's answer when no such block document exists
        raise CredentialsMissing(
            f"No {kind.get_block_type_name()} block named {name!r} on this Prefect server "
            f"({error}); create it in the UI (Blocks) or correct the credentials_block parameter."
        ) from None


def _sandbox_info(environ: Mapping[str, str]) -> dict:
    path = Path(environ.get("LEADSYNC_SANDBOX_INFO") or DEFAULT_SANDBOX_INFO)
    if not path.exists():
        raise CredentialsMissing(
            "No CRM credentials: give a Prefect block name, set SALESFORCE_* / HUBSPOT_* "
            f"environment variables, or start the sandbox (python -m sandbox serve) so that {path} "
            "exists (LEADSYNC_SANDBOX_INFO names another info file)."
        )
    return json.loads(path.read_text())
