"""API Lambda: API Gateway HTTP API events (payload 2.0) -> Powertools resolver -> functions.api.jobs.

Thin: each route takes the caller from the authorizer's context (functions.api.callers), calls one JobsApi
method and returns its model. Every error leaves as RFC 9457 problem+json (functions.api.problems).
"""

from __future__ import annotations

import json
import re
from functools import cache
from typing import Annotated, Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.exceptions import NotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.models import APIKey, APIKeyIn, HTTPBearer
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext

from common.api_uploads import JOB_ID_PATTERN
from common.settings import METRICS_NAMESPACE, Settings
from functions.api.callers import caller_of
from functions.api.jobs import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, JobsApi
from functions.api.models import CreateJobRequest, JobCreated, JobList, JobView, Problem
from functions.api.problems import PROBLEM_JSON, ApiErrorCode, ApiProblem

SERVICE = "upscaler-api"
API_VERSION = "1.0.0"
MAX_BODY_BYTES = 16 * 1024  # a job request is well under 4 KiB; API Gateway itself would take 10 MB
MAX_CURSOR_LENGTH = 4096
JSON = "application/json"

logger = Logger(service=SERVICE)
tracer = Tracer(service=SERVICE)
metrics = Metrics(namespace=METRICS_NAMESPACE, service=SERVICE)
app = APIGatewayHttpResolver(enable_validation=True)
app.configure_openapi(
    title="Upscaler API", version=API_VERSION,
    description="Real-ESRGAN upscaling jobs: create one (with a presigned upload), read it, list yours, cancel. "
                "Errors are RFC 9457 problem details. Guide: docs/api.md.",
    security_schemes={
        # SigV4 (the default): API Gateway's IAM authorizer; the extension is how API Gateway names it.
        "sigv4": APIKey(name="Authorization", in_=APIKeyIn.header,
                        openapi_extensions={"x-amazon-apigateway-authtype": "awsSigv4"},
                        description="AWS Signature Version 4 (service execute-api)"),
        # JWT: when the deployment names an OIDC issuer (infra: upscaler:api_jwt_issuer), instead of SigV4.
        "jwt": HTTPBearer(bearerFormat="JWT", description="An OIDC token from the deployment's issuer"),
    },
    security=[{"sigv4": []}, {"jwt": []}],
)


def _problem_responses(*statuses: int) -> dict[int, OpenAPIResponse]:
    return {status: {"description": "A problem (RFC 9457)", "content": {PROBLEM_JSON: {"model": Problem}}}
            for status in statuses}


def _ok(model: type, description: str, status: int = 200) -> dict[int, OpenAPIResponse]:
    return {status: {"description": description, "content": {JSON: {"model": model}}}}


@cache
def get_api() -> JobsApi:
    """Built once per container (clients and settings are reused across invocations)."""
    return JobsApi.from_settings(Settings.from_env())


def _caller() -> str:
    caller = caller_of(app.current_event.raw_event)
    if caller is None:
        raise ApiProblem(401, ApiErrorCode.UNAUTHENTICATED, "The request carries no identity API Gateway accepted.")
    logger.append_keys(caller=caller)
    return caller


def _base_url() -> str:
    """Where this API is reached (absolute links in responses): API Gateway's domain and stage."""
    event = app.current_event
    context = event.request_context
    stage = context.stage
    proto = (event.headers or {}).get("x-forwarded-proto", "https")
    return f"{proto}://{context.domain_name}{'' if stage in ('$default', '', None) else '/' + stage}"


@app.post("/v1/jobs", summary="Create a job and its upload link",
          responses={**_ok(JobCreated, "The job, AWAITING_UPLOAD, and its presigned POST", 201),
                     **_problem_responses(400, 401, 413, 422)})
def create_job(request: Annotated[CreateJobRequest, Body(embed=False)]) -> Response[JobCreated]:
    created = get_api().create(_caller(), request, base_url=_base_url())
    logger.info("job created", extra={"job_id": created.job_id})
    metrics.add_metric(name="JobsCreated", unit=MetricUnit.Count, value=1)
    return Response(201, content_type=JSON, body=created,
                    headers={"Location": created.status_url})


@app.get("/v1/jobs", summary="List your jobs, newest first",
         responses={**_ok(JobList, "One page of your jobs"), **_problem_responses(400, 401)})
