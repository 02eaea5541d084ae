"""Alarms that mean "someone should look" and one dashboard for the whole pipeline.

Alarms: any dead-letter queue not empty (intake, notifier events, each webhook), failed Batch jobs
above a threshold per hour (counted by the FAILED EventBridge rule), Lambda errors, and an intake
backlog older than 15 minutes. They publish to an encrypted alarm topic (optional e-mail).
"""

from __future__ import annotations

from collections.abc import Mapping

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_events as events
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

FIVE_MINUTES = Duration.minutes(5)
FAILED_JOBS_PER_HOUR_THRESHOLD = 5  # permanent failures (undecodable images) are expected now and then


class Monitoring(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, dashboard_name: str, key: kms.IKey,
                 alarm_email: str | None, dead_letter_queues: Mapping[str, sqs.IQueue],
                 functions: Mapping[str, lambda_.IFunction], intake_queue: sqs.IQueue,
                 failed_jobs_rule: events.IRule) -> None:
        super().__init__(scope, construct_id)
        self.alarm_topic = sns.Topic(self, "AlarmTopic", display_name="Upscaler alarms", master_key=key,
                                     enforce_ssl=True)
        if alarm_email:
            self.alarm_topic.add_subscription(subscriptions.EmailSubscription(alarm_email))
        action = cw_actions.SnsAction(self.alarm_topic)
        self.alarms: list[cloudwatch.Alarm] = []

        def alarm(construct_id: str, metric: cloudwatch.IMetric, threshold: float, description: str) -> None:
            created = metric.create_alarm(
                self, construct_id, threshold=threshold, evaluation_periods=1, alarm_description=description,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
            created.add_alarm_action(action)
            self.alarms.append(created)

        for name, queue in dead_letter_queues.items():
            alarm(f"{name}DlqNotEmpty", queue.metric_approximate_number_of_messages_visible(
                period=FIVE_MINUTES, statistic="Maximum"), 1, f"{name}: messages in the dead-letter queue")
        failed_jobs = cloudwatch.Metric(
            namespace="AWS/Events", metric_name="MatchedEvents",
            dimensions_map={"RuleName": failed_jobs_rule.rule_name},
            statistic="Sum", period=Duration.hours(1),
        )
        alarm("FailedJobs", failed_jobs, FAILED_JOBS_PER_HOUR_THRESHOLD,
              f"{FAILED_JOBS_PER_HOUR_THRESHOLD}+ Batch jobs FAILED within an hour")
        for name, function in functions.items():
            alarm(f"{name}Errors", function.metric_errors(period=FIVE_MINUTES, statistic="Sum"), 1,
                  f"{name} Lambda raised errors")
        backlog = intake_queue.metric_approximate_age_of_oldest_message(period=FIVE_MINUTES, statistic="Maximum")
        alarm("IntakeBacklog", backlog, 900, "The oldest upload waiting for intake is 15+ minutes old")

        self.dashboard = cloudwatch.Dashboard(self, "Dashboard", dashboard_name=dashboard_name)
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="Uploads queued / intake backlog (s)", width=12,
                                   left=[intake_queue.metric_number_of_messages_sent(period=FIVE_MINUTES)],
                                   right=[backlog]),
            cloudwatch.GraphWidget(title="Failed Batch jobs per hour", width=12, left=[failed_jobs]),
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
