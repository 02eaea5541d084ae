"""The deployment config: cdk.json defaults, CLI string values, and clear failures for bad input."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common.presign import TASK_ROLE_CREDENTIAL_SECONDS
from common.settings import Settings
from infra.config import (
    POWERTOOLS_VERSION,
    REPO_ROOT,
    ConfigError,
    InfraConfig,
    Webhook,
    config_from_context,
    load_cdk_json_context,
)


def test_cdk_json_context_parses_and_matches_the_typed_defaults() -> None:
    config = config_from_context(load_cdk_json_context())
    defaults = InfraConfig()
    assert config.instance_types == defaults.instance_types
    assert config.max_vcpus == defaults.max_vcpus
    assert config.use_spot is True
    assert config.settings.max_attempts == Settings().max_attempts


def test_cli_strings_are_parsed_to_the_declared_types() -> None:
    config = config_from_context({
        "upscaler:max_vcpus": "32",
        "upscaler:use_spot": "true",
        "upscaler:on_demand_max_vcpus": "8",
        "upscaler:instance_types": "g5.xlarge,g6.xlarge",
        "upscaler:intake_reserved_concurrency": "null",
        "upscaler:max_upload_bytes": "1048576",
        "upscaler:accept_animated_first_frame": "true",
        "upscaler:webhooks": json.dumps([{"url": "https://a.example/x",
                                          "filter_policy": {"event_type": ["upscale.failed"]}}]),
    })
    assert config.max_vcpus == 32
    assert config.on_demand_environment
    assert config.instance_types == ("g5.xlarge", "g6.xlarge")
    assert config.intake_reserved_concurrency is None
    assert config.settings.max_upload_bytes == 1_048_576
    assert config.settings.accept_animated_first_frame is True
    assert config.webhooks == (Webhook(url="https://a.example/x", filter_policy={"event_type": ["upscale.failed"]}),)


def test_other_context_keys_are_ignored() -> None:
    assert config_from_context({"@aws-cdk/core:target-partitions": ["aws"], "cli-telemetry": False}) == InfraConfig()


@pytest.mark.parametrize(("context", "message"), [
    ({"upscaler:max_vcpu": 4}, "did you mean upscaler:max_vcpus"),
    ({"upscaler:input_bucket": "mine"}, "decided by the stack"),
    ({"upscaler:max_vcpus": "lots"}, "upscaler:max_vcpus='lots'"),
    ({"upscaler:use_spot": "maybe"}, "expected true or false"),
    ({"upscaler:instance_types": ["m5.xlarge"]}, "not an NVIDIA GPU"),
    ({"upscaler:instance_types": ["g4ad.xlarge"]}, "not an NVIDIA GPU"),
    ({"upscaler:max_vcpus": 2}, "at least one job"),
    ({"upscaler:use_spot": False, "upscaler:on_demand_max_vcpus": 8}, "only adds on-demand capacity"),
    ({"upscaler:egress": "internet"}, "'endpoints' or 'nat'"),
    ({"upscaler:instance_types": ["p3.2xlarge"]}, "cannot run p3/p3dn (V100)"),
    ({"upscaler:instance_types": ["g5.xlarge", "p3dn.24xlarge"]}, "cannot run p3/p3dn (V100)"),
    ({"upscaler:intake_reserved_concurrency": 0}, "must be null (no reservation) or at least intake_max_concurrency"),
    ({"upscaler:intake_reserved_concurrency": 4}, "fewer throttles the SQS poller"),
    ({"upscaler:intake_max_concurrency": 1}, "within 2..1000"),
    ({"upscaler:intake_max_concurrency": 20, "upscaler:intake_reserved_concurrency": 10}, "(20)"),
    ({"upscaler:powertools_version": "latest"}, "never 'latest'"),
    ({"upscaler:presigned_url_expiry_seconds": 86400}, "at most 21600 (6 h) on AWS"),
    ({"upscaler:intake_batch_size": 100, "upscaler:intake_batch_window_seconds": 0}, "at least 1 when"),
    ({"upscaler:log_retention_days": 10}, "CloudWatch's values"),
    ({"upscaler:vpc_id": "my-vpc"}, "vpc-0123"),
    ({"upscaler:upload_prefix": "/uploads"}, "upload_prefix must end with '/'"),
    ({"upscaler:max_attempts": 200}, "max_attempts"),
    ({"upscaler:max_receives": 2000}, "1..1000"),
    ({"upscaler:worker_idle_seconds": 5}, "at least 20"),
    ({"upscaler:worker_max_seconds": 30, "upscaler:worker_idle_seconds": 60}, "at least worker_idle_seconds"),
    ({"upscaler:log_level": "LOUD"}, "use DEBUG, INFO"),
    ({"upscaler:webhooks": ["http://plain.example/hook"]}, "https://"),
    ({"upscaler:webhooks": [{"url": "https://a.example", "filter_policy": {"colour": ["red"]}}]},
     "unknown message attribute 'colour'"),
    ({"upscaler:webhooks": [{"url": "https://a.example", "filter_policy": {"event_type": ["upscale.done"]}}]},
     "unknown event types ['upscale.done']"),
    ({"upscaler:webhooks": ["https://a.example", "https://a.example"]}, "subscribed twice"),
    ({"upscaler:webhooks": [{"url": "https://a.example", "headers": {}}]}, "each webhook is a URL"),
    # what `-c key=value` gets wrong most: the key named, and what it expects
    ({"upscaler:max_vcpus": "lots"}, "upscaler:max_vcpus='lots': expected an integer"),
    ({"upscaler:max_attempts": "x"}, "upscaler:max_attempts='x': expected an integer"),
    ({"upscaler:default_scale": "big"}, "upscaler:default_scale='big': expected a number"),
    ({"upscaler:webhooks": "[not json"}, "upscaler:webhooks='[not json': expected a JSON list"),
])
def test_invalid_config_fails_with_a_message_naming_the_problem(context: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config_from_context(context)
    assert message in str(raised.value)


def test_the_cdk_app_fails_synth_with_a_clear_message(tmp_path: Path) -> None:
    """The app as the CLI runs it: context in CDK_CONTEXT_JSON, exit 1 and one readable line."""
    env = {**os.environ, "CDK_CONTEXT_JSON": json.dumps({"upscaler:egress": "internet"}),
           "CDK_OUTDIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "infra.app"], cwd=REPO_ROOT, env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert "Invalid upscaler configuration: upscaler:egress='internet': must be 'endpoints' or 'nat'" in result.stderr
    assert "Traceback" not in result.stderr


def test_new_accounts_deploy_with_the_defaults_no_reservation_and_links_that_keep_their_promise() -> None:
    config = config_from_context(load_cdk_json_context())
    assert config.intake_reserved_concurrency is None and InfraConfig().intake_reserved_concurrency is None
    assert config.intake_max_concurrency == 5
    # The promised link lifetime fits the job role's credentials (common.presign); so does the default.
    assert config.settings.presigned_url_expiry_seconds <= TASK_ROLE_CREDENTIAL_SECONDS
    assert Settings().presigned_url_expiry_seconds <= TASK_ROLE_CREDENTIAL_SECONDS


def test_a_reservation_at_least_the_event_source_maximum_is_accepted() -> None:
    config = config_from_context({"upscaler:intake_max_concurrency": "10",
                                  "upscaler:intake_reserved_concurrency": "10"})
    assert (config.intake_max_concurrency, config.intake_reserved_concurrency) == (10, 10)


def test_supported_gpu_families_are_accepted() -> None:
    types = ("g4dn.xlarge", "g5.12xlarge", "g6.xlarge", "g6e.2xlarge", "p4d.24xlarge", "p5.48xlarge")
    assert config_from_context({"upscaler:instance_types": ",".join(types)}).instance_types == types


def test_the_pinned_powertools_layer_is_the_release_the_code_is_tested_with() -> None:
    assert InfraConfig().powertools_version == POWERTOOLS_VERSION
    assert md.version("aws-lambda-powertools") == POWERTOOLS_VERSION
