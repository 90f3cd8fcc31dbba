"""Salesforce through simple-salesforce: pages of 2,000 leads, composite updates of 200."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from pathlib import Path

import pandas as pd
import requests
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceOperationError,
    SalesforceRefusedRequest,
)

from connectors.base import (
    ApiUsage,
    AuthenticationFailed,
    CallCounter,
    CallKind,
    ConnectorError,
    DailyLimitReached,
    FieldsNotAccessible,
    MissingFields,
    write_in_batches,
)
from connectors.budget import BudgetStore, account_key, cap_session, store_url
from connectors.credentials import SalesforceCredentials, salesforce_credentials
from connectors.mapping import FieldMapping, load_mapping
from connectors.paging import linked_pages
from connectors.retry import RetryPolicy, Transient, call_with_retries
from connectors.salesforce import bulk, records, setup, signin
from connectors.settings import ConnectorSettings

DEFAULT_MAPPING = Path(__file__).with_name("mapping.yaml")
PAGE_SIZE = 2_000
COLLECTION_SIZE = 200
BULK_PAGE = 20_000  # leads per Bulk API 2.0 results page: a chunk, bounded for memory
IDS_PER_QUERY = 400  # keeps a query's URL well under the REST API's 16,384-byte limit
TRANSIENT_STATUSES = {429, 500, 502, 503, 504}
# How long a call holds its place under the org's cap on calls in flight unless it returns it:
# longer than any call lasts, so only a holder that died keeps a place that long.
LEASE_SECONDS = 600.0
log = logging.getLogger(__name__)


class TimeoutAdapter(HTTPAdapter):
    """Gives every request sent without a timeout this (connect, read) one: simple-salesforce
    passes none, in its REST, login and Bulk API 2.0 calls alike, and requests has no
    session-wide setting."""

    def __init__(self, timeout: tuple[float, float], **kwargs):
        self.timeout = timeout
        super().__init__(**kwargs)

    def send(self, request, timeout=None, **kwargs):
        return super().send(request, timeout=self.timeout if timeout is None else timeout, **kwargs)


def connect(
    credentials: SalesforceCredentials, settings: ConnectorSettings | None = None
) -> Salesforce:
    """A signed-in client; TLS verification stays on (with the given CA bundle, if any), and
    every call is bounded by the settings' connect and read timeouts."""
    session = requests.Session()
    adapter = TimeoutAdapter((settings or ConnectorSettings()).timeout("salesforce"))
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if credentials.ca_bundle:
        session.verify = credentials.ca_bundle
        session.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment would override it
    if credentials.sandbox_url:
        signin.route_to_sandbox(session, credentials.sandbox_url)
    return signin.sign_in(credentials.sign_in(), session)


def org_account(client: Salesforce) -> str:
    """The budget's name for the org: its instance (hashed; whoever signs in)."""
    return "salesforce:" + account_key(client.sf_instance)


