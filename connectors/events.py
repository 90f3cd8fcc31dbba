"""Lead changes as the CRMs announce them: HubSpot webhooks, Salesforce Change Data Capture.

Each CRM's listener turns its own notifications into `LeadEvent`s; the flows gather them into
"rescore these leads now". An event is marked `echo` when it is leadsync's own write coming
back (only write-back fields, changed by leadsync's integration): it must not trigger a rescore,
or writes and events would chase each other forever. A person's change to a field leadsync
writes (a rep setting the status) is not an echo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pandas as pd

ChangeKind = Literal["created", "changed", "deleted"]


@dataclass(frozen=True)
class LeadEvent:
    source: str  # "salesforce" or "hubspot"
    crm_id: str
    kind: ChangeKind
    occurred_at: pd.Timestamp  # when the CRM made the change (UTC)
    event_id: str  # unique per event: HubSpot's eventId, Salesforce's replay id (hex)
    echo: bool = False  # leadsync's own write coming back


# What a listener hands its events to, a batch at a time, in the order the CRM sent them.
EventSink = Callable[[list[LeadEvent]], None]
