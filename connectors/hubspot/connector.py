"""HubSpot through hubspot-api-client: search pages of 200, batches of 100.

HubSpot search reaches at most 10,000 results per query, and paging by offset over a search
whose matches change under it (every write moves a lead's modification time) skips leads. So
search reads page by key, in id order: one cursor up from the lowest id, one down from the
highest, each request asking only for ids between what the two have read so far.
Calls are paced under the portal's per-10-second and per-second search budgets.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
import urllib3
from hubspot import HubSpot
from hubspot.crm.contacts.exceptions import ApiException as ContactsApiException
from hubspot.crm.properties.exceptions import ApiException as PropertiesApiException

from connectors.base import (
    ApiUsage,
    AuthenticationFailed,
    CallCounter,
    CallKind,
    ConnectorError,
    DailyLimitReached,
    MissingFields,
    write_in_batches,
)
from connectors.budget import BudgetStore, account_key, store_url
from connectors.credentials import HUBSPOT_API, HubSpotCredentials, hubspot_credentials
from connectors.hubspot import records, signin
from connectors.hubspot.properties import CUSTOM_PROPERTIES
from connectors.mapping import FieldMapping, load_mapping
from connectors.pacing import Pacer
from connectors.paging import Bounds, keyset_pages
from connectors.retry import RetryPolicy, Transient, call_with_retries
from connectors.settings import ConnectorSettings

DEFAULT_MAPPING = Path(__file__).with_name("mapping.yaml")
SEARCH_PAGE, BATCH_SIZE = 200, 100
ID_PROPERTY = "hs_object_id"
API_ERRORS = (ContactsApiException, PropertiesApiException)  # each API package has its own
# A little longer than HubSpot's windows: its clock starts when a request arrives, and two
# searches in flight may arrive out of step; a share of a one-second window needs more slack
# (0.05 s met one 429 in the 500 searches of a 100,000-contact sync whose writes kept the
# interpreter busy; 0.02 s, two in 100 searches).
WINDOW_MARGIN_SECONDS, SEARCH_WINDOW_MARGIN_SECONDS = 0.05, 0.1
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HubSpotLimits:
    """The portal's request budgets (defaults, from ConnectorSettings: Professional and
    Enterprise, 190 per 10 s and 5 searches per second)."""

    per_ten_seconds: int
    search_per_second: int

    @classmethod
    def from_settings(cls, settings: ConnectorSettings) -> HubSpotLimits:
        return cls(settings.hubspot_requests_per_ten_seconds, settings.hubspot_searches_per_second)


def connect(credentials: HubSpotCredentials, tokens: signin.OAuthTokens | None = None) -> HubSpot:
    """A client for the portal; retries are ours (connectors.retry), so urllib3's are off. With
    OAuth (`tokens`), every API client it builds follows the refreshed access token."""
    common = {"host": credentials.base_url.rstrip("/"), "ssl_ca_cert": credentials.ca_bundle}
    if tokens is None:
        token = credentials.access_token.get_secret_value()
        return HubSpot(access_token=token, retry=False, **common)
    return HubSpot(
        access_token=tokens.current(), api_factory=tokens.api_factory, retry=False, **common
    )


def portal_account(credentials: HubSpotCredentials) -> str:
    """The budget's name for the portal and app: HubSpot counts its limits per app in a
    portal, and the token (or an OAuth install's refresh token) names both (hashed, never
    stored)."""
    token = credentials.access_token or credentials.refresh_token
    return "hubspot:" + account_key(credentials.base_url.rstrip("/"), token.get_secret_value())


class HubSpotConnector:
    source = "hubspot"
    page_size = SEARCH_PAGE
    write_batch_size = BATCH_SIZE

    def __init__(
        self,
        client: HubSpot,
        mapping: FieldMapping | None = None,
        limits: HubSpotLimits | None = None,
        retry: RetryPolicy = RetryPolicy(),
        write_concurrency: int = 1,
        timeout: tuple[float, float] | None = None,
        budget: BudgetStore | None = None,
        account: str = "",
        tokens: signin.OAuthTokens | None = None,
        portal_id: int | None = None,
    ):
        """`budget`: where the portal's budgets are shared with every other run on `account`
        (`portal_account`); without one, this connector paces only its own calls. `portal_id`:
        the portal's Hub ID, for links to contacts (`record_url`)."""
        limits = limits or HubSpotLimits.from_settings(ConnectorSettings())
        self._tokens = tokens  # OAuth: refreshed on expiry or a 401 (None: a private app)
        self.client, self.portal_id = client, portal_id
        # Each attribute access of the client builds a new API client with its own connection
        # pool, so a new TLS handshake per call: the APIs are taken once and kept.
        self._contacts = client.crm.contacts.batch_api
        self._search_api = client.crm.contacts.search_api
        self._properties_api = client.crm.properties.core_api
        self.mapping = mapping or load_mapping(DEFAULT_MAPPING)
        self.retry, self.write_concurrency = retry, write_concurrency
        # (connect, read) seconds, passed with every call: the generated client sends urllib3
        # an explicit "no timeout" unless a call gives `_request_timeout`.
        self._timeout = timeout or ConnectorSettings().timeout("hubspot")
        windows = {
            "requests": (limits.per_ten_seconds, 10.0 + WINDOW_MARGIN_SECONDS),
            "searches": (limits.search_per_second, 1.0 + SEARCH_WINDOW_MARGIN_SECONDS),
        }
        self._pace, self._pace_search = (
            budget.window(f"{account}:{name}", *window) if budget else Pacer(*window)
            for name, window in windows.items()
        )
        self._calls = CallCounter()
        self._daily: tuple[int, int] | None = None  # (remaining, limit) from the last response

    @classmethod
    def from_settings(
        cls,
        block: str | None = None,
        mapping_path: str | Path | None = None,
        settings: ConnectorSettings | None = None,
    ) -> HubSpotConnector:
        settings = settings or ConnectorSettings()
        mapping = load_mapping(mapping_path) if mapping_path else None
        credentials = hubspot_credentials(block)
        tokens = signin.oauth_tokens(credentials, settings.timeout("hubspot"))
        return cls(
            connect(credentials, tokens),
            mapping,
            HubSpotLimits.from_settings(settings),
            write_concurrency=settings.writes_in_flight("hubspot"),
            timeout=settings.timeout("hubspot"),
            budget=BudgetStore.at(store_url(settings.budget_url)),
            account=portal_account(credentials),
            tokens=tokens,
            portal_id=settings.hubspot_portal_id,
        )

    @property
    def _properties(self) -> list[str]:
        return [field for field in self.mapping.read.values() if field != ID_PROPERTY]

    def check_fields(self) -> None:
        missing = self._missing_properties()
        if missing:
            raise MissingFields(
                self.source,
                missing,
                "Create them with `python -m connectors setup --source hubspot` (or in "
                "Settings > Properties), or map other properties in the field mapping file.",
            )

    def set_up(self, dry_run: bool = False) -> list[str]:
        """Create the mapped leadsync custom properties the portal lacks (connectors.hubspot
        .properties defines them, options included), and add the options an existing one of
        them lacks (a status leadsync writes must be one of its options); returns what was, or
        in a dry run would be, changed."""
        existing = self._existing_properties()
        missing = self.mapping.missing_from(set(existing) | {ID_PROPERTY})
        unknown = [name for name in missing if name not in CUSTOM_PROPERTIES]
        if unknown:
            raise ConnectorError(
                f"no definition for {', '.join(unknown)}: create them in "
                "HubSpot (Settings > Properties) or map other properties"
            )
        short = {
            name: lacking
            for name, definition in existing.items()
            if (lacking := _options_lacking(definition, CUSTOM_PROPERTIES.get(name)))
        }
        if not dry_run:
            for name in missing:
                self._create_property(CUSTOM_PROPERTIES[name])
            for name, lacking in short.items():
                self._update_property(name, {"options": existing[name]["options"] + lacking})
        return [
            f"create contact property {name} ({CUSTOM_PROPERTIES[name]['type']})"
            for name in missing
        ] + [
            f"add option(s) {', '.join(o['value'] for o in lacking)} to contact property {name}"
            for name, lacking in short.items()
        ]

    def _update_property(self, name: str, changes: dict) -> None:
        self._call(
            lambda: self._properties_api.update(
                object_type=self.mapping.object,
                property_name=name,
                property_update=changes,
                _preload_content=False,
                _request_timeout=self._timeout,
            ),
            "metadata",
        )

    def _create_property(self, definition: dict) -> None:
        self._call(
            lambda: self._properties_api.create(
                object_type=self.mapping.object,
                property_create=definition,
                _preload_content=False,
                _request_timeout=self._timeout,
            ),
            "metadata",
        )

    def _missing_properties(self) -> list[str]:
        return self.mapping.missing_from(set(self._existing_properties()) | {ID_PROPERTY})

    def _existing_properties(self) -> dict[str, dict]:
        """The portal's contact properties, by name."""
        existing = self._call(
            lambda: self._properties_api.get_all(
                object_type=self.mapping.object,
                _preload_content=False,
                _request_timeout=self._timeout,
            ),
            "metadata",
        )
        return {prop["name"]: prop for prop in existing["results"]}

    def read_modified(
        self, since: datetime, until: datetime, skip_own_writes: bool = False
    ) -> Iterator[pd.DataFrame]:
        """Contacts modified in [since, until), leadsync's own writes included whatever
        `skip_own_writes` says: HubSpot's search can tell neither who made a change nor compare
        two properties (README, "Syncs at scale")."""
        stamp = self.mapping.modified_field
        window = [
            {"propertyName": stamp, "operator": "GTE", "value": records.epoch_millis(since)},
            {"propertyName": stamp, "operator": "LT", "value": records.epoch_millis(until)},
        ]
        return self._search_by_id([window])

    def read_stale(
        self, qualified_before: datetime, cold_before: datetime | None = None
    ) -> Iterator[pd.DataFrame]:
        read = self.mapping.read
        open_only = []
        if self.mapping.closed_statuses:
            open_only = [
                {
                    "propertyName": read["crm_status"],
                    "operator": "NOT_IN",
                    "values": list(self.mapping.closed_statuses),
                }
            ]
        qualified = read["qualified_at"]
        groups = [
            [
                {
                    "propertyName": qualified,
                    "operator": "LT",
                    "value": records.epoch_millis(qualified_before),
                },
                *open_only,
            ],
            [{"propertyName": qualified, "operator": "NOT_HAS_PROPERTY"}, *open_only],
        ]
        if cold_before is not None:
            is_qualified = {"propertyName": read["status"], "operator": "EQ", "value": "Qualified"}
            engaged = read["last_engaged_at"]
            groups += [
                [
                    is_qualified,
                    {
                        "propertyName": engaged,
                        "operator": "LT",
                        "value": records.epoch_millis(cold_before),
                    },
                    *open_only,
                ],
                [
                    is_qualified,
                    {"propertyName": engaged, "operator": "NOT_HAS_PROPERTY"},
                    *open_only,
                ],
            ]
        return self._search_by_id(groups)

    def read_all(self) -> Iterator[pd.DataFrame]:
        return (page for page, _ in self.read_all_from(None))

    def read_all_from(self, position: str | None) -> Iterator[tuple[pd.DataFrame, str]]:
        """Every contact: a search with no filter but the id keyset, 200 per call (the list
        endpoint gives 100), under the search budget rather than the one writes share. Each
        page comes with the id bounds read so far, where a later read resumes (`position`)."""
        start = tuple(json.loads(position)) if position else (None, None)
        for page, bounds in self._search_pages([[]], start):
            yield page, json.dumps(bounds)

    def read_by_ids(self, crm_ids: Sequence[str]) -> pd.DataFrame:
        ids = list(dict.fromkeys(str(crm_id) for crm_id in crm_ids))
        contacts: list[dict] = []  # made a frame once: its cost is mostly per frame, not per row
        for start in range(0, len(ids), BATCH_SIZE):
            body = {
                "inputs": [{"id": crm_id} for crm_id in ids[start : start + BATCH_SIZE]],
                "properties": self._properties,
            }
            page = self._call(
                lambda body=body: self._contacts.read(
                    batch_read_input_simple_public_object_id=body,
                    archived=False,
                    _preload_content=False,
                    _request_timeout=self._timeout,
                ),
                "read",
            )
            contacts.extend(page["results"])
        return records.to_frame(contacts, self.mapping)

    def write(
        self, updates: pd.DataFrame, on_batch: Callable[[pd.DataFrame], None] | None = None
    ) -> pd.DataFrame:
        return write_in_batches(
            updates,
            BATCH_SIZE,
            self._send,
            (Transient, *API_ERRORS, urllib3.exceptions.HTTPError),
            describe=_describe_failure,
            concurrency=self.write_concurrency,
            on_batch=on_batch,
        )

    def _send(self, batch: pd.DataFrame) -> list[str | None]:
        inputs = records.to_inputs(batch, self.mapping)
        response = self._call(
            lambda: self._contacts.update(
                batch_input_simple_public_object_batch_input={"inputs": inputs},
                _preload_content=False,
                _request_timeout=self._timeout,
            ),
            "write",
        )
        return _errors_by_id([item["id"] for item in inputs], response)

    def usage(self) -> ApiUsage:
        remaining, limit = self._daily if self._daily else (None, None)
        return self._calls.usage(remaining, limit)

    def record_url(self, crm_id: str) -> str:
        """The contact's page in HubSpot, which needs the portal's id (Hub ID); without one (the
        sandbox has no pages) the contact's API URL."""
        if self.portal_id is None:
            host = self.client.config.get("host") or HUBSPOT_API
            return f"{host}/crm/v3/objects/{self.mapping.object}/{crm_id}"
        return f"https://app.hubspot.com/contacts/{self.portal_id}/record/0-1/{crm_id}"

    def _search_by_id(self, groups: list[list[dict]]) -> Iterator[pd.DataFrame]:
        """Every match, read by id with two cursors at once (connectors.paging.keyset_pages).

        No request carries an offset: leads that a run writes meanwhile (and that leave the
        search, their modification time now past the window) shift nothing, and HubSpot's
        10,000-result cap on paging never applies.
        """
        return (page for page, _ in self._search_pages(groups))

    def _search_pages(
        self, groups: list[list[dict]], start: Bounds = (None, None)
    ) -> Iterator[tuple[pd.DataFrame, Bounds]]:
        pages = keyset_pages(
            lambda low, high, direction: self._search_page(groups, low, high, direction),
            SEARCH_PAGE,
            start=start,
        )
        for page, bounds in pages:
            yield records.to_frame(page, self.mapping), bounds

    def _search_page(
        self, groups: list[list[dict]], above: str | None, below: str | None, direction: str
    ) -> dict:
        bounds = [
            {"propertyName": ID_PROPERTY, "operator": operator, "value": value}
            for operator, value in (("GT", above), ("LT", below))
            if value is not None
        ]
        body = records.search_body(
            [records.filter_group(*group, *bounds) for group in groups if group or bounds],
            ID_PROPERTY,
            self._properties,
            SEARCH_PAGE,
            direction,
        )
        return self._call(lambda: self._search(body), "read")

    def _search(self, body: dict):
        self._pace_search.wait()
        return self._search_api.do_search(
            public_object_search_request=body,
            _preload_content=False,
            _request_timeout=self._timeout,
        )

    def _call(self, request, kind: CallKind):
        def paced():
            self._pace.wait()
            self._calls.add(kind)
            # Raw JSON, not the client's models: building those costs more than the call itself.
            response = self._authorized(request)
            self._remember_daily(response.headers)
            return json.loads(response.data) if response.data else {}

        return call_with_retries(paced, self._classify, self.retry, on_retry=_log_retry)

    def _authorized(self, request):
        """`request()` with a live OAuth access token; when HubSpot refuses it (401), one more
        time with a refreshed one."""
        if self._tokens is None:
            return request()
        token = self._tokens.current()
        try:
            return request()
        except API_ERRORS as error:
            if error.status != 401:
                raise
            self._tokens.refused(token)
            return request()

    def _remember_daily(self, headers) -> None:
        if headers and headers.get("X-HubSpot-RateLimit-Daily-Remaining") is not None:
            self._daily = (
                int(headers["X-HubSpot-RateLimit-Daily-Remaining"]),
                int(headers["X-HubSpot-RateLimit-Daily"]),
            )

    def _classify(self, error: Exception) -> Exception:
        if isinstance(error, API_ERRORS) and error.headers:
            self._remember_daily(error.headers)
        return classify(error)