class SalesforceConnector:
    source = "salesforce"
    page_size = PAGE_SIZE
    write_batch_size = COLLECTION_SIZE

    def __init__(
        self,
        client: Salesforce,
        mapping: FieldMapping | None = None,
        retry: RetryPolicy = RetryPolicy(),
        settings: ConnectorSettings | None = None,
        budget: BudgetStore | None = None,
        renew: Callable[[], Salesforce] | None = None,
    ):
        """`budget`: where the org's cap on calls in flight is shared with every other run;
        without one, only this connector's own concurrency bounds its calls. `renew`: signs in
        again (`signin.renewal`) when Salesforce refuses the session; a call it refused is then
        retried once."""
        self.client = client
        self._renew, self._renewing = renew, threading.Lock()
        self._user_id, self._org_id = "", ""
        self._identifying = threading.Lock()
        self.mapping = mapping or load_mapping(DEFAULT_MAPPING)
        self.retry = retry
        self.settings = settings or ConnectorSettings()
        self._calls = CallCounter()
        # Every HTTP call goes through the client's session, the bulk ones included.
        client.session.hooks["response"].append(self._count)
        if budget is not None:
            limit = self.settings.salesforce_calls_in_flight
            cap_session(client.session, budget.cap(org_account(client), limit, LEASE_SECONDS))

    @classmethod
    def from_settings(
        cls,
        block: str | None = None,
        mapping_path: str | Path | None = None,
        retry: RetryPolicy = RetryPolicy(),
        settings: ConnectorSettings | None = None,
    ) -> SalesforceConnector:
        mapping = load_mapping(mapping_path) if mapping_path else None
        settings = settings or ConnectorSettings()
        credentials = salesforce_credentials(block)
        client = connect(credentials, settings)
        budget = BudgetStore.at(store_url(settings.budget_url))
        renew = signin.renewal(credentials.sign_in(), client.session)
        return cls(client, mapping, retry, settings, budget, renew)

    def check_fields(self) -> None:
        """Raise MissingFields for mapped fields the org lacks, and FieldsNotAccessible for
        those field-level security keeps the integration user from reading (or, if written,
        editing): describe leaves out a field the user cannot read, so absent fields are looked
        up among the object's custom fields (Tooling API) to tell which."""
        describe = self._call(lambda: getattr(self.client, self.mapping.object).describe())
        fields = {field["name"]: field for field in describe["fields"]}
        absent = self.mapping.missing_from(set(fields))
        existing = (
            setup.existing_custom_fields(self.client, self.mapping.object, self._call)
            if absent
            else set()
        )
        missing = [field for field in absent if field not in existing]
        if missing:
            raise MissingFields(
                self.source,
                missing,
                f"Create them with `{setup.SETUP_COMMAND}` (leadsync's own fields) or in Setup > "
                f"Object Manager > {self.mapping.object} > Fields & Relationships (see README, "
                "'Pointing leadsync at real CRMs'), or map other fields in the field mapping file.",
            )
        uneditable = [
            field
            for field in self.mapping.write.values()
            if field in fields and not fields[field]["updateable"]
        ]
        problems = setup.access_problems(
            self.mapping.object, [field for field in absent if field in existing], uneditable
        )
        if problems:
            raise FieldsNotAccessible(problems)

    def set_up(self, dry_run: bool = False) -> list[str]:
        """Create the custom fields and the permission set leadsync needs (connectors.salesforce
        .setup); returns what was, or in a dry run would be, changed."""
        return setup.OrgSetup(self.client, self.mapping, self._call, dry_run).run()

    def identity(self) -> tuple[str, str]:
        """The signed-in (integration) user's id and the org's id, through the REST API with
        the `api` scope alone: Chatter's current user (as setup reads it) and SOQL on
        Organization. Asked once per connector."""
        user = self.user_id()
        with self._identifying:
            if not self._org_id:
                org = self._call(lambda: self.client.query("SELECT Id FROM Organization"))
                self._org_id = org["records"][0]["Id"]
        return user, self._org_id

    def user_id(self) -> str:
        """The signed-in (integration) user's id: Chatter's current user, asked once."""
        with self._identifying:
            if not self._user_id:
                self._user_id = self._call(lambda: self.client.restful("chatter/users/me"))["id"]
        return self._user_id

    def read_modified(
        self, since: datetime, until: datetime, skip_own_writes: bool = False
    ) -> Iterator[pd.DataFrame]:
        """Leads modified in [since, until); with `skip_own_writes` (and
        LEADSYNC_SALESFORCE_SKIP_OWN_WRITES, on by default) not those the integration user
        wrote last (LastModifiedById). A person's edit racing a write is covered as README
        ("Syncs at scale") explains."""
        skipping = skip_own_writes and self.settings.salesforce_skip_own_writes
        not_by = self.user_id() if skipping else None
        return self._pages(records.select_modified(self.mapping, since, until, not_by=not_by))

    def read_all(self) -> Iterator[pd.DataFrame]:
        return (page for page, _ in self.read_all_from(None))

    def read_all_from(self, position: str | None) -> Iterator[tuple[pd.DataFrame, str]]:
        """Every lead in id order (after the lead `position`, when given): through a Bulk API
        2.0 query job when there are at least the bulk threshold of them (a handful of calls
        instead of one per 2,000), else REST pages. Each page comes with its last lead's id,
        where a later read resumes."""
        soql = records.select_all(self.mapping, position)
        if self.settings.salesforce_bulk and self._reaches_bulk(self._lead_count()):
            pages = self._bulk_pages(soql)
        else:
            pages = self._pages(soql)
        return ((page, page["crm_id"].iloc[-1]) for page in pages if len(page))

    def read_stale(
        self, qualified_before: datetime, cold_before: datetime | None = None
    ) -> Iterator[pd.DataFrame]:
        return self._pages(records.select_stale(self.mapping, qualified_before, cold_before))

    def read_by_ids(self, crm_ids: Sequence[str]) -> pd.DataFrame:
        ids = list(dict.fromkeys(crm_ids))
        frames = [
            frame
            for start in range(0, len(ids), IDS_PER_QUERY)
            for frame in self._pages(
                records.select_by_ids(self.mapping, ids[start : start + IDS_PER_QUERY])
            )
        ]
        return (
            pd.concat(frames, ignore_index=True) if frames else records.to_frame([], self.mapping)
        )

    def write(
        self, updates: pd.DataFrame, on_batch: Callable[[pd.DataFrame], None] | None = None
    ) -> pd.DataFrame:
        if self.settings.salesforce_bulk and self._reaches_bulk(len(updates)):
            # one ingest job, as one batch: a job that fails as a whole fails every record
            return write_in_batches(
                updates,
                len(updates),
                lambda job: self._call(
                    lambda: bulk.update(
                        self.client,
                        job,
                        self.mapping,
                        job_timeout=self.settings.bulk_job_timeout_seconds,
                    )
                ),
                (SalesforceError, SalesforceOperationError, Transient),
                failure_prefix="Bulk API job failed",
                on_batch=on_batch,
            )
        return write_in_batches(
            updates,
            COLLECTION_SIZE,
            self._send,
            (Transient, SalesforceError),
            concurrency=self.settings.writes_in_flight("salesforce"),
            on_batch=on_batch,
        )

    def _send(self, batch: pd.DataFrame) -> list[str | None]:
        collection = records.to_records(batch, self.mapping)
        results = self._call(
            lambda: self.client.restful(
                "composite/sobjects",
                method="PATCH",
                json={"allOrNone": False, "records": collection},
            )
        )
        # Results come in input order; failed ones may carry no id, so match by position.
        return [
            None if result.get("success") else _describe_errors(result.get("errors"))
            for result in results
        ]

    def usage(self) -> ApiUsage:
        usage = (self.client.api_usage or {}).get("api-usage")
        limit = getattr(usage, "total", None)
        remaining = limit - usage.used if usage is not None else None
        return self._calls.usage(remaining, limit)

    def record_url(self, crm_id: str) -> str:
        """The record's Lightning page (on My Domain it redirects to lightning.force.com)."""
        return f"https://{self.client.sf_instance}/lightning/r/{self.mapping.object}/{crm_id}/view"

    def _reaches_bulk(self, leads: int) -> bool:
        return leads >= self.settings.salesforce_bulk_threshold

    def _lead_count(self) -> int:
        soql = records.select_count(self.mapping)
        return int(self._call(lambda: self.client.query(soql))["totalSize"])

    def _bulk_pages(self, soql: str) -> Iterator[pd.DataFrame]:
        try:
            yield from bulk.query_frames(
                self.client,
                soql,
                self.mapping,
                BULK_PAGE,
                job_timeout=self.settings.bulk_job_timeout_seconds,
            )
        except ConnectorError:
            raise
        except Exception as error:  # noqa: BLE001 - sorted as every other call's failure
            raise _fatal(classify(error)) from error

    def _pages(self, soql: str) -> Iterator[pd.DataFrame]:
        pages = linked_pages(
            lambda: self._call(lambda: self.client.query(soql)),
            lambda next_url: self._call(
                lambda: self.client.query_more(next_url, identifier_is_url=True)
            ),
        )
        for page in pages:
            yield records.to_frame(page["records"], self.mapping)

    def _call(self, request):
        return call_with_retries(
            lambda: self._with_session(request), classify, self.retry, on_retry=_log_retry
        )

    def _with_session(self, request):
        """`request()`; if Salesforce refuses the session, sign in again and retry it once."""
        client = self.client
        try:
            return request()
        except SalesforceExpiredSession:
            if not self.renew_session(client):
                raise
            return request()

    def renew_session(self, refused: Salesforce) -> bool:
        """Sign in again because Salesforce refused the session of the client `refused` (unless
        another call renewed it meanwhile); False if the sign-in mode cannot (a session given
        as it is)."""
        if self._renew is None:
            return False
        with self._renewing:
            if self.client is refused:
                log.info("Salesforce session expired; signing in again")
                self.client = self._renew()
        return True

    def _count(self, response: requests.Response, *args, **kwargs) -> None:
        if signin.is_sign_in(response.request.path_url):
            return  # a sign-in is not an API call
        self._calls.add(call_kind(response.request.method or "GET", response.request.path_url))


