"""The GPU workers' network: private subnets, flow logs, endpoints (with policies) instead of a NAT by default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aws_cdk import App, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs

from infra.config import InfraConfig
from infra.constructs.network import INTERFACE_ENDPOINTS, SQS_ENDPOINT, EndpointTargets, Network


def test_default_network_has_no_internet_path_and_reaches_aws_through_endpoints(default: Any) -> None:
    assert not default.resources("AWS::EC2::NatGateway")
    assert not default.resources("AWS::EC2::InternetGateway")
    subnets = default.resources("AWS::EC2::Subnet").values()
    assert subnets and all(s["Properties"]["MapPublicIpOnLaunch"] is False for s in subnets)
    endpoints = [e["Properties"] for e in default.resources("AWS::EC2::VPCEndpoint").values()]
    gateways = [e for e in endpoints if e.get("VpcEndpointType") == "Gateway"]
    interfaces = [e for e in endpoints if e.get("VpcEndpointType") == "Interface"]
    assert len(gateways) == 2  # S3 (also ECR layers) and DynamoDB
    assert len(interfaces) == len(INTERFACE_ENDPOINTS) + 1  # + SQS: the workers drain the work queue
    assert all(e["PrivateDnsEnabled"] is True for e in interfaces)


def test_nat_egress_uses_exactly_one_nat_gateway(variant: Any) -> None:
    assert len(variant.resources("AWS::EC2::NatGateway")) == 1
    assert not [e for e in variant.resources("AWS::EC2::VPCEndpoint").values()
                if e["Properties"].get("VpcEndpointType") == "Interface"]


def test_vpc_flow_logs_are_on(default: Any) -> None:
    flow_log = default.one("AWS::EC2::FlowLog")
    assert flow_log["TrafficType"] == "ALL"
    assert flow_log["LogDestinationType"] == "cloud-watch-logs"


def _worker_group_rules(synth: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The worker security group's properties and every egress rule it has (inline or separate)."""
    group_id = synth.logical_id(synth.stack.network.worker_security_group)
    group = synth.raw["Resources"][group_id]["Properties"]
    separate = [r["Properties"] for r in synth.resources("AWS::EC2::SecurityGroupEgress").values()
                if r["Properties"]["GroupId"] == {"Fn::GetAtt": [group_id, "GroupId"]}]
    return group, [*group.get("SecurityGroupEgress", []), *separate]


def test_workers_send_https_only_to_the_endpoints_and_gateway_prefix_lists(default: Any) -> None:
    network = default.stack.network
    group, egress = _worker_group_rules(default)
    assert "SecurityGroupIngress" not in group
    assert all((r["IpProtocol"], r["FromPort"], r["ToPort"]) == ("tcp", 443, 443) for r in egress)
    assert not [r for r in egress if "CidrIp" in r or "CidrIpv6" in r]  # no 0.0.0.0/0, no address ranges
    endpoint_group = {"Fn::GetAtt": [default.logical_id(network.endpoint_security_group), "GroupId"]}
    assert [r["DestinationSecurityGroupId"] for r in egress if "DestinationSecurityGroupId" in r] == [endpoint_group]
    prefix_lists = [r["DestinationPrefixListId"] for r in egress if "DestinationPrefixListId" in r]
    assert len(prefix_lists) == 2  # S3 and DynamoDB, looked up at deploy time
    lookups = {json.dumps(r["Properties"]["Create"]) for r in default.resources("Custom::AWS").values()}
    assert any("com.amazonaws." in text and ".s3" in text for text in lookups)
    assert any(".dynamodb" in text for text in lookups)
    # The interface endpoints accept HTTPS from the workers only.
    (ingress,) = [r["Properties"] for r in default.resources("AWS::EC2::SecurityGroupIngress").values()
                  if r["Properties"]["GroupId"] == endpoint_group]
    assert ingress["SourceSecurityGroupId"] == {
        "Fn::GetAtt": [default.logical_id(network.worker_security_group), "GroupId"]}
    assert (ingress["FromPort"], ingress["ToPort"]) == (443, 443)


def test_with_nat_egress_workers_send_https_anywhere(variant: Any) -> None:
    _, egress = _worker_group_rules(variant)
    assert [(r.get("CidrIp"), r["FromPort"]) for r in egress] == [("0.0.0.0/0", 443)]


def test_the_vpc_default_security_group_is_stripped(default: Any, variant: Any) -> None:
    for synth in (default, variant):
        (restrict,) = synth.resources("Custom::VpcRestrictDefaultSG").values()
        assert restrict["Properties"]["DefaultSecurityGroupId"] == {
            "Fn::GetAtt": [synth.logical_id(synth.stack.network.vpc), "DefaultSecurityGroup"]}


def _endpoint_policy(synth: Any, endpoint: Any) -> list[dict[str, Any]]:
    return synth.raw["Resources"][synth.logical_id(endpoint)]["Properties"]["PolicyDocument"]["Statement"]


def _resources(statements: list[dict[str, Any]]) -> list[Any]:
    found: list[Any] = []
    for statement in statements:
        assert statement["Effect"] == "Allow" and statement["Principal"] == {"AWS": "*"}
        found.extend(statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]])
    return found