def classify(error: Exception) -> Exception:
    """Sort hubspot-api-client's failures: transient ones are retried, the rest stop the run."""
    if isinstance(error, urllib3.exceptions.SSLError) or (
        isinstance(error, API_ERRORS) and error.status == 0 and "SSL" in str(error.reason)
    ):
        return ConnectorError(
            "TLS verification of HubSpot failed: check the CA bundle "
            "(LEADSYNC_CA_BUNDLE or the credentials' ca_bundle)."
        )
    if isinstance(error, API_ERRORS):
        if error.status == 401:
            return AuthenticationFailed(
                "HubSpot refused the access token (401): check the "
                "private app token and its scopes."
            )
        if error.status == 429:
            if _body(error).get("policyName") == "DAILY":
                return DailyLimitReached(
                    "HubSpot's daily API limit is spent; the run stops and "
                    "the next run after the limit resets picks up from here."
                )
            return Transient("HubSpot answered 429", _retry_after(error))
        if error.status >= 500 or error.status == 0:  # 0: the connection failed
            return Transient(f"HubSpot answered {error.status}")
    if isinstance(error, urllib3.exceptions.TimeoutError):
        return Transient(f"HubSpot did not answer in time: {type(error).__name__}")
    if isinstance(error, urllib3.exceptions.HTTPError):
        return Transient(f"connection to HubSpot failed: {type(error).__name__}")
    return error


