"""The Pub/Sub API's messages and service stubs, generated from pubsub_api.proto.

They are generated when the virtualenv is built (`make`, the `$(INSTALLED)` step) into the
git-ignored folder connectors/salesforce/_pubsub/, not committed: generated code would drift
from the proto and from the installed protobuf runtime it must match.
"""

from __future__ import annotations

try:
    from connectors.salesforce._pubsub import pubsub_api_pb2 as messages
    from connectors.salesforce._pubsub import pubsub_api_pb2_grpc as services
except ImportError as error:
    raise ImportError(
        "The Salesforce Pub/Sub API stubs are missing (connectors/salesforce/_pubsub/): build the "
        "virtualenv with `make .venv/.installed`, or generate them with "
        "`.venv/bin/python -m connectors.salesforce.generate_pubsub`."
    ) from error

__all__ = ["messages", "services"]
