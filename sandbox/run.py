"""Start both sandbox CRMs together: storage, seed data, TLS, credentials, and the info file
that tells clients how to connect."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sandbox.http import CertificateAuthority, FaultPlan, Faults, SandboxServer
from sandbox.hubspot import HubSpotApi, HubSpotSettings
from sandbox.salesforce import SalesforceApi, SalesforceSettings
from sandbox.salesforce.oauth import ConnectedAppKeys
from sandbox.salesforce.pubsub import PubSubServer
from sandbox.seed import LeadMix, generate_leads
from sandbox.store import Database


@dataclass(frozen=True)
class SandboxConfig:
    leads: int = 1_000  # per CRM, seeded on first start only
    seed: int = 0
    seeded_at: datetime | None = None  # the data's "now" (default: the start); with `seed`,
    # it reproduces the same leads
    data_dir: Path | None = None  # None: in memory, gone when stopped
    salesforce_port: int = 0  # 0: any free port
    hubspot_port: int = 0
    salesforce_pubsub_port: int = 0  # the Pub/Sub API (gRPC)
    faults: FaultPlan = field(default_factory=FaultPlan)
    mix: LeadMix = field(default_factory=LeadMix)
    salesforce: SalesforceSettings = field(default_factory=SalesforceSettings)
    hubspot: HubSpotSettings = field(default_factory=HubSpotSettings)


class Sandbox:
    """Both CRMs, running. Use as a context manager, or `start()` and `stop()`."""

    def __init__(self, config: SandboxConfig = SandboxConfig()):
        self.config = config
        self._scratch = None
        if config.data_dir is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="leadsync-sandbox-")
            directory = Path(self._scratch.name)
        else:
            directory = Path(config.data_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.ca = CertificateAuthority(directory)
        tokens = _tokens(directory if config.data_dir else None)
        self.salesforce_faults = Faults(config.faults)
        self.hubspot_faults = Faults(replace(config.faults, seed=config.faults.seed + 1))
        self._databases = []
        self.connected_app = ConnectedAppKeys(directory)
        self.salesforce = SalesforceApi(
            self._database("salesforce.sqlite3"),
            self.salesforce_faults,
            replace(
                config.salesforce,
                session_id=tokens["salesforce"],
                refresh_token=tokens["salesforce_refresh"],
                connected_app_cert=self.connected_app.cert_path,
            ),
        )
        self.hubspot = HubSpotApi(
            self._database("hubspot.sqlite3"),
            self.hubspot_faults,
            replace(
                config.hubspot,
                access_token=tokens["hubspot"],
                refresh_token=tokens["hubspot_refresh"],
                developer_api_key=tokens["hubspot_developer"],
            ),
        )
        self._seed_empty()
        self._servers = [
            SandboxServer(self.salesforce, self.ca, self.salesforce_faults, config.salesforce_port),
            SandboxServer(self.hubspot, self.ca, self.hubspot_faults, config.hubspot_port),
        ]
        self.salesforce.base_url = self._servers[0].base_url
        self.salesforce_pubsub = PubSubServer(
            self.salesforce, self.ca, config.salesforce_pubsub_port
        )
        self.hubspot.base_url = self._servers[1].base_url

    @property
    def salesforce_server(self) -> SandboxServer:
        return self._servers[0]

    @property
    def hubspot_server(self) -> SandboxServer:
        return self._servers[1]

    def start(self) -> Sandbox:
        for server in self._servers:
            server.start()
        self.salesforce_pubsub.start()
        self.hubspot.webhooks.delivery.start()
        return self

    def stop(self) -> None:
        self.salesforce_pubsub.stop()
        self.hubspot.webhooks.delivery.stop()
        for server in self._servers:
            server.stop()
        for database in self._databases:
            database.close()
        if self._scratch is not None:
            self._scratch.cleanup()

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def info(self) -> dict[str, Any]:
        """How to connect, in the shape of the info file."""
        return {
            "salesforce": {
                "instance_url": self.salesforce.base_url,
                "session_id": self.salesforce.settings.session_id,
                "token_url": f"{self.salesforce.base_url}/services/oauth2/token",
                "client_id": self.salesforce.settings.client_id,
                "client_secret": self.salesforce.settings.client_secret,
                "username": self.salesforce.settings.username,
                "password": self.salesforce.settings.password,
                "security_token": self.salesforce.settings.security_token,
                "private_key_file": str(self.connected_app.key_path),
                "refresh_token": self.salesforce.settings.refresh_token,
                "pubsub_endpoint": self.salesforce_pubsub.endpoint,
            },
            "hubspot": {
                "base_url": self.hubspot.base_url,
                "access_token": self.hubspot.settings.access_token,
                "client_id": self.hubspot.settings.client_id,
                "client_secret": self.hubspot.settings.client_secret,
                "refresh_token": self.hubspot.settings.refresh_token,
                "app_id": self.hubspot.settings.app_id,
                "developer_api_key": self.hubspot.settings.developer_api_key,
            },
            "ca_cert": str(self.ca.cert_path),
        }

    def write_info(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_secret(path, json.dumps(self.info, indent=2) + "\n")

    def _database(self, filename: str) -> Database:
        database = Database(self.directory / filename if self.config.data_dir else None)
        self._databases.append(database)
        return database

    def _seed_empty(self) -> None:
        config = self.config
        if config.leads and self.salesforce.lead_count() == 0:
            self.salesforce.seed(
                generate_leads(config.leads, seed=config.seed, now=config.seeded_at, mix=config.mix)
            )
        if config.leads and self.hubspot.contact_count() == 0:
            self.hubspot.seed(
                generate_leads(
                    config.leads, seed=config.seed + 1, now=config.seeded_at, mix=config.mix
                )
            )


def _tokens(directory: Path | None) -> dict[str, str]:
    """Fresh tokens per start in memory; in a data dir, the same tokens across restarts (a
    tokens file from before a kind of token existed gets that kind added)."""
    path = directory / "tokens.json" if directory else None
    kept = json.loads(path.read_text()) if path is not None and path.exists() else {}
    fresh = {
        "salesforce": "00Dsandbox!" + secrets.token_urlsafe(24),
        "salesforce_refresh": "5Aep861sandbox" + secrets.token_urlsafe(32),
        "hubspot": "pat-sandbox-" + secrets.token_urlsafe(24),
        "hubspot_refresh": "na1-sandbox-" + secrets.token_urlsafe(24),
        "hubspot_developer": "dev-sandbox-" + secrets.token_urlsafe(24),
    }
    tokens = {**fresh, **kept}
    if path is not None and tokens != kept:
        _write_secret(path, json.dumps(tokens))
    return tokens


def _write_secret(path: Path, text: str) -> None:
    """Only its owner can read it, and readers see the whole file or none (clients wait for the
    info file to appear)."""
    partial = path.with_name(path.name + ".partial")
    partial.touch(mode=0o600)
    partial.write_text(text)
    os.replace(partial, path)
