import os

# Nothing in the tests may phone home: the machine reaches only package registries.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

import pytest  # noqa: E402
import requests  # noqa: E402

from sandbox.run import Sandbox, SandboxConfig  # noqa: E402


@pytest.fixture
def start_sandbox():
    """Start both sandbox CRMs in memory on free ports: `start_sandbox(leads=5000, faults=...)`
    takes any SandboxConfig field (default: no seeded leads). Stopped after the test."""
    started: list[Sandbox] = []

    def start(**config) -> Sandbox:
        sandbox = Sandbox(SandboxConfig(**{"leads": 0, **config})).start()
        started.append(sandbox)
        return sandbox

    yield start
    for sandbox in started:
        sandbox.stop()


@pytest.fixture
def trusted_session():
    """A requests.Session that trusts a sandbox's CA (TLS verification stays on)."""

    def make(sandbox: Sandbox) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment overrides verify
        session.verify = sandbox.info["ca_cert"]
        return session

    return make


@pytest.fixture(scope="session")
def prefect_api():
    """One Prefect test server for the whole session, started by the first test that needs it
    (each start costs 10 s or more); yields its API URL, for runs started in subprocesses."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def postgres_cluster():
    """Debian's PostgreSQL on a free loopback port, once per test session (tests/stack.py)."""
    from tests.stack import postgres

    with postgres() as cluster:
        yield cluster
