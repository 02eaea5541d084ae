"""The try-it page (web/) as a static site: a private bucket behind CloudFront with Origin Access Control,
and the same strict security headers the local stack serves it with (web.security).

The page calls the HTTP API with the user's own credentials: SigV4 with temporary credentials the user pastes
(IAM mode), or a token from the OIDC issuer's login (JWT mode). config.json, written beside the page at deploy
time, says which, and where the API is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from aws_cdk import Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3_deployment
from constructs import Construct

from infra.constructs.nag import acknowledge
from web.security import CONFIG_FILE, HSTS_SECONDS, STATIC_FILES, WEB_ROOT, content_security_policy

# Where the page may connect and load images from. Bucket and API names would make the distribution depend
# on the API and the buckets, which depend on the distribution (CORS): the page's reach is AWS's S3 and
# execute-api endpoints of this region, no further.
S3_SOURCES = ("https://*.s3.amazonaws.com", f"https://*.s3.{Aws.REGION}.amazonaws.com")
API_SOURCES = (f"https://*.execute-api.{Aws.REGION}.amazonaws.com",)
PAGE_CACHE = Duration.minutes(5)


def page_config(*, api_url: str, region: str, jwt_issuer: str | None, jwt_client_id: str | None) -> dict[str, Any]:
    """config.json: where the API is and how the page signs its requests."""
    if jwt_issuer:
        return {"api_url": api_url, "auth": "jwt", "region": region,
                "oidc": {"issuer": jwt_issuer, "client_id": jwt_client_id, "scope": "openid"}}
    return {"api_url": api_url, "auth": "sigv4", "region": region}


def issuer_sources(jwt_issuer: str | None) -> tuple[str, ...]:
    """The login's origins: the issuer (its discovery document) and, for Cognito, its hosted login domain."""
    if not jwt_issuer:
        return ()
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(jwt_issuer))
    cognito = (f"https://*.auth.{Aws.REGION}.amazoncognito.com",) if "cognito-idp." in origin else ()
    return (origin, *cognito)


