"""`python -m sandbox serve`: run the local Salesforce and HubSpot APIs with seeded leads."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from pathlib import Path

from sandbox.http import FaultPlan
from sandbox.hubspot import HubSpotSettings
from sandbox.run import Sandbox, SandboxConfig
from sandbox.salesforce import SalesforceSettings

DEFAULT_DATA_DIR = Path(".leadsync/sandbox")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    data_dir = None if args.in_memory else args.data_dir
    info_file = args.info_file or (args.data_dir / "info.json")
    config = SandboxConfig(
        leads=args.leads,
        seed=args.seed,
        data_dir=data_dir,
        salesforce_port=args.salesforce_port,
        hubspot_port=args.hubspot_port,
        salesforce_pubsub_port=args.salesforce_pubsub_port,
        faults=fault_plan(args),
        salesforce=SalesforceSettings(
            daily_limit=args.salesforce_daily_limit, session_ttl=args.session_ttl
        ),
        hubspot=HubSpotSettings(
            ten_second_limit=args.hubspot_ten_second_limit,
            search_per_second=args.hubspot_search_per_second,
            daily_limit=args.hubspot_daily_limit,
            access_token_ttl=args.hubspot_token_ttl,
        ),
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    with Sandbox(config) as sandbox:
        sandbox.write_info(info_file)
        print(
            f"Salesforce sandbox: {sandbox.salesforce.base_url} "
            f"({sandbox.salesforce.lead_count():,} leads)"
        )
        print(f"Salesforce Pub/Sub: {sandbox.salesforce_pubsub.endpoint} (Change Data Capture)")
        print(
            f"HubSpot sandbox:    {sandbox.hubspot.base_url} "
            f"({sandbox.hubspot.contact_count():,} contacts)"
        )
        print(f"Connection info (tokens, CA bundle): {info_file}")
        print(
            json.dumps(
                {
                    **sandbox.info,
                    "salesforce": _redacted(sandbox.info["salesforce"]),
                    "hubspot": _redacted(sandbox.info["hubspot"]),
                },
                indent=2,
            )
        )
        print("Serving until interrupted (Ctrl-C or SIGTERM).", flush=True)
        stop.wait()
    print("Sandbox stopped.")


def fault_plan(args: argparse.Namespace) -> FaultPlan:
    """The faults `serve`'s options ask for."""
    return FaultPlan(
        rate_limited=args.rate_limited,
        server_error=args.server_error,
        slow=args.slow,
        dropped=args.dropped,
        write_error=args.write_error,
        hang=args.hang,
        slow_seconds=args.slow_seconds,
        hang_seconds=args.hang_seconds,
        latency_seconds=args.latency_seconds,
        seed=args.fault_seed,
    )


def _redacted(section: dict) -> dict:
    secret_keys = {
        "session_id",
        "access_token",
        "client_secret",
        "password",
        "security_token",
        "refresh_token",
        "developer_api_key",
    }
    return {
        key: ("<in the info file>" if key in secret_keys else value)
        for key, value in section.items()
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start both sandbox CRMs and serve until stopped")
    data = serve.add_argument_group("data")
    data.add_argument(
        "--leads",
        type=int,
        default=1_000,
        help="leads to seed in each CRM on first start (default 1000)",
    )
    data.add_argument("--seed", type=int, default=0, help="seed for the generated leads")
    data.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        help=f"where the SQLite files, CA and tokens live (default {DEFAULT_DATA_DIR})",
    )
    data.add_argument(
        "--in-memory",
        action="store_true",
        help="keep nothing on disk: fresh data and tokens on every start",
    )
    data.add_argument(
        "--info-file",
        type=Path,
        help="where to write the connection info JSON (default DATA_DIR/info.json)",
    )
    ports = serve.add_argument_group("ports")
    ports.add_argument("--salesforce-port", type=int, default=0, help="default: any free port")
    ports.add_argument("--hubspot-port", type=int, default=0, help="default: any free port")
    ports.add_argument(
        "--salesforce-pubsub-port", type=int, default=0, help="the Pub/Sub API; default: any free"
    )
    faults = serve.add_argument_group("fault injection (probabilities per request, 0..1)")
    faults.add_argument("--rate-limited", type=float, default=0.0, help="answer 429")
    faults.add_argument("--server-error", type=float, default=0.0, help="answer 5xx")
    faults.add_argument("--slow", type=float, default=0.0, help="answer after --slow-seconds")
    faults.add_argument("--dropped", type=float, default=0.0, help="drop the connection")
    faults.add_argument(
        "--write-error", type=float, default=0.0, help="fail a record in a write (per record)"
    )
    faults.add_argument(
        "--hang", type=float, default=0.0, help="read the request, then answer nothing"
    )
    faults.add_argument("--slow-seconds", type=float, default=2.0)
    faults.add_argument(
        "--hang-seconds",
        type=float,
        default=3600.0,
        help="how long a hung request stays silent before its connection closes (default 3600)",
    )
    faults.add_argument(
        "--latency-seconds",
        type=float,
        default=0.0,
        help="added to every request, like a real network round trip",
    )
    faults.add_argument("--fault-seed", type=int, default=0, help="seed of the fault sequence")
    limits = serve.add_argument_group("API limits")
    limits.add_argument(
        "--salesforce-daily-limit", type=int, default=SalesforceSettings.daily_limit
    )
    limits.add_argument(
        "--hubspot-ten-second-limit", type=int, default=HubSpotSettings.ten_second_limit
    )
    limits.add_argument(
        "--hubspot-search-per-second", type=int, default=HubSpotSettings.search_per_second
    )
    limits.add_argument("--hubspot-daily-limit", type=int, default=HubSpotSettings.daily_limit)
    sign_in = serve.add_argument_group("sign-in")
    sign_in.add_argument(
        "--session-ttl",
        type=float,
        default=SalesforceSettings.session_ttl,
        help="seconds a Salesforce session from a sign-in lives (default 7200; the info "
        "file's session_id never expires)",
    )
    sign_in.add_argument(
        "--hubspot-token-ttl",
        type=float,
        default=HubSpotSettings.access_token_ttl,
        help="seconds a HubSpot OAuth access token lives (default 1800; the private app "
        "token never expires)",
    )
    return parser


if __name__ == "__main__":
    main()
