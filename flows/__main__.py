"""`python -m flows sync|backfill|requalify|rollback|review [options]`: run a flow from the shell.

Options are the flow's parameters (the same as its deployment's), in kebab-case, with the help
text of the flow's docstring. Connection settings come from the connectors: a credentials block,
the environment, or LEADSYNC_SANDBOX_INFO.

`python -m flows purge --source S --crm-id ID [--crm-id ...]` deletes leads' rows from the
ledger (LEADSYNC_LEDGER_URL), for a right-to-be-forgotten request.

`python -m flows listen --source S` rescores leads seconds after they change, from the CRM's
change stream, until Ctrl-C or SIGTERM (flows/listen.py; settings LEADSYNC_LISTEN_*).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any

import pandas as pd
from prefect import Flow
from prefect.utilities.callables import parameter_schema

from connectors import SOURCES
from flows.backfill import backfill_leads
from flows.jobs import requalify_leads, sync_leads
from flows.ledger import Ledger
from flows.rollback import rollback_run
from flows.review import review_criteria

COMMANDS: dict[str, Flow] = {
    "sync": sync_leads,
    "backfill": backfill_leads,
    "requalify": requalify_leads,
    "rollback": rollback_run,
    "review": review_criteria,
}


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = vars(parser.parse_args(argv))
    command = args.pop("command")
    if command == "purge":
        return purge(args["source"], args["crm_ids"])
    if command == "listen":
        return listen(args["source"], args["credentials_block"])
    flow = COMMANDS[command]
    state = flow(
        **{name: value for name, value in args.items() if value is not None}, return_state=True
    )
    print(f"{flow.name}: {state.name}: {state.message or ''}".rstrip(": "))
    return 0 if state.is_completed() else 1


def purge(source: str, crm_ids: list[str]) -> int:
    deleted = Ledger().purge(source, crm_ids)
    print(f"purge: {deleted} ledger rows of {len(set(crm_ids))} {source} leads deleted")
    return 0


def listen(source: str, credentials_block: str | None) -> int:
    from flows.listen import Listener

    listener = Listener(source, credentials_block=credentials_block)
    stop = lambda *_: listener.stop.set()  # noqa: E731
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listen: {source} changes, until Ctrl-C", flush=True)
    # The runs go in a thread of their own: in the main thread Prefect's engine would take
    # SIGTERM for itself and crash the run in progress; this way it finishes, then we stop.
    runs: list[int] = []
    worker = threading.Thread(target=lambda: runs.append(listener.run()), name="listen")
    worker.start()
    while worker.is_alive():
        worker.join(0.5)
    if not runs:
        return 1  # the listener failed; its error is above
    print(f"listen: stopped after {runs[0]} rescore runs")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flows",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for command, flow in COMMANDS.items():
        description = (flow.description or "").split("Args:")[0].strip()
        sub = commands.add_parser(command, help=description.split("\n")[0], description=description)
        schema = parameter_schema(flow.fn).model_dump()
        for name, spec in schema["properties"].items():
            _add_option(sub, name, spec, required=name in schema.get("required", []))
    _add_purge(commands)
    _add_listen(commands)
    return parser


def _add_listen(commands: argparse._SubParsersAction) -> None:
    description = (
        "Rescore leads seconds after they change, from the CRM's own change stream (Salesforce "
        "Change Data Capture, HubSpot webhooks), until Ctrl-C: one rescore-leads run per window "
        "of changes. Windows and the webhook receiver: LEADSYNC_LISTEN_* (see the README)."
    )
    sub = commands.add_parser("listen", help=description.split(",")[0], description=description)
    sub.add_argument("--source", required=True, choices=SOURCES)
    sub.add_argument("--credentials-block", dest="credentials_block", default=None,
                     help="a Prefect credentials block name")  # fmt: skip


def _add_purge(commands: argparse._SubParsersAction) -> None:
    description = (
        "Delete leads' rows from the ledger (their audited writes and owed retries): a "
        "right-to-be-forgotten request. Their writes can no longer be rolled back."
    )
    sub = commands.add_parser("purge", help=description.split(":")[0], description=description)
    sub.add_argument("--source", required=True, choices=SOURCES)
    sub.add_argument("--crm-id", dest="crm_ids", action="append", required=True, metavar="ID",
                     help="a lead's CRM id; repeat for several")  # fmt: skip


def _add_option(
    parser: argparse.ArgumentParser, name: str, spec: dict[str, Any], required: bool
) -> None:
    flag = "--" + name.replace("_", "-")
    help_text = spec.get("description", "")
    kinds = {spec.get("type")} | {option.get("type") for option in spec.get("anyOf", [])}
    formats = {spec.get("format")} | {option.get("format") for option in spec.get("anyOf", [])}
    if "boolean" in kinds:
        parser.add_argument(
            flag,
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"{help_text} (default: {spec.get('default')})",
        )
        return
    options: dict[str, Any] = {
        "dest": name,
        "required": required,
        "default": None,
        "help": help_text,
    }
    if "enum" in spec:
        options["choices"] = spec["enum"]
    if "date-time" in formats:
        options.update(type=_timestamp, metavar="TIME")
    elif "integer" in kinds:
        options["type"] = int
    if not required and spec.get("default") is not None:
        options["help"] += f" (default: {spec['default']})"
    parser.add_argument(flag, **options)


def _timestamp(text: str) -> pd.Timestamp:
    """ISO 8601, e.g. 2026-11-01 or 2026-11-01T09:00:00+01:00; without an offset, UTC."""
    stamp = pd.Timestamp(text)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp


if __name__ == "__main__":
    sys.exit(main())
