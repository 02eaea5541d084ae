"""The whole pipeline on one machine: emulator, intake, work queue, local Batch, scaler, notifier, webhooks."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from common import aws
from common.settings import ENV_PREFIX, Settings
from local_stack.api_server import LocalApiServer
from local_stack.batch import LocalBatch
from local_stack.batch_api import LocalBatchApi
from local_stack.batch_events import eventbridge_event
from local_stack.emulator import MotoServer
from local_stack.event_source import MappingConfig, SqsEventSourceMapping
from local_stack.lambda_runtime import LambdaRuntime
from local_stack.per_request_webhooks import (
    DELIVERY_MAPPING,
    WEBHOOKS_HANDLER,
    DeliveryResources,
    create_delivery_resources,
)
from local_stack.resources import QueueConfig, StackResources, create_resources
from local_stack.sns_endpoint import SnsEndpoint
from local_stack.webhooks import DeliveryPolicy, WebhookDelivery, WebhookSubscription
from sns_webhook.sign import generate_signing_identity
from web.security import WEB_ROOT

if TYPE_CHECKING:
    from local_stack.faults.injector import FaultInjector

log = logging.getLogger(__name__)

INTAKE_HANDLER = "functions.intake.handler:lambda_handler"
NOTIFIER_HANDLER = "functions.notifier.handler:lambda_handler"
SCALER_HANDLER = "functions.scaler.handler:lambda_handler"
SWEEPER_HANDLER = "functions.sweeper.handler:lambda_handler"
API_HANDLER = "functions.api.handler:lambda_handler"
# The work DLQ's event source as deployed (infra/constructs/notifier.py): batches of 10, no window, 2 at once.
DLQ_MAPPING = MappingConfig(batch_size=10, batching_window_seconds=0.0, pollers=2)
ENDPOINT_ENV = f"{ENV_PREFIX}ENDPOINT_URL"
# Any credentials work against the emulator; these keep boto3 from looking for real ones.
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local"}


@dataclass(frozen=True, slots=True)
class DeployedShape:
    """What the CDK stack configures for intake (batching, concurrency, visibility, redrive)."""

    mapping: MappingConfig
    queue: QueueConfig
    intake_concurrency: int
    intake_timeout_seconds: int
    settings: Settings


def deployed_shape() -> DeployedShape:
    """Read the deployment's configuration (cdk.json context) so local runs the way AWS does."""
    try:
        from infra.config import InfraConfig, config_from_context, load_cdk_json_context

        try:
            config = config_from_context(load_cdk_json_context())
        except FileNotFoundError:
            config = InfraConfig()
        except ValueError as exc:  # ConfigError: say why, run with the defaults rather than not at all
            log.warning("cdk.json context is invalid (%s); using the default deployment configuration", exc)
            config = InfraConfig()
    except ImportError:  # infra not installed: the same defaults, spelled here
        return DeployedShape(MappingConfig(batch_size=10, batching_window_seconds=5.0, pollers=2),
                             QueueConfig(visibility_timeout_seconds=365, max_receive_count=5), 2, 60, Settings())
    concurrency = min(config.intake_reserved_concurrency or 2, 2)  # 2 cores here
    return DeployedShape(
        mapping=MappingConfig(batch_size=config.intake_batch_size,
                              batching_window_seconds=float(config.intake_batch_window_seconds),
                              pollers=concurrency),
        queue=QueueConfig(visibility_timeout_seconds=config.intake_visibility_timeout_seconds,
                          max_receive_count=config.intake_max_receive_count),
        intake_concurrency=concurrency,
        intake_timeout_seconds=config.intake_timeout_seconds,
        settings=config.settings,
    )


