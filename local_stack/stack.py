"""The whole pipeline on one machine: emulator, intake event source, job queue, notifier, webhooks."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import IO, Any

from common import aws
from common.settings import Settings
from local_stack.emulator import MotoServer
from local_stack.event_source import MappingConfig, SqsEventSourceMapping
from local_stack.job_queue import LocalJobQueue
from local_stack.lambda_runtime import LambdaRuntime
from local_stack.resources import QueueConfig, StackResources, create_resources
from local_stack.sns_endpoint import SnsEndpoint
from local_stack.webhooks import DeliveryPolicy, WebhookDelivery, WebhookSubscription
from local_stack.worker_launch import PreforkLauncher, SpawnLauncher, WorkerLauncher
from sns_webhook.sign import generate_signing_identity

log = logging.getLogger(__name__)

INTAKE_HANDLER = "functions.intake.handler:lambda_handler"
NOTIFIER_HANDLER = "functions.notifier.handler:lambda_handler"
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
        # As infra/constructs/intake.py: 6 x the function timeout plus the batching window; 4 days' retention.
        queue=QueueConfig(visibility_timeout_seconds=6 * config.intake_timeout_seconds
                          + config.intake_batch_window_seconds,
                          max_receive_count=config.intake_max_receive_count),
        intake_concurrency=concurrency,
        intake_timeout_seconds=config.intake_timeout_seconds,
        settings=config.settings,
    )


@dataclass(frozen=True)
class LocalStackConfig:
    workers: int = 2
    port: int = 0  # emulator port; 0 = a free one
    webhooks: tuple[str, ...] = ()
    filter_policy: Mapping[str, Any] | None = None  # applied to `webhooks`
    delivery_policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    mapping: MappingConfig | None = None  # None: as deployed (cdk.json)
    queue: QueueConfig | None = None  # None: as deployed
    settings_overrides: Mapping[str, Any] = field(default_factory=dict)
    intake_handler: str = INTAKE_HANDLER
    notifier_handler: str = NOTIFIER_HANDLER
    notifier_attempts: int = 3  # EventBridge retries a failed target invocation
    # "prefork": each attempt is a fresh process forked from a warm template (local_stack.worker_zygote);
    # "spawn": `python -m gpu_batch.worker` from scratch, exactly the container's command (~1 s more a job).
    worker_start: str = "prefork"
    log_stream: IO[str] | None = None  # worker and Lambda logs; default stderr


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
        self.jobs: LocalJobQueue | None = None
        self.webhook_subscriptions: list[WebhookSubscription] = []
        self._runtimes: list[LambdaRuntime] = []
        self._launcher: WorkerLauncher | None = None
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
        base = Settings.from_env({**shape.settings.to_env(), **_upscaler_env(os.environ)})
        settings = base.replace(endpoint_url=endpoint_url, job_backend="local", **cfg.settings_overrides)
        self.resources = create_resources(settings, cfg.queue or shape.queue)
        settings = settings.replace(topic_arn=self.resources.topic_arn,
                                    local_job_queue_url=self.resources.job_queue_url)
        settings.check()
        self.settings = settings
        child_env = self.child_environment()

        intake = LambdaRuntime(function_name=f"{settings.app_name}-intake", handler=cfg.intake_handler,
                               environment={**child_env, "POWERTOOLS_SERVICE_NAME": "upscaler-intake"},
                               region=settings.region, concurrency=shape.intake_concurrency,
                               timeout_seconds=shape.intake_timeout_seconds, log=self._file_log())
        notifier = LambdaRuntime(function_name=f"{settings.app_name}-notifier", handler=cfg.notifier_handler,
                                 environment={**child_env, "POWERTOOLS_SERVICE_NAME": "upscaler-notifier"},
                                 region=settings.region, concurrency=1, log=self._file_log())
        self._runtimes = [intake, notifier]
        launcher: WorkerLauncher
        if cfg.worker_start == "prefork":
            launcher = PreforkLauncher(env=child_env, slots=cfg.workers, log=self._file_log())
        elif cfg.worker_start == "spawn":
            launcher = SpawnLauncher()
        else:
            raise ValueError(f"worker_start must be 'prefork' or 'spawn', got {cfg.worker_start!r}")
        self._launcher = launcher
        warmer = ThreadPoolExecutor(max_workers=3)
        warming = [warmer.submit(intake.warm), warmer.submit(notifier.warm)]  # cold starts, before traffic
        if isinstance(launcher, PreforkLauncher):
            warming += [warmer.submit(launcher.warm) for _ in range(cfg.workers)]

        key_pem, cert_pem = generate_signing_identity("sns.local")
        self.sns_endpoint = SnsEndpoint(certificate_pem=cert_pem)
        self.sns_endpoint.start()
        self.webhooks = WebhookDelivery(
            sqs=aws.client("sqs", settings), sns=aws.client("sns", settings), topic_arn=settings.topic_arn,
            app_name=settings.app_name, public_url=self.sns_endpoint.url,
            signing_cert_url=self.sns_endpoint.cert_url, private_key_pem=key_pem, policy=cfg.delivery_policy,
        )
        self.sns_endpoint.delivery = self.webhooks

        for future in warming:  # import errors surface here
            future.result()
        warmer.shutdown()

        self.intake = SqsEventSourceMapping(
            sqs=aws.client("sqs", settings), queue_url=self.resources.intake_queue_url,
            queue_arn=self.resources.intake_queue_arn, region=settings.region, invoke=intake.invoke,
            config=cfg.mapping or shape.mapping, name="intake",
        )
        self.jobs = LocalJobQueue(
            sqs=aws.client("sqs", settings), queue_url=self.resources.job_queue_url, settings=settings,
            base_env=child_env, workers=cfg.workers, on_failed=self._deliver_batch_event,
            log_stream=cfg.log_stream, launcher=launcher,
        )
        self.intake.start()
        self.jobs.start()
        for url in cfg.webhooks:
            self.subscribe_webhook(url, cfg.filter_policy)

    def stop(self) -> None:
        """Stop the pollers and workers, then the Lambda processes, then the emulator; idempotent."""
        stopping: list[Callable[[], None]] = []
        if self.intake:
            stopping.append(self.intake.stop)
        if self.jobs:
            stopping.append(self.jobs.stop)  # also closes the launcher
        elif self._launcher is not None:
            stopping.append(self._launcher.close)
        if self.webhooks:
            stopping.append(self.webhooks.close)
        with ThreadPoolExecutor(max_workers=3) as pool:  # each waits out a long poll: wait once, together
            for future in [pool.submit(stop) for stop in stopping]:
                future.result()
        self._launcher = None
        if self.sns_endpoint:
            self.sns_endpoint.stop()
        with ThreadPoolExecutor(max_workers=max(1, len(self._runtimes))) as closing:
            list(closing.map(LambdaRuntime.close, self._runtimes))
        self._runtimes = []
        self.intake = self.jobs = self.webhooks = self.sns_endpoint = None
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
        s, r = self.settings, self.resources
        return {
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
            "job_queue_url": r.job_queue_url,
            "workers": self.config.workers,
            "webhooks": [{"endpoint": w.endpoint, "subscription_arn": w.arn} for w in self.webhook_subscriptions],
            "signing_cert_url": self.sns_endpoint.cert_url,
            "credentials": "any, e.g. AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local",
        }

    def _file_log(self) -> IO[str] | None:
        stream = self.config.log_stream
        try:
            return stream if stream is not None and stream.fileno() >= 0 else None
        except (OSError, ValueError):  # not backed by a file (e.g. io.StringIO): inherit stderr
            return None

    def dlq_depth(self) -> int:
        assert self.settings is not None and self.resources is not None
        attrs = aws.client("sqs", self.settings).get_queue_attributes(
            QueueUrl=self.resources.intake_dlq_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

    def _deliver_batch_event(self, event: dict[str, Any]) -> None:
        """EventBridge rule -> notifier Lambda, with EventBridge's retry of failed invocations."""
        runtime = self._runtimes[1]
        for attempt in range(1, self.config.notifier_attempts + 1):
            try:
                runtime.invoke(event)
                return
            except Exception as exc:
                if attempt == self.config.notifier_attempts:
                    raise
                log.warning("notifier invocation failed (attempt %d): %s", attempt, exc)
                time.sleep(attempt)


def _upscaler_env(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("UPSCALER_")}
