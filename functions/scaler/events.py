"""Which EventBridge events the scaler acts on: a worker job that ended (and its slot), a spot interruption."""

from __future__ import annotations

from aws_lambda_powertools.utilities.data_classes import EventBridgeEvent

from common.contract import ENV_WORKER_SLOT

ENDED = frozenset({"SUCCEEDED", "FAILED"})
SPOT_WARNING = "EC2 Spot Instance Interruption Warning"


def ended_worker_environment(event: EventBridgeEvent) -> dict[str, str] | None:
    """The environment of a worker job that ended (SUCCEEDED or FAILED), or None for any other event."""
    if event.detail_type != "Batch Job State Change" or event.detail.get("status") not in ENDED:
        return None
    container = event.detail.get("container") or {}
    environment = {str(v.get("name")): str(v.get("value")) for v in container.get("environment") or []
                   if isinstance(v, dict)}
    return environment if ENV_WORKER_SLOT in environment else None


def spot_interruption_instance(event: EventBridgeEvent) -> str | None:
    """The instance id of an EC2 spot interruption warning (two minutes before the instance is reclaimed)."""
    if event.detail_type != SPOT_WARNING or event.source != "aws.ec2":
        return None
    instance = event.detail.get("instance-id")
    return str(instance) if instance else None