@dataclass(frozen=True)
class LocalStackConfig:
    workers: int = 2  # max_workers: worker jobs running or waiting at once (the compute environment's size)
    batch_delay: float = 0.0  # seconds Batch takes to place a worker job (instance, image, container start)
    scaler_interval_seconds: float = 60.0  # the EventBridge schedule of the scaler Lambda
    port: int = 0  # emulator port; 0 = a free one
    webhooks: tuple[str, ...] = ()
    filter_policy: Mapping[str, Any] | None = None  # applied to `webhooks`
    delivery_policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    mapping: MappingConfig | None = None  # None: as deployed (cdk.json)
    queue: QueueConfig | None = None  # None: as deployed
    settings_overrides: Mapping[str, Any] = field(default_factory=dict)
    intake_handler: str = INTAKE_HANDLER
    notifier_handler: str = NOTIFIER_HANDLER
    scaler_handler: str = SCALER_HANDLER
    api_handler: str = API_HANDLER
    api_port: int = 0  # the HTTP API and the web page on 127.0.0.1; 0 = a free port
    scaler_attempts: int = 3  # EventBridge retries a failed target invocation
    sweeper_handler: str | None = None  # e.g. SWEEPER_HANDLER: a scheduled Lambda; None: no sweeper
    sweeper_interval_seconds: float = 60.0  # its EventBridge schedule
    intake_timeout_seconds: int | None = None  # None: as deployed
    worker_command: tuple[str, ...] = ()  # default `python -m gpu_batch.worker`, the container's command
    log_stream: IO[str] | None = None  # worker and Lambda logs; default stderr
    # Fault runs (local_stack.faults): every process reaches the emulator through its own fault proxy port.
    faults: FaultInjector | None = None