class StaticSite(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, access_logs: s3.IBucket,
                 jwt_issuer: str | None) -> None:
        super().__init__(scope, construct_id)
        self.bucket = s3.Bucket(
            self, "Bucket",
            encryption=s3.BucketEncryption.S3_MANAGED, block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True, minimum_tls_version=1.2, object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=access_logs, server_access_logs_prefix="site/",
            removal_policy=RemovalPolicy.DESTROY,  # the page is rebuilt from web/ on every deploy
        )
        logins = issuer_sources(jwt_issuer)
        headers = cloudfront.ResponseHeadersPolicy(
            self, "Headers", comment="The try-it page: strict CSP and security headers (web/security.py)",
            security_headers_behavior=cloudfront.ResponseSecurityHeadersBehavior(
                content_security_policy=cloudfront.ResponseHeadersContentSecurityPolicy(
                    content_security_policy=content_security_policy(
                        connect=("'self'", *API_SOURCES, *S3_SOURCES, *logins), images=S3_SOURCES),
                    override=True),
                content_type_options=cloudfront.ResponseHeadersContentTypeOptions(override=True),
                frame_options=cloudfront.ResponseHeadersFrameOptions(
                    frame_option=cloudfront.HeadersFrameOption.DENY, override=True),
                referrer_policy=cloudfront.ResponseHeadersReferrerPolicy(
                    referrer_policy=cloudfront.HeadersReferrerPolicy.NO_REFERRER, override=True),
                strict_transport_security=cloudfront.ResponseHeadersStrictTransportSecurity(
                    access_control_max_age=Duration.seconds(HSTS_SECONDS), include_subdomains=True, override=True),
            ),
            custom_headers_behavior=cloudfront.ResponseCustomHeadersBehavior(custom_headers=[
                cloudfront.ResponseCustomHeader(header="Cross-Origin-Opener-Policy", value="same-origin",
                                                override=True),
                cloudfront.ResponseCustomHeader(header="Permissions-Policy",
                                                value="camera=(), microphone=(), geolocation=()", override=True),
            ]),
        )
        self.distribution = cloudfront.Distribution(
            self, "Distribution", comment="Upscaler try-it page",
            default_root_object="index.html",
            default_behavior=cloudfront.BehaviorOptions(
                origin=origins.S3BucketOrigin.with_origin_access_control(self.bucket),
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
                response_headers_policy=headers,
                cache_policy=cloudfront.CachePolicy(
                    self, "Cache", comment="The try-it page: a deploy shows within PAGE_CACHE",
                    default_ttl=PAGE_CACHE, max_ttl=PAGE_CACHE, min_ttl=Duration.seconds(0),
                    enable_accept_encoding_gzip=True, enable_accept_encoding_brotli=True),
                allowed_methods=cloudfront.AllowedMethods.ALLOW_GET_HEAD),
            price_class=cloudfront.PriceClass.PRICE_CLASS_100,
            http_version=cloudfront.HttpVersion.HTTP2_AND_3,
        )
        self._acknowledge()

    def publish(self, config: Mapping[str, Any]) -> None:
        """The page's files and its config.json, replaced on every deploy. No invalidation (it would need
        cloudfront:CreateInvalidation on every distribution): a short cache shows a new page within minutes."""
        self.deployment = s3_deployment.BucketDeployment(
            self, "Page", destination_bucket=self.bucket, retain_on_delete=False, prune=True,
            cache_control=[s3_deployment.CacheControl.max_age(PAGE_CACHE)],
            sources=[s3_deployment.Source.asset(str(WEB_ROOT), exclude=["*", *(f"!{n}" for n in STATIC_FILES)]),
                     s3_deployment.Source.json_data(CONFIG_FILE, dict(config))],
        )
        self._acknowledge_deployment()

    @property
    def url(self) -> str:
        return f"https://{self.distribution.distribution_domain_name}"

    def _acknowledge(self) -> None:
        acknowledge(self.distribution, "AwsSolutions-CFR1",
                    "A try-it page for the account's own users, who sign in to use it; no country is refused.")
        acknowledge(self.distribution, "AwsSolutions-CFR3",
                    "CloudFront's standard logs need an ACL-enabled bucket; every action of the page is an API call, "
                    "and the API's stage logs each one.")
        acknowledge(self.distribution, "AwsSolutions-CFR2",
                    "Static files only; the API behind the page authorizes and throttles every request itself.")
        acknowledge(self.distribution, "AwsSolutions-CFR4",
                    "The distribution's default *.cloudfront.net certificate: CloudFront then allows TLSv1, which "
                    "only a custom domain with its own certificate can raise (docs/api.md).")

    def _acknowledge_deployment(self) -> None:
        """CDK's BucketDeployment singleton function (it copies the page at deploy time; not our code)."""
        stack = Stack.of(self)
        bucket = stack.resolve(stack.get_logical_id(self.bucket.node.default_child))  # type: ignore[arg-type]
        findings = {
            "AwsSolutions-L1": "its runtime is chosen by aws-cdk-lib",
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]":
                "the managed policy only writes its logs",
            **{f"AwsSolutions-IAM5[Action::s3:{action}*]": "CDK grants read of its asset and write of the page bucket"
               for action in ("GetBucket", "GetObject", "List", "Abort", "DeleteObject")},
            "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::cdk-hnb659fds-assets-<AWS::AccountId>-"
            "<AWS::Region>/*]": "it reads the page's asset from CDK's bootstrap asset bucket",
            f"AwsSolutions-IAM5[Resource::<{bucket}.Arn>/*]": "it writes every object of the page's own bucket",
        }
        for child in stack.node.children:
            if child.node.id.startswith("Custom::CDKBucketDeployment"):
                for rule, reason in findings.items():
                    acknowledge(child, rule, f"CDK's BucketDeployment function, run at deploy time: {reason}.")
