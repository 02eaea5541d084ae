"""The HTTP API and its page in the synthesized templates: an authorizer on every route (SigV4 by default, JWT in
the variant), the routes the OpenAPI document names, throttling and access logs, least-privilege grants, and the
page behind CloudFront with Origin Access Control and strict security headers."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match

from common.api_uploads import API_FOLDER
from common.jobs import CALLER_INDEX, table_definition
from infra.config import ConfigError, config_from_context
from infra.constructs.api import API_HANDLER, CREATE_ROUTE, api_routes
from infra.constructs.static_site import issuer_sources, page_config
from web.security import STATIC_FILES

ISSUER = "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_Example1"  # tests/infra/conftest.py VARIANT_CONTEXT


def routes(synth: Any) -> dict[str, dict[str, Any]]:
    return {r["Properties"]["RouteKey"]: r["Properties"] for r in synth.resources("AWS::ApiGatewayV2::Route").values()}


def joined(value: Any) -> str:
    """A CloudFormation string (maybe an Fn::Join) as text, tokens shown as their JSON."""
    if isinstance(value, dict) and "Fn::Join" in value:
        return "".join(p if isinstance(p, str) else json.dumps(p) for p in value["Fn::Join"][1])
    return value if isinstance(value, str) else json.dumps(value)


def test_every_route_of_the_openapi_document_is_deployed_with_sigv4(default: Any) -> None:
    found = routes(default)
    assert sorted(found) == sorted(f"{method} {path}" for method, path in api_routes())
    assert {"POST /v1/jobs", "GET /v1/jobs", "GET /v1/jobs/{job_id}", "DELETE /v1/jobs/{job_id}",
            "GET /v1/openapi.json"} == set(found)
    for key, route in found.items():
        assert route["AuthorizationType"] == "AWS_IAM", key
    assert not default.resources("AWS::ApiGatewayV2::Authorizer")


def test_the_jwt_variant_authorizes_every_route_with_the_issuers_tokens(variant: Any) -> None:
    ((authorizer_id, authorizer),) = variant.resources("AWS::ApiGatewayV2::Authorizer").items()
    props = authorizer["Properties"]
    assert props["AuthorizerType"] == "JWT"
    assert props["JwtConfiguration"] == {"Issuer": ISSUER, "Audience": ["client-one", "client-two"]}
    assert props["IdentitySource"] == ["$request.header.Authorization"]
    for key, route in routes(variant).items():
        assert route["AuthorizationType"] == "JWT", key
        assert route["AuthorizerId"] == {"Ref": authorizer_id}, key


def test_the_stage_throttles_each_route_and_logs_every_request(default: Any) -> None:
    config = default.config
    stage = default.one("AWS::ApiGatewayV2::Stage")
    assert stage["StageName"] == "$default" and stage["AutoDeploy"] is True
    assert stage["DefaultRouteSettings"]["ThrottlingRateLimit"] == config.api_rate_limit
    assert stage["DefaultRouteSettings"]["ThrottlingBurstLimit"] == config.api_burst_limit
    assert stage["RouteSettings"][CREATE_ROUTE]["ThrottlingRateLimit"] == config.api_create_rate_limit
    assert stage["RouteSettings"][CREATE_ROUTE]["ThrottlingBurstLimit"] == config.api_create_burst_limit
    log_format = json.loads(stage["AccessLogSettings"]["Format"])
    assert {"requestId", "caller", "routeKey", "status"} <= set(log_format)
    assert stage["AccessLogSettings"]["DestinationArn"]["Fn::GetAtt"][1] == "Arn"


def test_the_function_is_the_api_handler_with_the_shared_settings(default: Any) -> None:
    function = default.stack.api.function
    props = default.raw["Resources"][default.logical_id(function)]["Properties"]
    assert props["Handler"] == API_HANDLER
    env = props["Environment"]["Variables"]
    for name in ("UPSCALER_JOBS_TABLE", "UPSCALER_INPUT_BUCKET", "UPSCALER_OUTPUT_BUCKET", "UPSCALER_TOPIC_ARN"):
        assert name in env, name
    assert "UPSCALER_ENDPOINT_URL" not in env  # real AWS: http and loopback webhooks are refused


def test_the_function_may_sign_only_api_uploads_and_result_downloads(default: Any) -> None:
    role = default.stack.api.handler.role
    statements = {s.get("Sid"): s for s in default.role_statements(role)}
    assert statements["PresignUploads"]["Action"] == "s3:PutObject"
    assert joined(statements["PresignUploads"]["Resource"]).endswith(f"/uploads/{API_FOLDER}*")
    assert statements["PresignResults"]["Action"] == ["s3:GetObject", "s3:GetObjectVersion"]
    assert joined(statements["PresignResults"]["Resource"]).endswith("/outputs/*")
    assert statements["CallersJobs"]["Action"] == "dynamodb:Query"
    assert joined(statements["CallersJobs"]["Resource"]).endswith(f"/index/{CALLER_INDEX}")
    assert "dynamodb:Scan" not in json.dumps(statements) and '"s3:*"' not in json.dumps(statements)


def test_callers_get_a_policy_that_invokes_only_this_api(default: Any) -> None:
    policy = default.raw["Resources"][default.logical_id(default.stack.api.caller_policy)]["Properties"]
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Action"] == "execute-api:Invoke"
    resource = joined(statement["Resource"])
    assert resource.endswith("/*/*/v1/*") and default.logical_id(default.stack.api.api) in resource
    assert {"ApiUrl", "ApiCallerPolicyArn", "WebUrl"} <= set(default.raw["Outputs"])


def test_the_jobs_table_has_the_callers_index(default: Any) -> None:
    table = default.one("AWS::DynamoDB::Table")
    definition = table_definition("any")
    assert table["GlobalSecondaryIndexes"] == definition["GlobalSecondaryIndexes"]


def test_the_page_is_private_behind_cloudfront_with_origin_access_control(default: Any) -> None:
    distribution = default.one("AWS::CloudFront::Distribution")["DistributionConfig"]
    (origin,) = distribution["Origins"]
    assert "OriginAccessControlId" in origin
    assert origin["S3OriginConfig"].get("OriginAccessIdentity", "") == ""
    assert default.resources("AWS::CloudFront::OriginAccessControl")
    assert not default.resources("AWS::CloudFront::CloudFrontOriginAccessIdentity")
    behavior = distribution["DefaultCacheBehavior"]
    assert behavior["ViewerProtocolPolicy"] == "redirect-to-https"
    assert distribution["DefaultRootObject"] == "index.html"
    site_bucket = default.raw["Resources"][default.logical_id(default.stack.site.bucket)]["Properties"]
    assert site_bucket["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "BlockPublicPolicy": True, "IgnorePublicAcls": True, "RestrictPublicBuckets": True}
    default.template.has_resource_properties("AWS::S3::BucketPolicy", {
        "PolicyDocument": {"Statement": Match.array_with([Match.object_like({
            "Principal": {"Service": "cloudfront.amazonaws.com"}, "Action": "s3:GetObject",
            "Condition": {"StringEquals": {"AWS:SourceArn": Match.any_value()}}})])}})


def test_the_page_is_served_with_a_strict_csp_and_security_headers(default: Any) -> None:
    config = default.one("AWS::CloudFront::ResponseHeadersPolicy")["ResponseHeadersPolicyConfig"]
    security = config["SecurityHeadersConfig"]
    csp = joined(security["ContentSecurityPolicy"]["ContentSecurityPolicy"])
    for directive in ("default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'",
                      "base-uri 'none'", "form-action 'none'"):
        assert directive in csp, directive
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert security["FrameOptions"]["FrameOption"] == "DENY"
    assert security["ReferrerPolicy"]["ReferrerPolicy"] == "no-referrer"
    assert security["ContentTypeOptions"]["Override"] is True
    assert security["StrictTransportSecurity"]["AccessControlMaxAgeSec"] >= 31_536_000


def test_the_page_may_call_the_api_and_upload_from_its_own_origin_only(default: Any) -> None:
    distribution = default.logical_id(default.stack.site.distribution)
    cors = default.one("AWS::ApiGatewayV2::Api")["CorsConfiguration"]
    (origin,) = cors["AllowOrigins"]
    assert distribution in joined(origin) and joined(origin).startswith("https://")
    assert {"authorization", "x-amz-date", "x-amz-security-token"} <= set(cors["AllowHeaders"])
    input_bucket = default.raw["Resources"][default.logical_id(default.stack.storage.input_bucket)]["Properties"]
    (rule,) = input_bucket["CorsConfiguration"]["CorsRules"]
    assert rule["AllowedMethods"] == ["POST"] and distribution in joined(rule["AllowedOrigins"][0])


def test_the_page_and_its_config_are_deployed(default: Any) -> None:
    (deployment,) = default.resources("Custom::CDKBucketDeployment").values()
    markers = json.dumps(deployment["Properties"].get("SourceMarkers"))
    assert "ApiEndpoint" in markers  # config.json names the deployed API
    assert set(STATIC_FILES) == {"index.html", "app.js", "sigv4.js", "style.css"}


def test_without_the_page_there_is_no_distribution_and_no_cors(variant: Any) -> None:
    assert not variant.resources("AWS::CloudFront::Distribution")
    assert "CorsConfiguration" not in variant.one("AWS::ApiGatewayV2::Api")
    assert "WebUrl" not in variant.raw["Outputs"]


def test_page_config_says_how_to_sign_in() -> None:
    assert page_config(api_url="https://x", region="r", jwt_issuer=None, jwt_client_id=None) == {
        "api_url": "https://x", "auth": "sigv4", "region": "r"}
    jwt = page_config(api_url="https://x", region="r", jwt_issuer=ISSUER, jwt_client_id="client-one")
    assert jwt["auth"] == "jwt" and jwt["oidc"] == {"issuer": ISSUER, "client_id": "client-one", "scope": "openid"}
    assert issuer_sources(None) == ()
    origin, hosted_login = issuer_sources(ISSUER)
    assert origin == "https://cognito-idp.us-east-1.amazonaws.com" and "amazoncognito.com" in hosted_login
    assert issuer_sources("https://login.example.com/tenant") == ("https://login.example.com",)


@pytest.mark.parametrize(("context", "says"), [
    ({"upscaler:api_jwt_issuer": ISSUER}, "needs both"),
    ({"upscaler:api_jwt_audience": "client"}, "needs both"),
    ({"upscaler:api_jwt_issuer": "http://insecure.example.com", "upscaler:api_jwt_audience": "c"}, "https URL"),
    ({"upscaler:api_create_rate_limit": "0"}, "within 1..10000"),
])
def test_invalid_api_settings_fail_synth_naming_the_key(context: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        config_from_context(context)
