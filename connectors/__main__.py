"""`python -m connectors`: check field mappings against the CRMs, create HubSpot properties."""

from __future__ import annotations

import argparse
import sys

from connectors import SOURCES, ConnectorError, connector_for
from connectors.credentials import CredentialsMissing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m connectors", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="check that every mapped field exists in the CRM")
    check.add_argument(
        "--source",
        choices=SOURCES,
        action="append",
        help="CRM to check (repeatable; default: both)",
    )
    create = commands.add_parser(
        "create-hubspot-properties",
        help="create the mapped leadsync_* contact properties HubSpot lacks",
    )
    for command in (check, create):
        command.add_argument(
            "--block",
            help="Prefect credentials block name (default: environment "
            "variables, then the sandbox)",
        )
        command.add_argument("--mapping", help="field mapping file (default: the shipped one)")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            for source in args.source or SOURCES:
                connector_for(source, args.block, args.mapping).check_fields()
                print(f"{source}: every mapped field exists")
        else:
            created = connector_for("hubspot", args.block, args.mapping).create_missing_properties()
            print(f"created {', '.join(created)}" if created else "nothing to create")
    except (ConnectorError, CredentialsMissing) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
