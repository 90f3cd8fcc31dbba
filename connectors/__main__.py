"""`python -m connectors`: check field mappings and permissions against the CRMs, and set up
what leadsync needs in them (custom fields and properties, the Salesforce permission set)."""

from __future__ import annotations

import argparse
import sys

from connectors import SOURCES, ConnectorError, connector_for
from connectors.credentials import CredentialsMissing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m connectors", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check",
        help="check that every mapped field exists in the CRM and the integration user may "
        "read it (and edit those leadsync writes)",
    )
    check.add_argument(
        "--source",
        choices=SOURCES,
        action="append",
        help="CRM to check (repeatable; default: both)",
    )
    setup = commands.add_parser(
        "setup",
        help="create what leadsync needs in a CRM (safe to rerun): HubSpot's leadsync_* "
        "contact properties; Salesforce's custom Lead fields and the permission set "
        "leadsync_integration granting them to the signed-in user",
    )
    setup.add_argument("--source", choices=SOURCES, required=True, help="CRM to set up")
    setup.add_argument(
        "--dry-run", action="store_true", help="print what would be created; change nothing"
    )
    for command in (check, setup):
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
            connector = connector_for(args.source, args.block, args.mapping)
            changes = connector.set_up(dry_run=args.dry_run)
            for change in changes:
                print(f"would {change}" if args.dry_run else change)
            if not changes:
                print(f"{args.source}: nothing to change")
    except (ConnectorError, CredentialsMissing) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
