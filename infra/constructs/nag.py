"""Acknowledging a cdk-nag finding: always on the narrowest construct, always with a specific reason."""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stack, Validations
from aws_cdk import aws_s3 as s3
from constructs import IConstruct


def acknowledge(construct: IConstruct, rule_id: str, reason: str) -> None:
    """`rule_id` is the exact finding, e.g. "AwsSolutions-IAM5[Resource::*]" (cdk-nag 3 matches exactly)."""
    if len(reason) < 20:
        raise ValueError(f"acknowledgment of {rule_id} needs a specific reason, got {reason!r}")
    Validations.of(construct).acknowledge(Acknowledgment(id=rule_id, reason=reason))


def acknowledge_object_prefix(role: IConstruct, bucket: s3.IBucket, prefix: str, reason: str) -> None:
    """IAM5 for `<bucket>/<prefix>*`: object ARNs under one prefix cannot be narrower than a wildcard."""
    stack = Stack.of(bucket)
    logical_id = stack.resolve(stack.get_logical_id(bucket.node.default_child))  # type: ignore[arg-type]
    acknowledge(role, f"AwsSolutions-IAM5[Resource::<{logical_id}.Arn>/{prefix}*]", reason)
