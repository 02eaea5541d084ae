"""`upscaler local up` delivers per-request webhooks with the real delivery handler, signed with the secret
its JSON line gives; and a --webhook subscription its receiver does not confirm is announced on stderr.

One stack for the module: the fast animevideov3 model, tiny images, and a worker held back until the test
has put a webhook URL on the job's record (the HTTP API does that when it creates a job).
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hook_server import HookServer
from PIL import Image
from standardwebhooks.webhooks import Webhook
from waiting import wait_until

from common import aws
from common.jobs import JobStore, upload_job_id
from local_stack.stack import LocalStack, LocalStackConfig, queue_depth
from local_stack.webhooks import DeliveryPolicy

pytestmark = pytest.mark.slow

SUPPORT = Path(__file__).resolve().parent.parent / "support"


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("gate") / "open"


@pytest.fixture(scope="module")
def sns_style() -> Iterator[HookServer]:
    """A plain receiver on the --webhook (SNS) subscription: it answers 200 and never confirms."""
    with HookServer(lambda _: (200, {}, ())) as server:
        yield server


class Collected(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def warnings_logged() -> Iterator[Collected]:
    """What the SNS-style delivery warns about, from the stack's start on (what `local up` prints on stderr)."""
    handler, logger = Collected(), logging.getLogger("local_stack.webhooks")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


@pytest.fixture(scope="module")
def stack(gate: Path, sns_style: HookServer, warnings_logged: Collected) -> Iterator[LocalStack]:
    from gpu_batch.engine.models import ensure_model

    ensure_model("animevideov3")
    config = LocalStackConfig(workers=1, webhooks=(sns_style.url(),),
                              delivery_policy=DeliveryPolicy(confirmation_grace_seconds=0.5),
                              worker_command=(sys.executable, str(SUPPORT / "gated_worker.py"), str(gate)))
    with LocalStack(config) as running:
        yield running


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), (200, 80, 40)).save(buf, "JPEG")
    return buf.getvalue()


def _upload(stack: LocalStack, name: str, body: bytes) -> str:
    s = stack.settings
    assert s is not None
    key = f"{s.upload_prefix}{name}"
    put = aws.client("s3", s).put_object(Bucket=s.input_bucket, Key=key, Body=body,
                                         Metadata={"model": "animevideov3"})
    return upload_job_id(s.input_bucket, key, put.get("VersionId"), put.get("ETag"), len(body))


def test_a_job_with_a_webhook_url_gets_exactly_one_signed_delivery(stack: LocalStack, gate: Path) -> None:
    assert stack.settings is not None and stack.delivery_resources is not None
    info = stack.info()
    secret = info["webhook_secret"]
    assert secret.startswith("whsec_")
    json.dumps(info)  # the one JSON line `upscaler local up` prints

    store = JobStore(dynamodb_client=aws.client("dynamodb", stack.settings), table_name=stack.settings.jobs_table)
    with HookServer() as receiver:
        job_id = _upload(stack, f"hooked-{uuid.uuid4().hex[:6]}.jpg", _jpeg())
        wait_until(lambda: store.get(job_id), timeout=60, what="the job record")
        store.update_attributes(job_id, {"webhook_url": receiver.url(), "webhook_events": ["upscale.succeeded"]})
        gate.touch()  # now a worker may take the job
        # A job without a webhook URL (rejected by intake at once): its notification is not delivered.
        unhooked = _upload(stack, f"broken-{uuid.uuid4().hex[:6]}.jpg", b"\xff\xd8\xff\xe0 not a JPEG" * 20)

        [received] = receiver.wait_for(1, timeout=180)
        payload = Webhook(secret).verify(received.body, received.headers)
        assert payload["job_id"] == job_id and payload["event_type"] == "upscale.succeeded"
        assert received.headers["webhook-id"] == payload["event_id"]
        assert received.body == json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()

        deliveries = stack.webhook_delivery
        assert deliveries is not None
        wait_until(lambda: deliveries.stats.deleted >= 2, timeout=60, what="both notifications handled")
        sqs = aws.client("sqs", stack.settings)
        wait_until(lambda: queue_depth(sqs, stack.delivery_resources.queue_url) == 0,  # type: ignore[union-attr]
             timeout=30, what="nothing left to retry")
        assert len(receiver.requests) == 1
        assert unhooked not in {json.loads(r.body)["job_id"] for r in receiver.requests}
        assert queue_depth(sqs, stack.delivery_resources.dlq_url) == 0


def test_an_unconfirmed_webhook_subscription_is_announced_with_how_to_confirm_it(
        stack: LocalStack, sns_style: HookServer, warnings_logged: Collected) -> None:
    [subscription] = stack.webhook_subscriptions
    [confirmation] = sns_style.wait_for(1, timeout=30)
    assert json.loads(confirmation.body)["Type"] == "SubscriptionConfirmation"
    [text] = wait_until(lambda: [m for m in warnings_logged.messages if "PENDING CONFIRMATION" in m], timeout=30,
                  what="the pending-confirmation warning")
    assert subscription.status == "PendingConfirmation" and sns_style.url() in text
    [url] = re.findall(r"curl '([^']+)'", text)
    urllib.request.urlopen(url, timeout=10).read()  # what the warning tells the operator to do
    assert subscription.confirmed.wait(10) and subscription.status == "Confirmed"
