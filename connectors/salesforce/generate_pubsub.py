"""Generate the Pub/Sub API stubs from pubsub_api.proto (run by `make` when it builds the
virtualenv): `python -m connectors.salesforce.generate_pubsub`.

The proto is compiled under the virtual path connectors/salesforce/_pubsub/, so the generated
modules land in that git-ignored folder and import each other as package modules.
"""

from __future__ import annotations

import sys
from pathlib import Path

from grpc_tools import protoc

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
PACKAGE_PATH = "connectors/salesforce/_pubsub"
PROTO = "pubsub_api.proto"


def generate() -> None:
    (ROOT / PACKAGE_PATH).mkdir(exist_ok=True)
    arguments = [
        "protoc",
        f"--proto_path={PACKAGE_PATH}={HERE}",
        f"--python_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        f"{PACKAGE_PATH}/{PROTO}",
    ]
    if protoc.main(arguments) != 0:
        sys.exit(f"protoc could not compile {HERE / PROTO}")
    (ROOT / PACKAGE_PATH / "__init__.py").write_text('"""Generated: do not edit."""\n')


if __name__ == "__main__":
    generate()
