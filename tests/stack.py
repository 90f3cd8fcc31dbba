"""Real services for the operations tests, each a context manager that cleans up after itself:
Debian's PostgreSQL on loopback, a `prefect server` (on PostgreSQL, with an auth string), process
workers, a webhook receiver, and Debian's Chromium driven by Playwright.

A service that is not installed skips its tests, unless LEADSYNC_TESTS_REQUIRE_SERVICES=1
(set by .ci/run, which installs them), where it fails them instead.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from deployments.processes import healthy, stop

ROOT = Path(__file__).resolve().parent.parent
QUIET = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}
CHROMIUM_FLAGS = [  # no phoning home: this machine reaches only package registries
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require(available: bool, what: str) -> None:
    if available:
        return
    if os.environ.get("LEADSYNC_TESTS_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{what} is not installed (.ci/install-system-packages installs it)")
    pytest.skip(f"{what} is not installed (.ci/install-system-packages installs it)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(ready: Callable[[], bool], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        time.sleep(0.5)


@dataclass(frozen=True)
class Postgres:
    port: int

    def url(self, database: str, driver: str = "psycopg") -> str:
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> None:
        import psycopg

        dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')


@contextmanager
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster on a free loopback port, trusting local connections.
    As root it runs as Debian's `postgres` user (PostgreSQL refuses to run as root)."""
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb")]
    require(initdb[-1] is not None, "PostgreSQL (Debian package postgresql)")
    bin_dir = Path(initdb[-1]).parent
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = Path(tempfile.mkdtemp(prefix="leadsync-postgres-"))
    if as_user:
        shutil.chown(data, "postgres", "postgres")
    port = free_port()

    def run(*command: str) -> None:
        subprocess.run([*as_user, *command], check=True, capture_output=True, cwd=data)

    run(str(bin_dir / "initdb"), "-D", str(data / "db"), "-A", "trust", "-U", "postgres", "-N")
    options = f"-h 127.0.0.1 -p {port} -k {data} -c fsync=off -c max_connections=200"
    run(str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-o", options, "-l", str(data / "log"),
        "-w", "start")  # fmt: skip
    try:
        yield Postgres(port)
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop")
        shutil.rmtree(data, ignore_errors=True)


@dataclass
class PrefectServer:
    api_url: str
    env: dict[str, str]  # for its clients: the API URL and the auth string
    auth_string: str  # "user:password", which the server asks of every API request

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")

    def cli(self, *arguments: str) -> str:
        """Run the `prefect` command line against this server, from the checkout."""
        done = subprocess.run(
            [sys.executable, "-m", "prefect", *arguments],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode:
            raise RuntimeError(f"prefect {' '.join(arguments)}: {done.stdout}{done.stderr}")
        return done.stdout


@contextmanager
def prefect_server(home: Path, database_url: str, **settings: str) -> Iterator[PrefectServer]:
    """`prefect server start` with its UI, on a free port, storing its state in `database_url`,
    refusing API requests without its auth string (a new one each time)."""
    port = free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    auth_string = f"leadsync:{secrets.token_urlsafe(16)}"
    env = {
        **os.environ,
        **QUIET,
        "PREFECT_HOME": str(home),
        "PREFECT_API_URL": api_url,
        "PREFECT_API_AUTH_STRING": auth_string,
    }
    server_env = {
        **env,
        "PREFECT_SERVER_API_AUTH_STRING": auth_string,
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url,
        "PREFECT_UI_URL": f"http://127.0.0.1:{port}",
        **settings,
    }
    log = (home / "server.log").open("wb")
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
               "--port", str(port)]  # fmt: skip
    server = subprocess.Popen(command, env=server_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: healthy(api_url) or server.poll() is not None, "the Prefect server")
        if server.poll() is not None:
            raise RuntimeError(f"the Prefect server exited; see {home / 'server.log'}")
        yield PrefectServer(api_url, env, auth_string)
    finally:
        stop(server)
        log.close()


@contextmanager
def workers(server: PrefectServer, pool: str, names: list[str], log_dir: Path, **env: str):
    """`prefect worker start` processes taking one flow run at a time each; yields their log
    files (a worker logs "submitting flow run '<id>'" for each run it takes)."""
    started: list[subprocess.Popen] = []
    logs = {name: log_dir / f"worker-{name}.log" for name in names}
    try:
        for name, path in logs.items():
            command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
                       "--name", name, "--limit", "1"]  # fmt: skip
            with path.open("wb") as log:
                started.append(
                    subprocess.Popen(
                        command,
                        env={**server.env, "PREFECT_WORKER_QUERY_SECONDS": "2", **env},
                        cwd=ROOT,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        yield logs
    finally:
        for worker in started:
            stop(worker)


@dataclass
class WebhookReceiver:
    """Collects the JSON bodies POSTed to it."""

    url: str = ""
    messages: list[dict] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    def wait_for(self, *needles: str, timeout: float = 90) -> dict:
        """The first message whose text holds every needle."""
        with self.arrived:
            found = self.arrived.wait_for(
                lambda: next((m for m in self.messages if _holds(m, needles)), None), timeout
            )
        if found is None:
            raise AssertionError(f"no message with {needles} in {timeout} s: {self.messages}")
        return found


def _holds(message: dict, needles: tuple[str, ...]) -> bool:
    text = message.get("text", "")
    return all(needle in text for needle in needles)


@contextmanager
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with receiver.arrived:
                receiver.messages.append(json.loads(body or b"{}"))
                receiver.arrived.notify_all()
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/on-call"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def log_in(browser, server: PrefectServer, screenshot: Path | None = None) -> None:
    """Log in to the UI as a person does: it shows its login page, which takes the auth string."""
    page = browser.new_page()
    page.goto(server.ui_url)
    password = page.get_by_placeholder("admin:pass")
    password.wait_for(timeout=60_000)
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=screenshot)
    password.fill(server.auth_string)
    page.get_by_role("button", name="Login").click()
    page.wait_for_url(lambda url: "/login" not in url, timeout=60_000)
    page.close()


@contextmanager
def chromium(storage_state: Path | None = None):
    """Headless Debian Chromium under Playwright (never a downloaded browser); yields a
    browser context with a 1400x1000 viewport, starting from `storage_state` (cookies and local
    storage a context saved) if given."""
    executable = os.environ.get("LEADSYNC_CHROMIUM") or shutil.which("chromium")
    require(executable is not None, "Chromium (Debian package chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            yield browser.new_context(
                viewport={"width": 1400, "height": 1000}, storage_state=storage_state
            )
        finally:
            browser.close()