def _body(error: ContactsApiException | PropertiesApiException) -> dict:
    try:
        body = json.loads(error.body or "{}")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _retry_after(error: ContactsApiException | PropertiesApiException) -> float | None:
    value = (error.headers or {}).get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _errors_by_id(ids: list[str], response: dict) -> list[str | None]:
    messages: dict[str, str] = {}
    for error in response.get("errors") or []:
        for failed in (error.get("context") or {}).get("ids", []):
            messages[str(failed)] = f"{error.get('category')}: {error.get('message')}"[:500]
    succeeded = {str(result["id"]) for result in response.get("results", [])}
    return [
        None if crm_id in succeeded else messages.get(crm_id, "not updated; no error given")
        for crm_id in ids
    ]


def _options_lacking(existing: dict, wanted: dict | None) -> list[dict]:
    """The options of leadsync's definition `wanted` that the portal's property lacks."""
    if not wanted or not wanted.get("options"):
        return []
    have = {option["value"] for option in existing.get("options") or []}
    return [
        {"label": option["label"], "value": option["value"]}
        for option in wanted["options"]
        if option["value"] not in have
    ]


def _describe_failure(error: Exception) -> str:
    if isinstance(error, API_ERRORS):
        return f"HubSpot answered {error.status}: {_body(error).get('message', '')}"
    return str(error)


def _log_retry(error: Transient, attempt: int) -> None:
    log.warning("HubSpot call failed (%s), retrying (attempt %d)", error, attempt)