def call_kind(method: str, path: str) -> CallKind:
    """What a Salesforce call was for, from its method and path: describe, limits and who the
    connector is signed in as read no lead."""
    path = path.split("?")[0]
    if path.endswith(("/describe", "/limits", "/chatter/users/me")):
        return "metadata"
    if "/jobs/ingest" in path:
        return "write"
    if method in ("GET", "HEAD") or "/jobs/query" in path:
        return "read"
    return "write"


def classify(error: Exception) -> Exception:
    """Sort simple-salesforce's failures: transient ones are retried, the rest stop the run."""
    if isinstance(error, SalesforceAuthenticationFailed):  # its own sign-in again, mid-run
        return AuthenticationFailed(
            f"Salesforce refused the sign-in again: {error.code}: {error.auth_message}"
        )
    if isinstance(error, SalesforceExpiredSession):
        return AuthenticationFailed(
            "Salesforce refused the session: it expired or is invalid. "
            "Sign in again or update the credentials."
        )
    if isinstance(error, SalesforceRefusedRequest) and "REQUEST_LIMIT_EXCEEDED" in str(
        error.content
    ):
        return DailyLimitReached(
            "Salesforce's daily API request limit is spent; the run stops "
            "and the next run after the limit resets picks up from here."
        )
    if isinstance(error, SalesforceGeneralError) and error.status in TRANSIENT_STATUSES:
        return Transient(f"Salesforce answered {error.status}")
    if isinstance(error, requests.exceptions.SSLError):
        return ConnectorError(
            "TLS verification of Salesforce failed: check the CA bundle "
            "(LEADSYNC_CA_BUNDLE or the credentials' ca_bundle)."
        )
    if isinstance(error, requests.Timeout):
        return Transient(f"Salesforce did not answer in time: {type(error).__name__}")
    if isinstance(error, requests.ConnectionError):
        return Transient(f"connection to Salesforce failed: {type(error).__name__}")
    return error


def _fatal(error: Exception) -> Exception:
    """A bulk job cannot be resumed part way: a failure worth retrying stops the read."""
    if isinstance(error, Transient):
        return ConnectorError(f"Bulk API query job failed ({error}); rerun the backfill")
    return error


def _describe_errors(errors: list[dict] | None) -> str:
    if not errors:
        return "failed without an error message"
    return "; ".join(f"{e.get('statusCode')}: {e.get('message')}" for e in errors)[:500]


def _log_retry(error: Transient, attempt: int) -> None:
    log.warning("Salesforce call failed (%s), retrying (attempt %d)", error, attempt)