class LocalStack:
    """`with LocalStack(config) as stack:` starts everything; `stack.settings` points at the emulator."""

    def __init__(self, config: LocalStackConfig = LocalStackConfig()) -> None:
        self.config = config
        self.emulator = MotoServer(port=config.port)
        self.settings: Settings | None = None
        self.resources: StackResources | None = None
        self.sns_endpoint: SnsEndpoint | None = None
        self.webhooks: WebhookDelivery | None = None
        self.intake: SqsEventSourceMapping | None = None
        self.dead_items: SqsEventSourceMapping | None = None
        self.webhook_delivery: SqsEventSourceMapping | None = None  # per-request webhooks
        self.delivery_resources: DeliveryResources | None = None
        self.batch: LocalBatch | None = None
        self.batch_api: LocalBatchApi | None = None
        self.api_server: LocalApiServer | None = None
        self.webhook_subscriptions: list[WebhookSubscription] = []
        self._runtimes: dict[str, LambdaRuntime] = {}
        self._schedule_stop = threading.Event()
        self._schedules: list[threading.Thread] = []
        self._env_added: list[str] = []
        self.started_seconds = 0.0

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- start/stop ----------------------------------------------------------------------
    def start(self) -> LocalStack:
        began = time.monotonic()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        self.started_seconds = time.monotonic() - began
        return self

    def _start(self) -> None:
        cfg = self.config
        shape = deployed_shape()
        for name, value in DUMMY_CREDENTIALS.items():  # this process's own clients (common.aws)
            if name not in os.environ:
                os.environ[name] = value
                self._env_added.append(name)
        endpoint_url = self.emulator.start()
        faults = cfg.faults
        if faults:
            faults.start(endpoint_url)
        base = Settings.from_env({**shape.settings.to_env(), **_upscaler_env(os.environ)})
        settings = base.replace(endpoint_url=endpoint_url, job_backend="local", max_workers=cfg.workers,
                                **cfg.settings_overrides)
        self.resources = create_resources(settings, cfg.queue or shape.queue)
        self.delivery_resources = delivery = create_delivery_resources(settings, self.resources.topic_arn)
        # The Batch stand-in and its API come first: the Lambdas' environment names the API's address.
        self.batch = LocalBatch(
            settings=settings, base_env={}, capacity=cfg.workers, on_state_change=self.deliver_to_scaler,
            batch_delay=cfg.batch_delay, log_stream=cfg.log_stream, command=cfg.worker_command or None,
            launcher=faults.launch if faults else None, on_log_line=faults.on_worker_line if faults else None)
        self.batch_api = LocalBatchApi(self.batch)
        self.batch_api.start()
        settings = settings.replace(topic_arn=self.resources.topic_arn, work_queue_url=self.resources.work_queue_url,
                                    intake_queue_url=self.resources.intake_queue_url,
                                    intake_dlq_url=self.resources.intake_dlq_url, local_batch_url=self.batch_api.url,
                                    webhook_secret_arn=delivery.secret_arn, webhook_dlq_url=delivery.dlq_url,
                                    webhook_allow_local=True)
        settings.check()
        self.settings = settings
        child_env = self.child_environment()
        self.batch.configure(settings=settings, base_env=child_env)

        def runtime(name: str, handler: str, **kwargs: Any) -> LambdaRuntime:
            function_name = f"{settings.app_name}-{name}"
            environment = {**child_env, "POWERTOOLS_SERVICE_NAME": f"upscaler-{name}"}
            if faults:
                environment[ENDPOINT_ENV] = faults.endpoint_for(function_name, name)
            self._runtimes[name] = LambdaRuntime(function_name=function_name, handler=handler,
                                                 environment=environment, region=settings.region,
                                                 log=self._file_log(), **kwargs)
            return self._runtimes[name]

        intake = runtime("intake", cfg.intake_handler, concurrency=shape.intake_concurrency,
                         timeout_seconds=cfg.intake_timeout_seconds or shape.intake_timeout_seconds)
        notifier = runtime("notifier", cfg.notifier_handler, concurrency=1)
        # One at a time here; deployed runs may overlap, which the conditional slot writes make safe.
        runtime("scaler", cfg.scaler_handler, concurrency=1)
        webhooks = runtime("webhooks", WEBHOOKS_HANDLER, concurrency=1)
        api = runtime("api", cfg.api_handler, concurrency=2)  # the HTTP API's function (local_stack.api_server)
        if cfg.sweeper_handler:
            runtime("sweeper", cfg.sweeper_handler, concurrency=1)
        # Cold starts before traffic; import errors surface.
        with ThreadPoolExecutor(max_workers=len(self._runtimes)) as warmer:
            for future in [warmer.submit(r.warm) for r in self._runtimes.values()]:
                future.result()

        key_pem, cert_pem = generate_signing_identity("sns.local")
        self.sns_endpoint = SnsEndpoint(certificate_pem=cert_pem)
        self.sns_endpoint.start()
        self.webhooks = WebhookDelivery(
            sqs=aws.client("sqs", settings), sns=aws.client("sns", settings), topic_arn=settings.topic_arn,
            app_name=settings.app_name, public_url=self.sns_endpoint.url,
            signing_cert_url=self.sns_endpoint.cert_url, private_key_pem=key_pem, policy=cfg.delivery_policy,
        )
        self.sns_endpoint.delivery = self.webhooks
        self.api_server = self._api_server(api, settings)

        sqs = aws.client("sqs", settings)
        self.intake = SqsEventSourceMapping(
            sqs=sqs, queue_url=self.resources.intake_queue_url, queue_arn=self.resources.intake_queue_arn,
            region=settings.region, invoke=intake.invoke, config=cfg.mapping or shape.mapping, name="intake",
            tap=faults.on_intake_messages if faults else None)
        self.dead_items = SqsEventSourceMapping(
            sqs=sqs, queue_url=self.resources.work_dlq_url, queue_arn=self.resources.work_dlq_arn,
            region=settings.region, invoke=notifier.invoke, config=DLQ_MAPPING, name="work-dlq")
        self.webhook_delivery = SqsEventSourceMapping(
            sqs=sqs, queue_url=delivery.queue_url, queue_arn=delivery.queue_arn, region=settings.region,
            invoke=webhooks.invoke, config=DELIVERY_MAPPING, name="webhook-delivery")
        self.intake.start()
        self.dead_items.start()
        self.webhook_delivery.start()
        self.batch.start()
        self._schedule_stop.clear()
        self._schedule("scaler", cfg.scaler_interval_seconds)
        if cfg.sweeper_handler:
            self._schedule("sweeper", cfg.sweeper_interval_seconds)
        for url in cfg.webhooks:
            self.subscribe_webhook(url, cfg.filter_policy)
        if faults:
            from local_stack.faults.injector import LocalStackControls

            faults.bind(LocalStackControls(self))

    def stop(self) -> None:
        """Stop the pollers and workers, then the Lambda processes, then the emulator; idempotent."""
        self._schedule_stop.set()
        for schedule in self._schedules:
            schedule.join(10)
        stopping: list[Callable[[], None]] = [m.stop for m in (self.intake, self.dead_items, self.webhook_delivery)
                                              if m]
        if self.batch:
            stopping.append(self.batch.stop)
        if self.batch_api:
            stopping.append(self.batch_api.stop)
        if self.webhooks:
            stopping.append(self.webhooks.close)
        if self.sns_endpoint:
            stopping.append(self.sns_endpoint.stop)
        if self.api_server:
            stopping.append(self.api_server.stop)
        with ThreadPoolExecutor(max_workers=len(stopping) or 1) as pool:  # each waits out a long poll: together
            for future in [pool.submit(stop) for stop in stopping]:
                future.result()
        with ThreadPoolExecutor(max_workers=max(1, len(self._runtimes))) as closing:
            list(closing.map(LambdaRuntime.close, self._runtimes.values()))
        self._runtimes = {}
        if self.config.faults:
            self.config.faults.close()
        self.intake = self.dead_items = self.webhook_delivery = None
        self.batch = self.webhooks = self.sns_endpoint = self.batch_api = None
        self.api_server = None
        self._schedules = []
        self.emulator.stop()
        for name in self._env_added:
            os.environ.pop(name, None)
        self._env_added = []

    # --- use -----------------------------------------------------------------------------
    def subscribe_webhook(self, url: str, filter_policy: Mapping[str, Any] | None = None) -> WebhookSubscription:
        if self.webhooks is None:
            raise RuntimeError("local stack not started")
        sub = self.webhooks.subscribe(url, filter_policy)
        self.webhook_subscriptions.append(sub)
        return sub

    def child_environment(self) -> dict[str, str]:
        """What a Lambda or a Batch container would see: settings, region, credentials (+ PATH, HOME...)."""
        assert self.settings is not None
        inherited = {k: v for k, v in os.environ.items()
                     if not k.startswith(("UPSCALER_", "AWS_")) and k not in ("PYTHONSTARTUP",)}
        return {
            **inherited,
            **self.settings.to_env(),
            **DUMMY_CREDENTIALS,
            "AWS_REGION": self.settings.region,
            "AWS_DEFAULT_REGION": self.settings.region,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_LOG_LEVEL": self.settings.log_level,
        }

    def info(self) -> dict[str, Any]:
        """The one JSON line `upscaler local up` prints: everything a client needs."""
        assert self.settings is not None and self.resources is not None and self.sns_endpoint is not None
        assert self.delivery_resources is not None and self.api_server is not None
        s, r, d = self.settings, self.resources, self.delivery_resources
        return {
            "api_url": self.api_server.url,
            "endpoint_url": s.endpoint_url,
            "region": s.region,
            "input_bucket": s.input_bucket,
            "output_bucket": s.output_bucket,
            "upload_prefix": s.upload_prefix,
            "output_prefix": s.output_prefix,
            "rejected_prefix": s.rejected_prefix,
            "topic_arn": s.topic_arn,
            "jobs_table": s.jobs_table,
            "intake_queue_url": r.intake_queue_url,
            "intake_dlq_url": r.intake_dlq_url,
            "work_queue_url": r.work_queue_url,
            "work_dlq_url": r.work_dlq_url,
            "batch_api_url": s.local_batch_url,
            "max_workers": self.config.workers,
            "batch_delay": self.config.batch_delay,
            "webhooks": [{"endpoint": w.endpoint, "subscription_arn": w.arn} for w in self.webhook_subscriptions],
            "signing_cert_url": self.sns_endpoint.cert_url,
            "webhook_secret": d.secret,  # per-request webhooks are signed with it (docs/webhooks.md)
            "webhook_queue_url": d.queue_url,
            "webhook_dlq_url": d.dlq_url,
            "credentials": "any, e.g. AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local",
        }

    def _api_server(self, api: LambdaRuntime, settings: Settings) -> LocalApiServer:
        """The HTTP API and the page on 127.0.0.1; callers sign with the local stack's own secret key."""
        assert settings.endpoint_url is not None
        secret = DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
        page = {"api_url": "", "auth": "sigv4", "region": settings.region,  # the page's own origin serves the API
                "credentials": {"accessKeyId": DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"], "secretAccessKey": secret}}
        return LocalApiServer(invoke=api.invoke, region=settings.region, secret_for=lambda _key: secret,
                              web_root=WEB_ROOT, web_config=page, connect_sources=(settings.endpoint_url,),
                              port=self.config.api_port).start()

    def _file_log(self) -> IO[str] | None:
        stream = self.config.log_stream
        try:
            return stream if stream is not None and stream.fileno() >= 0 else None
        except (OSError, ValueError):  # not backed by a file (e.g. io.StringIO): inherit stderr
            return None

    def dlq_depth(self, *, work: bool = False) -> int:
        """Messages in the intake DLQ (or, with work=True, the work DLQ), visible or in flight."""
        assert self.settings is not None and self.resources is not None
        url = self.resources.work_dlq_url if work else self.resources.intake_dlq_url
        return queue_depth(aws.client("sqs", self.settings), url)

    def scale_now(self) -> Any:
        """Invoke the scaler as its schedule would (tests use it instead of waiting for the period)."""
        return self.invoke_scheduled("scaler")

    def invoke_scheduled(self, function: str) -> Any:
        """Invoke `function` ("scaler", "sweeper") with the event its EventBridge schedule sends."""
        return self._runtimes[function].invoke(_scheduled_event(self.settings.region if self.settings
                                                                else "us-east-1"))

    def invocations_in_flight(self) -> int:
        """Lambda invocations running now, over every function."""
        return sum(r.in_flight for r in self._runtimes.values())

    def _schedule(self, function: str, interval: float) -> None:
        def run() -> None:
            while not self._schedule_stop.wait(interval):
                try:
                    self.invoke_scheduled(function)
                except Exception:
                    log.warning("scheduled %s invocation failed", function, exc_info=True)

        thread = threading.Thread(target=run, name=f"{function}-schedule", daemon=True)
        thread.start()
        self._schedules.append(thread)

    def deliver_to_scaler(self, event: dict[str, Any]) -> None:
        """EventBridge rules "worker job ended" and "spot interruption warning" -> scaler Lambda, with
        EventBridge's retry of failed invocations."""
        for attempt in range(1, self.config.scaler_attempts + 1):
            if self._schedule_stop.is_set():
                return
            try:
                self._runtimes["scaler"].invoke(event)
                return
            except Exception as exc:
                if attempt == self.config.scaler_attempts:
                    raise
                log.warning("scaler invocation failed (attempt %d): %s", attempt, exc)
                self._schedule_stop.wait(attempt)


def queue_depth(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def _scheduled_event(region: str) -> dict[str, Any]:
    """EventBridge's "Scheduled Event" as a rate() rule delivers it."""
    return eventbridge_event("Scheduled Event", "aws.events", region, [], {})


def _upscaler_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("UPSCALER_")}
