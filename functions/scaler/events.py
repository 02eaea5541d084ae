"""Which EventBridge events mean "a worker job ended" and what identifies its slot."""

from __future__ import annotations

from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent

from common.contract import ENV_WORKER_SLOT

ENDED = frozenset({"SUCCEEDED", "FAILED"})


def ended_worker_environment(event: EventBridgeEvent) -> dict[str, str] | None:
    """The environment of a worker job that ended (SUCCEEDED or FAILED), or None for any other event."""
    if event.detail_type != "Batch Job State Change" or event.detail.get("status") not in ENDED:
        return None
    container = event.detail.get("container") or {}
    environment = {str(v.get("name")): str(v.get("value")) for v in container.get("environment") or []
                   if isinstance(v, dict)}
    return environment if ENV_WORKER_SLOT in environment else None