def list_jobs(limit: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
              cursor: Annotated[str | None, Query(max_length=MAX_CURSOR_LENGTH)] = None) -> JobList:
    return get_api().list(_caller(), limit=limit, cursor=cursor)


@app.get("/v1/jobs/<job_id>", summary="Read a job (a fresh download link once SUCCEEDED)",
         responses={**_ok(JobView, "The job"), **_problem_responses(400, 401, 404)})
def get_job(job_id: Annotated[str, Path(pattern=JOB_ID_PATTERN)]) -> JobView:
    return get_api().get(_caller(), job_id)


@app.delete("/v1/jobs/<job_id>", summary="Cancel a job no worker has taken",
            responses={**_ok(JobView, "The job, CANCELLED"), **_problem_responses(400, 401, 404, 409)})
def cancel_job(job_id: Annotated[str, Path(pattern=JOB_ID_PATTERN)]) -> JobView:
    view = get_api().cancel(_caller(), job_id)
    logger.info("job cancelled", extra={"job_id": job_id})
    metrics.add_metric(name="JobsCancelled", unit=MetricUnit.Count, value=1)
    return view


@app.get("/v1/openapi.json", summary="This API's OpenAPI 3.1 document",
         responses={200: {"description": "The document", "content": {JSON: {"schema": {"type": "object"}}}},
                    **_problem_responses(401)})
def openapi_json() -> dict[str, Any]:
    _caller()
    return openapi_document()


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of this API (docs/openapi.json is its committed copy, checked in CI).

    Powertools documents a 422 `HTTPValidationError` on every route; this API answers an invalid request with a
    400 problem instead (handle_invalid_request), so those entries, and the schemas left unused, are dropped."""
    document: dict[str, Any] = json.loads(app.get_openapi_json_schema())
    for operations in document["paths"].values():
        for operation in operations.values():
            operation["responses"] = {status: response for status, response in operation["responses"].items()
                                      if "HTTPValidationError" not in json.dumps(response)}
    schemas = document["components"]["schemas"]
    used: set[str] = set()
    pending = _schema_refs(document["paths"])
    while pending:
        name = pending.pop()
        if name not in used:
            used.add(name)
            pending |= _schema_refs(schemas[name])
    document["components"]["schemas"] = {name: schema for name, schema in schemas.items() if name in used}
    return document


def _schema_refs(node: object) -> set[str]:
    return set(re.findall(r'"#/components/schemas/([^"]+)"', json.dumps(node)))


def _problem(problem: ApiProblem) -> Response[Any]:
    return Response(problem.status, content_type=PROBLEM_JSON, body=problem.to_json(app.current_event.path))


@app.exception_handler(ApiProblem)
def handle_problem(problem: ApiProblem) -> Response[Any]:
    return _problem(problem)


@app.exception_handler(RequestValidationError)
def handle_invalid_request(exc: RequestValidationError) -> Response[Any]:
    errors = [{"where": ".".join(str(p) for p in e.get("loc", ()) if p != "body"), "message": e.get("msg", "")}
              for e in exc.errors()]
    detail = "; ".join(f"{e['where']}: {e['message']}" if e["where"] else e["message"] for e in errors)
    return _problem(ApiProblem(400, ApiErrorCode.INVALID_REQUEST, detail or "The request is not valid.",
                               errors=errors))


@app.not_found
def handle_not_found(exc: NotFoundError) -> Response[Any]:
    event = app.current_event
    return _problem(ApiProblem(404, ApiErrorCode.NOT_FOUND, f"No route {event.http_method} {event.path}."))


@app.exception_handler(Exception)
def handle_unexpected(exc: Exception) -> Response[Any]:
    logger.exception("unexpected error")
    metrics.add_metric(name="Errors", unit=MetricUnit.Count, value=1)
    return _problem(ApiProblem(500, ApiErrorCode.INTERNAL_ERROR, "The request failed on our side; try again."))


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    body = event.get("body") or ""
    if len(body) > MAX_BODY_BYTES:  # refused before anything parses it (the validation runs first in the resolver)
        problem = ApiProblem(413, ApiErrorCode.BODY_TOO_LARGE,
                             f"The request body is {len(body)} bytes; the limit is {MAX_BODY_BYTES}.")
        return {"statusCode": problem.status, "headers": {"Content-Type": PROBLEM_JSON},
                "body": problem.to_json(event.get("rawPath")), "isBase64Encoded": False}
    return app.resolve(event, context)