def test_gateway_endpoints_reach_only_this_stacks_buckets_table_and_ecr_layers(default: Any, variant: Any) -> None:
    for synth in (default, variant):
        network, storage = synth.stack.network, synth.stack.storage
        s3_resources = json.dumps(_resources(_endpoint_policy(synth, network.gateway_endpoints["S3"])))
        assert s3_resources.count('"Fn::GetAtt"') == 2  # input and output bucket objects
        for bucket in (storage.input_bucket, storage.output_bucket):
            assert synth.logical_id(bucket) in s3_resources
        assert "starport-layer-bucket/*" in s3_resources  # image layers (ECR keeps them in its own bucket)
        assert "arn:aws:s3:::*" not in s3_resources and '"*"' not in s3_resources
        table = {"Fn::GetAtt": [synth.logical_id(storage.table), "Arn"]}
        dynamodb = _resources(_endpoint_policy(synth, network.gateway_endpoints["DynamoDb"]))
        assert dynamodb[0] == table and len(dynamodb) == 2  # the table and its indexes


def test_interface_endpoints_reach_only_this_stacks_topic_queues_log_group_and_images(default: Any) -> None:
    network = default.stack.network
    endpoints = network.interface_endpoints
    assert _resources(_endpoint_policy(default, endpoints["Sns"])) == [
        {"Ref": default.logical_id(default.stack.notifications.topic)}]
    assert _resources(_endpoint_policy(default, endpoints["Logs"])) == [
        {"Fn::GetAtt": [default.logical_id(default.stack.gpu.log_group), "Arn"]}]
    for name in ("EcrApi", "EcrDocker"):
        statements = {s["Sid"]: s for s in _endpoint_policy(default, endpoints[name])}
        assert "ecr:PutImage" not in json.dumps(statements)  # pull only: no pushing images out
        assert statements["RegistryLogin"]["Action"] == "ecr:GetAuthorizationToken"
        assert ":repository/*" in json.dumps(statements["PullFromThisAccount"]["Resource"])
        assert "AWS::AccountId" in json.dumps(statements["PullFromThisAccount"]["Resource"])
    # The ECS endpoints carry the agent's control plane and keep AWS's default policy.
    for name in ("Ecs", "EcsAgent", "EcsTelemetry"):
        assert "PolicyDocument" not in default.raw["Resources"][default.logical_id(endpoints[name])]["Properties"]
    # SQS: the queues the stack names for the workers (the work queue), nothing else.
    queues = _resources(_endpoint_policy(default, endpoints[SQS_ENDPOINT]))
    assert queues and {"Fn::GetAtt": [default.logical_id(default.stack.work.queue), "Arn"]} in queues
    assert all(q["Fn::GetAtt"][1] == "Arn" for q in queues)


def test_queues_named_for_the_workers_get_an_sqs_endpoint_limited_to_them(tmp_path: Path) -> None:
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "EndpointsOnly")
    network = Network(stack, "Network", config=InfraConfig(), log_retention=logs.RetentionDays.ONE_DAY)
    queues = [sqs.Queue(stack, name, enforce_ssl=True) for name in ("Work", "WorkDlq")]
    network.limit_endpoints_to(EndpointTargets(
        buckets=[s3.Bucket(stack, "Bucket")], table=dynamodb.Table(
            stack, "Table", partition_key=dynamodb.Attribute(name="id", type=dynamodb.AttributeType.STRING)),
        topic=sns.Topic(stack, "Topic"), queue_arns=[q.queue_arn for q in queues],
        log_groups=[logs.LogGroup(stack, "Logs")]))
    template = app.synth().get_stack_by_name("EndpointsOnly").template
    endpoint = template["Resources"][stack.resolve(stack.get_logical_id(
        network.interface_endpoints[SQS_ENDPOINT].node.default_child))]["Properties"]
    assert endpoint["VpcEndpointType"] == "Interface" and endpoint["PrivateDnsEnabled"] is True
    (statement,) = endpoint["PolicyDocument"]["Statement"]
    assert statement["Resource"] == [{"Fn::GetAtt": [stack.resolve(stack.get_logical_id(q.node.default_child)),
                                                     "Arn"]} for q in queues]



def test_dns_firewall_answers_only_aws_names_in_the_workers_vpc(default: Any, variant: Any) -> None:
    from infra.constructs.network import DNS_ALLOWED_DOMAINS

    for synth in (default, variant):
        lists = {name: r["Properties"]["Domains"] for name, r in synth.resources(
            "AWS::Route53Resolver::FirewallDomainList").items()}
        group = synth.one("AWS::Route53Resolver::FirewallRuleGroup")
        rules = sorted(group["FirewallRules"], key=lambda r: r["Priority"])
        allow, block = rules
        assert allow["Action"] == "ALLOW"
        assert lists[allow["FirewallDomainListId"]["Fn::GetAtt"][0]] == DNS_ALLOWED_DOMAINS
        assert block["Action"] == "BLOCK" and block["BlockResponse"] == "NXDOMAIN"
        assert lists[block["FirewallDomainListId"]["Fn::GetAtt"][0]] == ["*"]  # everything else
        association = synth.one("AWS::Route53Resolver::FirewallRuleGroupAssociation")
        assert association["VpcId"] == {"Ref": synth.logical_id(synth.stack.network.vpc)}
        assert association["FirewallRuleGroupId"] == {"Fn::GetAtt": [synth.logical_id(synth.stack.network.dns_firewall),
                                                                     "Id"]}
    for domain in ("*.amazonaws.com", "amazonaws.com", "*.compute.internal", "*.ec2.internal"):
        assert domain in DNS_ALLOWED_DOMAINS


def test_dns_firewall_can_be_turned_off() -> None:
    stack = Stack(App(), "Probe")
    network = Network(stack, "Network", config=InfraConfig(dns_firewall=False),
                      log_retention=logs.RetentionDays.ONE_DAY)
    assert network.dns_firewall is None
    assert not [c for c in stack.node.find_all() if "Dns" in c.node.id]
