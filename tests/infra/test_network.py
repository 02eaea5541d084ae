"""The GPU workers' network: private subnets, flow logs, endpoints instead of a NAT by default."""

from __future__ import annotations

from typing import Any

from infra.constructs.network import INTERFACE_ENDPOINTS


def test_default_network_has_no_internet_path_and_reaches_aws_through_endpoints(default: Any) -> None:
    assert not default.resources("AWS::EC2::NatGateway")
    assert not default.resources("AWS::EC2::InternetGateway")
    subnets = default.resources("AWS::EC2::Subnet").values()
    assert subnets and all(s["Properties"]["MapPublicIpOnLaunch"] is False for s in subnets)
    endpoints = [e["Properties"] for e in default.resources("AWS::EC2::VPCEndpoint").values()]
    gateways = [e for e in endpoints if e.get("VpcEndpointType") == "Gateway"]
    interfaces = [e for e in endpoints if e.get("VpcEndpointType") == "Interface"]
    assert len(gateways) == 2  # S3 (also ECR layers) and DynamoDB
    assert len(interfaces) == len(INTERFACE_ENDPOINTS)
    assert all(e["PrivateDnsEnabled"] is True for e in interfaces)


def test_nat_egress_uses_exactly_one_nat_gateway(variant: Any) -> None:
    assert len(variant.resources("AWS::EC2::NatGateway")) == 1
    assert not [e for e in variant.resources("AWS::EC2::VPCEndpoint").values()
                if e["Properties"].get("VpcEndpointType") == "Interface"]


def test_vpc_flow_logs_are_on(default: Any) -> None:
    flow_log = default.one("AWS::EC2::FlowLog")
    assert flow_log["TrafficType"] == "ALL"
    assert flow_log["LogDestinationType"] == "cloud-watch-logs"


def test_workers_accept_no_inbound_traffic_and_send_only_https(default: Any) -> None:
    group = default.raw["Resources"][default.logical_id(default.stack.network.worker_security_group)]["Properties"]
    assert "SecurityGroupIngress" not in group
    (egress,) = group["SecurityGroupEgress"]
    assert (egress["IpProtocol"], egress["FromPort"], egress["ToPort"]) == ("tcp", 443, 443)
