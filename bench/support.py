"""What the end-to-end benches share: sandbox CRMs in their own process (served, or run in a
manager process where a person edits leads), flow runs measured for wall time and peak RSS,
counted retries, seconds of overlapping work, and the machine the figures come from."""

from __future__ import annotations

import logging
import multiprocessing
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import psutil

if TYPE_CHECKING:
    from sandbox.run import SandboxConfig

QUIET = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_LOGGING_LEVEL": "WARNING",
}


def scratch_directory(name: str) -> Path:
    """A fresh folder for one bench's sandbox data, ledger and Prefect state; nothing phones
    home."""
    scratch = Path(tempfile.mkdtemp(prefix=f"leadsync-bench-{name}-"))
    os.environ.update({**QUIET, "PREFECT_HOME": str(scratch / "prefect")})
    return scratch


def point_at(info: Path, ledger: Path) -> None:
    """Point the connectors at a sandbox and the flows at a ledger file."""
    os.environ["LEADSYNC_SANDBOX_INFO"] = str(info)
    os.environ["LEADSYNC_LEDGER_URL"] = f"sqlite:///{ledger}"


def page_and_batch(source: str) -> tuple[int, int]:
    """The largest read page and write batch of a CRM's connector: the units of the minimum
    call counts. Imported here, late: Prefect reads its settings (PREFECT_HOME) on import."""
    from connectors.hubspot import HubSpotConnector
    from connectors.salesforce import SalesforceConnector

    connector = {"salesforce": SalesforceConnector, "hubspot": HubSpotConnector}[source]
    return connector.page_size, connector.write_batch_size


def busy_seconds(spans: Sequence[tuple[float, float]], at_least: int = 1) -> float:
    """Seconds in which at least `at_least` of the (start, end) `spans` were under way."""
    if not spans:
        return 0.0
    starts, ends = zip(*spans, strict=True)
    events = pd.DataFrame(
        {"at": [*starts, *ends], "change": [1] * len(starts) + [-1] * len(ends)}
    ).sort_values(["at", "change"], kind="stable")
    under_way = events["change"].cumsum()
    lasting = events["at"].diff().shift(-1)
    return float(lasting[under_way >= at_least].sum())


def machine() -> dict[str, object]:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


@contextmanager
def sandbox_process(directory: Path, leads: int, *options: str) -> Iterator[Path]:
    """`python -m sandbox serve` in its own process (its CPU and memory are not the job's),
    seeded with `leads` per CRM; yields its info file."""
    info = directory / "info.json"
    command = [
        sys.executable, "-m", "sandbox", "serve", "--data-dir", str(directory),
        "--leads", str(leads), *options,
    ]  # fmt: skip
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, env={**os.environ, **QUIET})
    try:
        while not info.exists():
            if server.poll() is not None:
                raise RuntimeError(f"the sandbox exited with {server.returncode}")
            time.sleep(0.2)
        yield info
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


class PersonAtTheCrms:
    """Both sandbox CRMs, run in a manager process, and a person editing leads there as in
    the CRM's UI (another user than leadsync's, so a sync sees a change someone else made)."""

    def __init__(self, config: SandboxConfig):
        from sandbox.run import Sandbox

        self.sandbox = Sandbox(config).start()
        self.sandbox.write_info(Path(config.data_dir) / "info.json")

    def edit(self, source: str, edits: dict[str, dict]) -> None:
        """Every edit (fields by lead id): HubSpot's bulk edit, as an import makes; Salesforce
        one by one, its sandbox having no bulk edit."""
        if source == "hubspot":
            self.sandbox.hubspot.edit_many_as_person(edits)
            return
        for crm_id, fields in edits.items():
            self.sandbox.salesforce.edit_as_person(crm_id, fields)

    def responses_429(self, source: str = "hubspot") -> int:
        """The 429s the CRM's budgets answered so far (Salesforce's sandbox answers none)."""
        return getattr(self.sandbox, source).rate_limited_responses

    def stop(self) -> None:
        self.sandbox.stop()


class _CrmManager(BaseManager):
    pass


_CrmManager.register("PersonAtTheCrms", PersonAtTheCrms)


@contextmanager
def crms_with_a_person(
    directory: Path, leads: int, latency_seconds: float, **options: object
) -> Iterator[tuple[PersonAtTheCrms, Path]]:
    """Both sandbox CRMs, seeded with `leads` each and every call delayed by
    `latency_seconds` (`options`: more of SandboxConfig), in a process of their own; yields a
    handle on them there and their info file."""
    from sandbox.http import FaultPlan
    from sandbox.run import SandboxConfig

    faults = FaultPlan(latency_seconds=latency_seconds)
    config = SandboxConfig(leads=leads, data_dir=directory, faults=faults, **options)
    with _CrmManager(ctx=multiprocessing.get_context("spawn")) as manager:
        crms = manager.PersonAtTheCrms(config)
        try:
            yield crms, directory / "info.json"
        finally:
            crms.stop()


@contextmanager
def prefect_server() -> Iterator[None]:
    """A local Prefect API server, started once, so no measured run pays for starting one."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = SubprocessASGIServer()
    server.start(timeout=120)
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield
    finally:
        server.stop()


@dataclass(frozen=True)
class Measured:
    result: object
    wall_s: float
    peak_rss_mib: float


def measure(run, *args, **kwargs) -> Measured:
    """Call `run`, sampling this process's RSS every 20 ms for the peak."""
    process, peak, done = psutil.Process(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        result = run(*args, **kwargs)
    finally:
        wall = time.perf_counter() - started
        done.set()
        sampler.join()
    return Measured(result, wall, peak[0] / 2**20)


class RetryCount(logging.Handler):
    """Counts the connectors' retries, by what the CRM answered (e.g. 'HubSpot answered 429')."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reasons: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if "retrying" in record.getMessage() and record.args:
            self.reasons[str(record.args[0])] += 1

    @contextmanager
    def attached(self) -> Iterator[RetryCount]:
        logger = logging.getLogger("connectors")
        logger.addHandler(self)
        try:
            yield self
        finally:
            logger.removeHandler(self)


def report_of(state):
    """The run's RunReport, or a clear stop when the run ended without one."""
    report = state.result(raise_on_failure=False)
    if not hasattr(report, "usage"):
        raise SystemExit(f"the run ended {state.type.value}: {state.message}")
    return report


def measured_sync(source: str, **parameters) -> tuple[Measured, object, Counter[str]]:
    """One sync of `source`, measured: the measurement, the run's report, and its retries by
    what the CRM answered."""
    from flows.jobs import sync_leads

    with RetryCount().attached() as retries:
        run = measure(sync_leads, source=source, return_state=True, **parameters)
    return run, report_of(run.result), retries.reasons
