"""On-call notifications: one Prefect automation that sends a message when a flow run of any
leadsync deployment (every deployment is tagged `leadsync`) fails, crashes or is late.

The automation lives on the Prefect server, so it notifies whatever runs the flows (`serve`, or
workers) and even when no worker is up, which is exactly when runs go Late. It sends through a
Prefect notification block: a Custom Webhook block this module saves for a webhook URL (Slack,
Teams, Mattermost and most chat tools accept its JSON `text`), or any notification block an
admin made in the UI (Slack, email, PagerDuty...).
"""

from __future__ import annotations

from uuid import UUID

from prefect import get_client
from prefect.automations import Automation, EventTrigger, Posture, SendNotification
from prefect.blocks.core import Block
from prefect.blocks.notifications import CustomWebhookNotificationBlock, NotificationBlock

AUTOMATION_NAME = "leadsync-on-call"
WEBHOOK_BLOCK_NAME = "leadsync-on-call"
DEPLOYMENT_TAG = "leadsync"
STATES = ("Failed", "Crashed", "Late")

SUBJECT = "leadsync: {{ flow.name }} run {{ flow_run.name }} is {{ flow_run.state.name }}"
# Rendered by the Prefect server with the run, its flow and deployment as they are when it sends.
LATE_REASON = (
    "not started by its scheduled time {{ flow_run.expected_start_time }}: no worker is taking "
    "runs from work pool {{ flow_run.work_pool_name or '(served)' }}, or the deployment's earlier "
    "run still holds its slot."
)
BODY = (
    "Flow: {{ flow.name }} (deployment {{ deployment.name }})\n"
    "CRM: {{ flow_run.parameters.get('source', 'not set') }}\n"
    "State: {{ flow_run.state.name }}\n"
    f"Reason: {{% if flow_run.state.name == 'Late' %}}{LATE_REASON}{{% else %}}"
    "{{ flow_run.state.message or 'no message: see the run logs' }}{% endif %}\n"
    "Run: {{ flow_run|ui_url }}\n"
    "What to do: the on-call runbook in the leadsync README."
)


def webhook_block(url: str) -> UUID:
    """Save (or update) the Custom Webhook block that posts to `url`; returns its id."""
    block = CustomWebhookNotificationBlock(
        name=WEBHOOK_BLOCK_NAME,
        url=url,
        json_data={"text": "{{subject}}\n\n{{body}}", "subject": "{{subject}}", "body": "{{body}}"},
    )
    return block.save(WEBHOOK_BLOCK_NAME, overwrite=True)


def named_block(slug: str) -> UUID:
    """The id of an existing notification block, by its slug (`slack-webhook/on-call`)."""
    block = Block.load(slug)
    if not isinstance(block, NotificationBlock) or block._block_document_id is None:
        raise ValueError(f"block {slug!r} is not a notification block on this server")
    return block._block_document_id


def notify_on_call(block_document_id: UUID) -> Automation:
    """Create the on-call automation, then remove earlier ones of the same name (so on-call is
    never left without one)."""
    with get_client(sync_client=True) as client:
        earlier = client.read_automations_by_name(AUTOMATION_NAME)
    automation = Automation(
        name=AUTOMATION_NAME,
        description="Tell on-call when a leadsync flow run fails, crashes or is late.",
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={
                "prefect.resource.role": "tag",
                "prefect.resource.id": f"prefect.tag.{DEPLOYMENT_TAG}",
            },
            expect={f"prefect.flow-run.{state}" for state in STATES},
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[SendNotification(block_document_id=block_document_id, subject=SUBJECT, body=BODY)],
    ).create()
    with get_client(sync_client=True) as client:
        for old in earlier:
            client.delete_automation(old.id)
    return automation
