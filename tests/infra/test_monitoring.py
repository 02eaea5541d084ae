"""Alarms (dead letters, work backlog, workers stuck RUNNABLE, Lambda errors), the dashboard, the outputs."""

from __future__ import annotations

from typing import Any


def _alarms(synth: Any) -> list[dict[str, Any]]:
    return [a["Properties"] for a in synth.resources("AWS::CloudWatch::Alarm").values()]


def _alarm_on(synth: Any, metric: str, dimension_ref: str) -> dict[str, Any]:
    (found,) = [a for a in _alarms(synth) if a["MetricName"] == metric
                and {"Ref": dimension_ref} in [d["Value"] for d in a["Dimensions"]]]
    return found


def test_every_dead_letter_queue_has_a_not_empty_alarm(default: Any, variant: Any) -> None:
    for synth in (default, variant):
        queues = [synth.stack.intake.dead_letter_queue, synth.stack.work.dead_letter_queue,
                  synth.stack.scaler.dead_letter_queue, *synth.stack.notifications.webhook_dlqs.values()]
        for queue in queues:
            dimension = {"Fn::GetAtt": [synth.logical_id(queue), "QueueName"]}
            (alarm,) = [a for a in _alarms(synth) if a["MetricName"] == "ApproximateNumberOfMessagesVisible"
                        and a["Dimensions"][0]["Value"] == dimension]
            assert alarm["Threshold"] == 1
            assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
        assert len(queues) == (3 if synth is default else 5)


def test_work_queue_alarms_backlog_dead_items_and_workers_stuck_runnable(default: Any) -> None:
    from infra.constructs.monitoring import WORK_BACKLOG_SECONDS, WORKER_START_ALARM_SECONDS

    queue_name = {"Fn::GetAtt": [default.logical_id(default.stack.work.queue), "QueueName"]}
    (backlog,) = [a for a in _alarms(default) if a["MetricName"] == "ApproximateAgeOfOldestMessage"
                  and a["Dimensions"][0]["Value"] == queue_name]
    assert backlog["Threshold"] == WORK_BACKLOG_SECONDS
    (stuck,) = [a for a in _alarms(default) if a.get("MetricName") == "WorkerStartWaitSeconds"]
    # the stack's own namespace: a second stack's scaler never feeds this alarm
    assert (stuck["Namespace"], stuck["Dimensions"]) == ("Upscaler/Upscaler", [{"Name": "service",
                                                                                "Value": "upscaler-scaler"}])
    for function in (default.stack.intake.function, default.stack.scaler.function):
        environment = default.raw["Resources"][default.logical_id(function)]["Properties"]["Environment"]["Variables"]
        assert environment["POWERTOOLS_METRICS_NAMESPACE"] == "Upscaler/Upscaler"
    assert stuck["Threshold"] == WORKER_START_ALARM_SECONDS and stuck["Period"] == 60
    assert default.config.settings.worker_start_grace_seconds > WORKER_START_ALARM_SECONDS  # fires before a retry


def test_lambda_error_alarms_notify_the_alarm_topic(default: Any) -> None:
    alarm_topic = {"Ref": default.logical_id(default.stack.monitoring.alarm_topic)}
    for function in (default.stack.intake.function, default.stack.notifier.function, default.stack.scaler.function):
        alarm = _alarm_on(default, "Errors", default.logical_id(function))
        assert alarm["Namespace"] == "AWS/Lambda" and alarm["Threshold"] == 1
    assert all(a["AlarmActions"] == [alarm_topic] for a in _alarms(default))


def test_alarm_email_is_subscribed_when_configured(default: Any, variant: Any) -> None:
    assert not [s for s in default.resources("AWS::SNS::Subscription").values()
                if s["Properties"]["Protocol"] == "email"]
    (email,) = [s["Properties"] for s in variant.resources("AWS::SNS::Subscription").values()
                if s["Properties"]["Protocol"] == "email"]
    assert email["Endpoint"] == variant.config.alarm_email


def test_dashboard_and_outputs_exist(default: Any) -> None:
    assert len(default.resources("AWS::CloudWatch::Dashboard")) == 1
    outputs = default.raw["Outputs"]
    assert {"InputBucketName", "OutputBucketName", "NotificationTopicArn", "JobsTableName", "JobQueueArn",
            "JobDefinitionArn", "UploadPrefix", "DashboardName", "AlarmTopicArn"} <= set(outputs)
    assert outputs["InputBucketName"]["Value"] == {"Ref": default.logical_id(default.stack.storage.input_bucket)}
    assert outputs["UploadPrefix"]["Value"] == default.config.settings.upload_prefix


def _rule_alarm(synth: Any, rule: Any) -> dict[str, Any]:
    (alarm,) = [a for a in _alarms(synth) if a["Namespace"] == "AWS/Events"
                and a["Dimensions"] == [{"Name": "RuleName", "Value": {"Ref": synth.logical_id(rule)}}]]
    assert alarm["MetricName"] == "TriggeredRules" and alarm["Statistic"] == "Sum"
    return alarm


def test_an_invalid_compute_environment_raises_an_alarm(default: Any) -> None:
    from infra.constructs.monitoring import INVALID_CE_REASON_PREFIX

    rule = default.raw["Resources"][default.logical_id(default.stack.monitoring.compute_environment_invalid)]
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.batch"] and pattern["detail-type"] == ["Batch Job Queue Blocked"]
    queue_arn = {"Fn::GetAtt": [default.logical_id(default.stack.gpu.job_queue), "JobQueueArn"]}
    assert pattern["detail"] == {"jobQueue": [queue_arn],
                                 "statusReason": [{"prefix": INVALID_CE_REASON_PREFIX}]}
    assert "Targets" not in rule["Properties"]  # counted by EventBridge's own metric, alarmed on below
    alarm = _rule_alarm(default, default.stack.monitoring.compute_environment_invalid)
    assert alarm["Threshold"] == 1 and alarm["Period"] == 300
    assert "INVALID" in alarm["AlarmDescription"]


def test_failed_worker_jobs_raise_an_alarm(default: Any) -> None:
    from infra.constructs.monitoring import FAILED_WORKERS_PER_HOUR

    rule = default.raw["Resources"][default.logical_id(default.stack.monitoring.worker_jobs_failed)]
    pattern = rule["Properties"]["EventPattern"]
    assert pattern["detail-type"] == ["Batch Job State Change"]
    assert pattern["detail"] == {"status": ["FAILED"],
                                 "jobQueue": [{"Fn::GetAtt": [default.logical_id(default.stack.gpu.job_queue),
                                                              "JobQueueArn"]}]}
    alarm = _rule_alarm(default, default.stack.monitoring.worker_jobs_failed)
    assert alarm["Threshold"] == FAILED_WORKERS_PER_HOUR and alarm["Period"] == 3600
