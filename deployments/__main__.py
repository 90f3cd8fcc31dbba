"""`python -m deployments serve|list`.

serve: start a local Prefect server with its UI (http://127.0.0.1:4200), the sandbox CRMs
(unless real CRM credentials are in the environment, or --no-sandbox), a change listener per
CRM (unless --no-listen), and serve every deployment of deployments/definitions.py until Ctrl-C
or SIGTERM, which stops all of it.
State lives in the checkout: the server's database in .prefect/, the sandbox data, the ledger
and the server log in .leadsync/.

list: print each deployment with its schedule and parameters (no server needed).

notify: on the Prefect server of PREFECT_API_URL, create the automation that tells on-call when a
run of these deployments fails, crashes or is late, sending to a webhook URL or through a
notification block made in the UI (deployments/notifications.py).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Before Prefect is imported: nothing phones home, and Prefect's state stays in the checkout.
for _name, _value in {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_HOME": str(ROOT / ".prefect"),
}.items():
    os.environ.setdefault(_name, _value)

import argparse  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from contextlib import ExitStack  # noqa: E402

from deployments.processes import healthy, stop  # noqa: E402

STATE = ROOT / ".leadsync"
LISTENER_START_SECONDS = 10
SANDBOX_INFO = STATE / "sandbox" / "info.json"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "list":
        return list_deployments()
    if args.command == "notify":
        return notify(args.webhook_url, args.block)
    return serve(args.sandbox, args.leads, args.port, args.listen)


def serve(sandbox: bool | None, leads: int, port: int, listen: bool = True) -> int:
    os.chdir(ROOT)  # entrypoints (flows/jobs.py:...) and .leadsync/ are relative to the checkout
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # clean up if stopped while starting
    with ExitStack() as cleanup:
        cleanup.callback(print, "Stopped: deployments, sandbox and Prefect server.")  # runs last
        api_url = _start_server(port, cleanup)
        os.environ["PREFECT_API_URL"] = api_url  # for the flow-run processes
        if sandbox is None:
            from connectors.credentials import environment_has_credentials

            sandbox = not environment_has_credentials()
        if sandbox:
            _start_sandbox(leads, cleanup)
        else:
            print("Sandbox: not started; the flows use the CRM credentials configured.")

        import prefect
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from deployments.definitions import deployments

        with temporary_settings({PREFECT_API_URL: api_url}):
            if listen:
                _start_listeners(cleanup)
            print(f"Prefect UI: {api_url.removesuffix('/api')}", flush=True)
            prefect.serve(*deployments())  # until Ctrl-C; SIGTERM exits through here too
    return 0


def _start_server(port: int, cleanup: ExitStack) -> str:
    api_url = f"http://127.0.0.1:{port}/api"
    if healthy(api_url):
        sys.exit(f"Something already answers on {api_url}: stop it, or pick another --port.")
    STATE.mkdir(exist_ok=True)
    log_path = STATE / "prefect-server.log"
    log = cleanup.enter_context(log_path.open("ab"))
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # the UI asks /ui-settings where the API is: without this, the default port's
        env={**os.environ, "PREFECT_SERVER_UI_API_URL": api_url},
    )  # Ctrl-C reaches us only
    cleanup.callback(stop, server)
    print(
        f"Prefect server: starting (pid {server.pid}, log {log_path.relative_to(ROOT)})", flush=True
    )
    deadline = time.monotonic() + 120
    while not healthy(api_url):
        if server.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"The Prefect server did not start; see {log_path}")
        time.sleep(0.5)
    return api_url


def _start_sandbox(leads: int, cleanup: ExitStack) -> None:
    from sandbox.run import Sandbox, SandboxConfig

    config = SandboxConfig(leads=leads, data_dir=SANDBOX_INFO.parent)
    sandbox = cleanup.enter_context(Sandbox(config))
    sandbox.write_info(SANDBOX_INFO)
    os.environ["LEADSYNC_SANDBOX_INFO"] = str(SANDBOX_INFO)
    print(
        f"Sandbox: Salesforce {sandbox.salesforce.base_url} "
        f"({sandbox.salesforce.lead_count():,} leads), HubSpot {sandbox.hubspot.base_url} "
        f"({sandbox.hubspot.contact_count():,} contacts); info in "
        f"{SANDBOX_INFO.relative_to(ROOT)}",
        flush=True,
    )


def _start_listeners(cleanup: ExitStack) -> None:
    """A listener per CRM beside the deployments (flows/listen.py): each rescores a lead seconds
    after it changes; a CRM whose change stream cannot be reached is named and skipped, and the
    scheduled syncs still cover it."""
    import threading

    from connectors import SOURCES
    from flows.listen import Listener

    for source in SOURCES:
        listener = Listener(source)
        thread = threading.Thread(target=listener.run, name=f"listen-{source}", daemon=True)
        thread.start()
        cleanup.callback(thread.join, 15)
        cleanup.callback(listener.stop.set)
        deadline = time.monotonic() + LISTENER_START_SECONDS
        while thread.is_alive() and not listener.ready.wait(0.2) and time.monotonic() < deadline:
            continue
        where = f" (webhooks on {listener.receiver_url})" if source == "hubspot" else ""
        state = "listening" if listener.ready.is_set() else "subscribing"
        if not thread.is_alive():
            state, where = "did not start (see above); the scheduled syncs cover it", ""
        print(f"Changes of {source}: {state}{where}", flush=True)


def notify(webhook_url: str | None, block: str | None) -> int:
    from deployments.notifications import named_block, notify_on_call, webhook_block

    block_id = webhook_block(webhook_url) if webhook_url else named_block(block)
    automation = notify_on_call(block_id)
    print(f"Automation {automation.name!r} ({automation.id}): notifies on failed, crashed and late")
    print("runs of deployments tagged 'leadsync'. See it under Automations in the Prefect UI.")
    return 0


def list_deployments() -> int:
    from deployments.definitions import SPECS, TIMEZONE, VERSION

    for spec in SPECS:
        schedule = f"cron '{spec.cron}' ({TIMEZONE})" if spec.cron else "none (run on demand)"
        print(f"{spec.flow.name}/{spec.name}  (version {VERSION}, tags {', '.join(spec.tags)})")
        print(f"  {spec.description}")
        print(f"  schedule:   {schedule}; one run at a time")
        print("  parameters:")
        for name, parameter in _parameters(spec).items():
            print(f"    {name} = {parameter}")
        print()
    return 0


def _parameters(spec) -> dict[str, str]:
    """name -> 'value  (description)' for every flow parameter, the deployment's values first."""
    schema = spec.build()._parameter_openapi_schema.model_dump()
    shown = {}
    for name, prop in schema["properties"].items():
        if name in spec.parameters:
            value = repr(spec.parameters[name])
        elif name in schema.get("required", []):
            value = "(required)"
        else:
            value = repr(prop.get("default"))
        shown[name] = f"{value}  ({' '.join(prop.get('description', '').split())})"
    return shown


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m deployments",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    serve_ = commands.add_parser("serve", help="local Prefect server + UI, sandbox, deployments")
    serve_.add_argument(
        "--sandbox",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start the sandbox CRMs (default: yes unless SALESFORCE_* or "
        "HUBSPOT_ACCESS_TOKEN credentials are set)",
    )
    serve_.add_argument(
        "--leads",
        type=int,
        default=1_000,
        help="leads to seed in each sandbox CRM on its first start (default 1000)",
    )
    serve_.add_argument(
        "--port",
        type=int,
        default=4200,
        help="port of the Prefect server and UI on 127.0.0.1 (default 4200)",
    )
    serve_.add_argument(
        "--listen",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="rescore leads seconds after they change, from each CRM's change stream "
        "(python -m flows listen; default: yes)",
    )
    commands.add_parser("list", help="print each deployment, its schedule and parameters")
    notify_ = commands.add_parser(
        "notify", help="notify on-call of failed, crashed and late runs (PREFECT_API_URL's server)"
    )
    target = notify_.add_mutually_exclusive_group(required=True)
    target.add_argument("--webhook-url", help="post each message to this webhook (JSON 'text')")
    target.add_argument(
        "--block", help="send through this notification block instead (e.g. slack-webhook/on-call)"
    )
    return parser


if __name__ == "__main__":
    sys.exit(main())
