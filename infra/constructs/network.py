"""Where the GPU instances run: private subnets with no inbound path, flow logs on.

Two egress designs (config `egress`):
- "endpoints" (default): isolated subnets, no internet route at all. S3 and DynamoDB use free gateway
  endpoints (also the path for ECR image layers); ECR, ECS, CloudWatch Logs and SNS (and SQS once the
  stack names queues) use interface endpoints. The workers' security group sends HTTPS only to the
  interface endpoints and to the S3/DynamoDB prefix lists. Costs ~$0.01/h per endpoint per AZ even when
  idle, but no NAT data charge on multi-GB image pulls and the workers that see users' photos can reach
  nothing but AWS APIs.
- "nat": private subnets behind one NAT gateway (cheaper idle, $0.045/GB on everything pulled); the
  workers then send HTTPS anywhere.
With `vpc_id` you bring your own VPC: its private subnets must already reach those services.

DNS is the one way out that security groups cannot close: the VPC resolver answers any name, and a
worker decoding a hostile image could leak data in the names it looks up. A Route 53 Resolver DNS
Firewall (config `dns_firewall`, on by default) answers only AWS service names and the VPC's own
instance names and NXDOMAIN for everything else (fail closed: the firewall's default when it cannot
evaluate a query, https://docs.aws.amazon.com/Route53/latest/DeveloperGuide/resolver-dns-firewall-vpc-configuration.html).

Endpoint policies (`limit_endpoints_to`) make the endpoints useless for exfiltration: through them only
this stack's buckets, table, queues, topic and log groups (and this account's image repositories, and
ECR's layer bucket) can be reached, whatever credentials a caller brings. The ECS endpoints carry the
ECS agent's control plane and keep AWS's default policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Aws, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_route53resolver as resolver
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import custom_resources as cr
from constructs import Construct

from infra.config import InfraConfig
from infra.constructs.nag import acknowledge

VPC_CIDR = "10.42.0.0/16"
HTTPS = ec2.Port.tcp(443)

# What an ECS GPU instance and the worker talk to (besides S3 and DynamoDB, which use gateways).
INTERFACE_ENDPOINTS = {
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Ecs": ec2.InterfaceVpcEndpointAwsService.ECS,
    "EcsAgent": ec2.InterfaceVpcEndpointAwsService.ECS_AGENT,
    "EcsTelemetry": ec2.InterfaceVpcEndpointAwsService.ECS_TELEMETRY,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "Sns": ec2.InterfaceVpcEndpointAwsService.SNS,
}
# Created by limit_endpoints_to() when the stack names queues the workers use (the work queue).
SQS_ENDPOINT = "Sqs"
GATEWAY_PREFIX_LISTS = {"S3": "s3", "DynamoDb": "dynamodb"}  # construct id -> service of the managed prefix list
# Image pulls: the ECS agent fetches layers from ECR's own bucket through the S3 gateway endpoint.
ECR_LAYER_BUCKET = "prod-{region}-starport-layer-bucket"
WORKER_S3_ACTIONS = ["s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:AbortMultipartUpload",
                     "s3:ListMultipartUploadParts"]
IMAGE_PULL_ACTIONS = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
# What the GPU instances resolve: AWS service endpoints (incl. ECR, its S3 layer bucket, the dual-stack
# api.aws names) and EC2's own instance host names. A wildcard matches subdomains only, hence both forms.
DNS_ALLOWED_DOMAINS = ["amazonaws.com", "*.amazonaws.com", "api.aws", "*.api.aws",
                       "ec2.internal", "*.ec2.internal", "compute.internal", "*.compute.internal"]
DNS_ALLOW_PRIORITY, DNS_BLOCK_PRIORITY = 100, 200
DNS_FIREWALL_ASSOCIATION_PRIORITY = 1000  # among rule groups of this VPC (101..9899)


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointTargets:
    """Everything the workers (and the ECS agent on their instances) may reach through the endpoints."""

    buckets: Sequence[s3.IBucket]
    table: dynamodb.ITable
    topic: sns.ITopic
    queue_arns: Sequence[str]  # the queues the workers use (the work queue and its DLQ)
    log_groups: Sequence[logs.ILogGroup]


class Network(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig,
                 log_retention: logs.RetentionDays) -> None:
        super().__init__(scope, construct_id)
        self.gateway_endpoints: dict[str, ec2.GatewayVpcEndpoint] = {}
        self.interface_endpoints: dict[str, ec2.InterfaceVpcEndpoint] = {}
        self.endpoint_security_group: ec2.SecurityGroup | None = None
        self.dns_firewall: resolver.CfnFirewallRuleGroup | None = None
        if config.vpc_id:
            # Needs a concrete account/region; the lookup result is cached in cdk.context.json.
            self.vpc: ec2.IVpc = ec2.Vpc.from_lookup(self, "Vpc", vpc_id=config.vpc_id)
            self.worker_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        else:
            self.vpc = self._create_vpc(config, log_retention)
            self.worker_subnets = ec2.SubnetSelection(subnet_group_name="Workers")

        # No inbound rules at all; outbound HTTPS only. DNS, IMDS and time sync are link-local: security
        # groups do not filter them (the launch template blocks IMDS for the worker, see batch.py).
        self.worker_security_group = ec2.SecurityGroup(
            self, "WorkerSecurityGroup", vpc=self.vpc, allow_all_outbound=False,
            description="GPU workers: no inbound, HTTPS out to AWS APIs only",
        )
        if self.endpoint_security_group is None:
            # NAT or a VPC of your own: AWS APIs are reached at their public addresses.
            self.worker_security_group.add_egress_rule(ec2.Peer.any_ipv4(), HTTPS, "HTTPS to AWS APIs")
        else:
            self.worker_security_group.connections.allow_to(self.endpoint_security_group, HTTPS,
                                                            "HTTPS to the interface endpoints")
            for name, service in GATEWAY_PREFIX_LISTS.items():
                self.worker_security_group.add_egress_rule(
                    ec2.Peer.prefix_list(self._managed_prefix_list(name, service)), HTTPS,
                    f"HTTPS to {service} through its gateway endpoint")

    def _create_vpc(self, config: InfraConfig, log_retention: logs.RetentionDays) -> ec2.Vpc:
        isolated = config.egress == "endpoints"
        subnets = [ec2.SubnetConfiguration(
            name="Workers", cidr_mask=20,
            subnet_type=ec2.SubnetType.PRIVATE_ISOLATED if isolated else ec2.SubnetType.PRIVATE_WITH_EGRESS,
        )]
        if not isolated:
            subnets.insert(0, ec2.SubnetConfiguration(name="Public", cidr_mask=24,
                                                      subnet_type=ec2.SubnetType.PUBLIC))
        vpc = ec2.Vpc(
            self, "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(VPC_CIDR),
            max_azs=config.max_azs,
            nat_gateways=0 if isolated else 1,
            subnet_configuration=subnets,
            # The default security group (all traffic within itself, all out) loses every rule.
            restrict_default_security_group=True,
        )
        flow_log_group = logs.LogGroup(self, "FlowLogs", retention=log_retention)  # removal: the stack decides
        vpc.add_flow_log("FlowLog", destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
                         traffic_type=ec2.FlowLogTrafficType.ALL)
        if config.dns_firewall:
            self.dns_firewall = self._dns_firewall(vpc)
        selection = [ec2.SubnetSelection(subnet_group_name="Workers")]
        self.gateway_endpoints["S3"] = vpc.add_gateway_endpoint(
            "S3", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=selection)
        self.gateway_endpoints["DynamoDb"] = vpc.add_gateway_endpoint(
            "DynamoDb", service=ec2.GatewayVpcEndpointAwsService.DYNAMODB, subnets=selection)
        if isolated:
            self.endpoint_security_group = ec2.SecurityGroup(
                self, "EndpointSecurityGroup", vpc=vpc, allow_all_outbound=False,
                description="Interface endpoints: HTTPS from the GPU workers")
            for name, service in INTERFACE_ENDPOINTS.items():
                self._add_interface_endpoint(vpc, self.endpoint_security_group, name, service)
        return vpc

    def _dns_firewall(self, vpc: ec2.IVpc) -> resolver.CfnFirewallRuleGroup:
        allowed = resolver.CfnFirewallDomainList(self, "DnsAllowedDomains", domains=DNS_ALLOWED_DOMAINS)
        everything = resolver.CfnFirewallDomainList(self, "DnsAllDomains", domains=["*"])
        rule = resolver.CfnFirewallRuleGroup.FirewallRuleProperty
        group = resolver.CfnFirewallRuleGroup(self, "DnsFirewall", firewall_rules=[
            rule(action="ALLOW", firewall_domain_list_id=allowed.attr_id, priority=DNS_ALLOW_PRIORITY),
            rule(action="BLOCK", block_response="NXDOMAIN", firewall_domain_list_id=everything.attr_id,
                 priority=DNS_BLOCK_PRIORITY),
        ])
        resolver.CfnFirewallRuleGroupAssociation(self, "DnsFirewallAssociation", firewall_rule_group_id=group.attr_id,
                                                 vpc_id=vpc.vpc_id, priority=DNS_FIREWALL_ASSOCIATION_PRIORITY)
        return group

    def _add_interface_endpoint(self, vpc: ec2.IVpc, group: ec2.ISecurityGroup, name: str,
                                service: ec2.IInterfaceVpcEndpointService) -> None:
        self.interface_endpoints[name] = vpc.add_interface_endpoint(
            name, service=service, subnets=ec2.SubnetSelection(subnet_group_name="Workers"),
            private_dns_enabled=True, security_groups=[group], open=False)

    def _managed_prefix_list(self, name: str, service: str) -> str:
        """The id of AWS's managed prefix list of a gateway service in the deployment's region.

        CloudFormation has no lookup for it and the stack is environment-agnostic, so a deploy-time
        DescribeManagedPrefixLists call (CDK's AwsCustomResource) finds it.
        """
        prefix_list_name = f"com.amazonaws.{Aws.REGION}.{service}"
        lookup = cr.AwsCustomResource(
            self, f"{name}PrefixList",
            on_update=cr.AwsSdkCall(
                service="EC2", action="describeManagedPrefixLists",
                parameters={"Filters": [{"Name": "prefix-list-name", "Values": [prefix_list_name]}]},
                physical_resource_id=cr.PhysicalResourceId.of(prefix_list_name),
                output_paths=["PrefixLists.0.PrefixListId"],
            ),
            policy=cr.AwsCustomResourcePolicy.from_sdk_calls(resources=cr.AwsCustomResourcePolicy.ANY_RESOURCE),
            install_latest_aws_sdk=False,
        )
        acknowledge(lookup, "AwsSolutions-IAM5[Resource::*]",
                    "ec2:DescribeManagedPrefixLists is a read-only call without resource-level permissions.")
        return lookup.get_response_field("PrefixLists.0.PrefixListId")

    def limit_endpoints_to(self, targets: EndpointTargets) -> None:
        """Endpoint policies: only the stack's own resources are reachable through the endpoints.

        Gateway endpoints exist in both egress designs, interface endpoints only with "endpoints";
        a VPC of your own gets no endpoints (and no policies) from this stack.
        """
        stack = Stack.of(self)
        if "S3" in self.gateway_endpoints:
            self.gateway_endpoints["S3"].add_to_policy(_statement(
                "StackBuckets", WORKER_S3_ACTIONS, [b.arn_for_objects("*") for b in targets.buckets]))
            layers = f"arn:{Aws.PARTITION}:s3:::{ECR_LAYER_BUCKET.format(region=Aws.REGION)}/*"
            self.gateway_endpoints["S3"].add_to_policy(_statement("EcrImageLayers", ["s3:GetObject"], [layers]))
        if "DynamoDb" in self.gateway_endpoints:
            self.gateway_endpoints["DynamoDb"].add_to_policy(_statement(
                "StackTable", ["dynamodb:*"], [targets.table.table_arn, f"{targets.table.table_arn}/index/*"]))
        if not self.interface_endpoints:
            return
        repositories = stack.format_arn(service="ecr", resource="repository", resource_name="*")
        for name in ("EcrApi", "EcrDocker"):
            endpoint = self.interface_endpoints[name]
            endpoint.add_to_policy(_statement("PullFromThisAccount", IMAGE_PULL_ACTIONS, [repositories]))
            # The registry login token has no resource; pushes (any account) stay impossible.
            endpoint.add_to_policy(_statement("RegistryLogin", ["ecr:GetAuthorizationToken"], ["*"]))
        self.interface_endpoints["Logs"].add_to_policy(_statement(
            "StackLogGroups", ["logs:CreateLogStream", "logs:PutLogEvents", "logs:DescribeLogStreams"],
            [group.log_group_arn for group in targets.log_groups]))  # "...:log-group:NAME:*": its streams too
        self.interface_endpoints["Sns"].add_to_policy(_statement(
            "StackTopic", ["sns:Publish"], [targets.topic.topic_arn]))
        if targets.queue_arns and self.endpoint_security_group is not None:
            if SQS_ENDPOINT not in self.interface_endpoints:
                self._add_interface_endpoint(self.vpc, self.endpoint_security_group, SQS_ENDPOINT,
                                             ec2.InterfaceVpcEndpointAwsService.SQS)
            self.interface_endpoints[SQS_ENDPOINT].add_to_policy(_statement(
                "StackQueues", ["sqs:*"], list(targets.queue_arns)))


def _statement(sid: str, actions: list[str], resources: list[str]) -> iam.PolicyStatement:
    # Endpoint policies name no principal: the callers' own IAM policies decide who; this decides what.
    return iam.PolicyStatement(sid=sid, principals=[iam.AnyPrincipal()], actions=actions, resources=resources)
