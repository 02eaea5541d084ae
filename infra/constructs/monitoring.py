"""Alarms that mean "someone should look" and one dashboard for the whole pipeline.

Alarms: any dead-letter queue not empty (intake, work items that kept killing their worker, scaler
events, each webhook), Lambda errors, an intake backlog older than 15 minutes, a work item waiting
longer than WORK_BACKLOG_SECONDS, a worker job waiting for a GPU longer than WORKER_START_ALARM_SECONDS
(no GPU quota, no spot capacity: Batch leaves the job RUNNABLE), the job queue blocked because its
compute environments are INVALID, and FAILED_WORKERS_PER_HOUR worker jobs failing within an hour. The
last two count events of EventBridge rules without targets (AWS/Events TriggeredRules per rule). They
publish to an encrypted alarm topic, which reaches nobody unless `alarm_email` (or a subscription of
your own) is set: `upscaler doctor` and docs/deploy.md say so.
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_batch as batch
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.constructs.notifications import cloudwatch_alarm_source

FIVE_MINUTES = Duration.minutes(5)
WORK_BACKLOG_SECONDS = 1800  # an item older than this: workers cannot keep up, or none can start
WORKER_START_ALARM_SECONDS = 600  # GPU instances normally start within a few minutes
# A worker that dies loses no item, but several in an hour mean a crashing image, OOM or lost hosts.
FAILED_WORKERS_PER_HOUR = 3
# The statusReason of a job blocked because every compute environment of its queue is INVALID
# (https://docs.aws.amazon.com/batch/latest/userguide/job_stuck_in_runnable_invalid_ce.html).
INVALID_CE_REASON_PREFIX = "ACTION_REQUIRED"


class Monitoring(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, dashboard_name: str, key: kms.IKey,
                 alarm_email: str | None, dead_letter_queues: Mapping[str, sqs.IQueue],
                 functions: Mapping[str, lambda_.IFunction], intake_queue: sqs.IQueue, work_queue: sqs.IQueue,
                 worker_start_wait: cloudwatch.IMetric, live_workers: cloudwatch.IMetric,
                 job_queue: batch.IJobQueue) -> None:
        super().__init__(scope, construct_id)
        self.alarm_topic = sns.Topic(self, "AlarmTopic", display_name="Upscaler alarms", master_key=key,
                                     enforce_ssl=True)
        # The topic policy (TLS-only deny) replaces SNS's default one: CloudWatch needs its own allow.
        self.alarm_topic.add_to_resource_policy(iam.PolicyStatement(
            sid="CloudWatchAlarmsPublish", actions=["sns:Publish"],
            principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
            resources=[self.alarm_topic.topic_arn], conditions=cloudwatch_alarm_source(self),
        ))
        if alarm_email:
            self.alarm_topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        action = cw_actions.SnsAction(self.alarm_topic)
        self.alarms: list[cloudwatch.Alarm] = []

        def alarm(construct_id: str, metric: cloudwatch.IMetric, threshold: float, description: str) -> None:
            created = cloudwatch.Alarm(  # = metric.create_alarm, which the IMetric interface lacks
                self, construct_id, metric=metric, threshold=threshold, evaluation_periods=1,
                alarm_description=description,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            created.add_alarm_action(action)
            self.alarms.append(created)

        for name, queue in dead_letter_queues.items():
            alarm(f"{name}DlqNotEmpty", queue.metric_approximate_number_of_messages_visible(
                period=FIVE_MINUTES, statistic="Maximum"), 1, f"{name}: messages in the dead-letter queue")
        for name, function in functions.items():
            alarm(f"{name}Errors", function.metric_errors(period=FIVE_MINUTES, statistic="Sum"), 1,
                  f"{name} Lambda raised errors")
        backlog = intake_queue.metric_approximate_age_of_oldest_message(period=FIVE_MINUTES, statistic="Maximum")
        alarm("IntakeBacklog", backlog, 900, "The oldest upload waiting for intake is 15+ minutes old")
        work_age = work_queue.metric_approximate_age_of_oldest_message(period=FIVE_MINUTES, statistic="Maximum")
        alarm("WorkBacklog", work_age, WORK_BACKLOG_SECONDS,
              f"The oldest work item has waited {WORK_BACKLOG_SECONDS // 60}+ minutes for a GPU worker")
        alarm("WorkersStuckRunnable", worker_start_wait, WORKER_START_ALARM_SECONDS,
              f"A GPU worker job has waited {WORKER_START_ALARM_SECONDS // 60}+ minutes to be placed: check the "
              "G-instance (spot) vCPU quota and capacity (`upscaler doctor`)")
        self.compute_environment_invalid = events.Rule(
            self, "ComputeEnvironmentInvalidRule", description="The GPU job queue is blocked: its compute "
                                                               "environments are INVALID",
            event_pattern=events.EventPattern(
                source=["aws.batch"], detail_type=["Batch Job Queue Blocked"],
                detail={"jobQueue": [job_queue.job_queue_arn],
                        "statusReason": events.Match.prefix(INVALID_CE_REASON_PREFIX)}))
        alarm("ComputeEnvironmentInvalid", rule_matches(self.compute_environment_invalid, FIVE_MINUTES), 1,
              "The GPU compute environments are INVALID: no worker can start (Batch console: the compute "
              "environment's status reason, e.g. a missing service-linked role or launch template)")
        self.worker_jobs_failed = events.Rule(
            self, "WorkerJobsFailedRule", description="A worker job of the GPU job queue FAILED",
            event_pattern=events.EventPattern(
                source=["aws.batch"], detail_type=["Batch Job State Change"],
                detail={"status": ["FAILED"], "jobQueue": [job_queue.job_queue_arn]}))
        alarm("WorkerJobsFailed", rule_matches(self.worker_jobs_failed, Duration.hours(1)), FAILED_WORKERS_PER_HOUR,
              f"{FAILED_WORKERS_PER_HOUR}+ GPU worker jobs FAILED within an hour (their items went back to the "
              "work queue): see the worker log group and the jobs' status reasons")

        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=dashboard_name)
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Uploads queued / intake backlog (s)", width=12,
                                   left=[intake_queue.metric_number_of_messages_sent(period=FIVE_MINUTES)],
                                   right=[backlog]),
            cloudwatch.GraphWidget(title="Work items waiting / oldest (s)", width=12,
                                   left=[work_queue.metric_approximate_number_of_messages_visible(
                                       period=FIVE_MINUTES, statistic="Maximum")], right=[work_age]),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="GPU workers live / longest wait for a GPU (s)", width=12,
                                   left=[live_workers], right=[worker_start_wait]),
        )
        self.dashboard.add_widgets(*[
            cloudwatch.GraphWidget(
                title=f"{name} Lambda", width=12,
                left=[function.metric_invocations(period=FIVE_MINUTES), function.metric_errors(period=FIVE_MINUTES),
                      function.metric_throttles(period=FIVE_MINUTES)],
                right=[function.metric_duration(period=FIVE_MINUTES, statistic="p95")],
            )
            for name, function in functions.items()
        ])
        self.dashboard.add_widgets(cloudwatch.AlarmStatusWidget(title="Alarms", width=24, alarms=self.alarms))


def rule_matches(rule: events.IRule, period: Duration) -> cloudwatch.Metric:
    """Events an EventBridge rule on the default bus matched (it needs no target to count them)."""
    return cloudwatch.Metric(namespace="AWS/Events", metric_name="TriggeredRules",
                             dimensions_map={"RuleName": rule.rule_name}, statistic="Sum", period=period)
