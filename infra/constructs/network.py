"""Where the GPU instances run: private subnets with no inbound path, flow logs on.

Two egress designs (config `egress`):
- "endpoints" (default): isolated subnets, no internet route at all. S3 and DynamoDB use free gateway
  endpoints (also the path for ECR image layers); ECR, ECS, CloudWatch Logs and SNS use interface
  endpoints. Costs ~$0.01/h per endpoint per AZ even when idle, but no NAT data charge on multi-GB
  image pulls and the workers that see users' photos can reach nothing but AWS APIs.
- "nat": private subnets behind one NAT gateway (cheaper idle, $0.045/GB on everything pulled).
With `vpc_id` you bring your own VPC: its private subnets must already reach those services.
"""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import InfraConfig

VPC_CIDR = "10.42.0.0/16"

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


class Network(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: InfraConfig,
                 log_retention: logs.RetentionDays) -> None:
        super().__init__(scope, construct_id)
        if config.vpc_id:
            # Needs a concrete account/region; the lookup result is cached in cdk.context.json.
            self.vpc: ec2.IVpc = ec2.Vpc.from_lookup(self, "Vpc", vpc_id=config.vpc_id)
            self.worker_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        else:
            self.vpc = self._create_vpc(config, log_retention)
            self.worker_subnets = ec2.SubnetSelection(subnet_group_name="Workers")

        # No inbound rules at all; outbound HTTPS only (AWS APIs, ECR). DNS and IMDS are not filtered.
        self.worker_security_group = ec2.SecurityGroup(
            self, "WorkerSecurityGroup", vpc=self.vpc, allow_all_outbound=False,
            description="GPU workers: no inbound, HTTPS out to AWS APIs only",
        )
        self.worker_security_group.add_egress_rule(ec2.Peer.any_ipv4(), ec2.Port.tcp(443), "HTTPS to AWS APIs")

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
            restrict_default_security_group=False,
        )
        flow_log_group = logs.LogGroup(self, "FlowLogs", retention=log_retention,
                                       removal_policy=RemovalPolicy.DESTROY)
        vpc.add_flow_log("FlowLog", destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
                         traffic_type=ec2.FlowLogTrafficType.ALL)
        selection = [ec2.SubnetSelection(subnet_group_name="Workers")]
        vpc.add_gateway_endpoint("S3", service=ec2.GatewayVpcEndpointAwsService.S3, subnets=selection)
        vpc.add_gateway_endpoint("DynamoDb", service=ec2.GatewayVpcEndpointAwsService.DYNAMODB, subnets=selection)
        if isolated:
            endpoint_group = ec2.SecurityGroup(self, "EndpointSecurityGroup", vpc=vpc, allow_all_outbound=False,
                                               description="Interface endpoints: HTTPS from inside the VPC")
            endpoint_group.add_ingress_rule(ec2.Peer.ipv4(VPC_CIDR), ec2.Port.tcp(443), "HTTPS from the VPC")
            for name, service in INTERFACE_ENDPOINTS.items():
                vpc.add_interface_endpoint(name, service=service, subnets=selection[0], private_dns_enabled=True,
                                           security_groups=[endpoint_group], open=False)
        return vpc
