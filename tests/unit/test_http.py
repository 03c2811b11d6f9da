"""The one HTTP layer: error mapping, validation answers, caller checks, OpenAPI."""

from __future__ import annotations

import json
from typing import Annotated

import pytest
from aws_lambda_powertools.event_handler.openapi.params import Body
from pydantic import BaseModel, Field
from siprems.errors import (
    ConflictError,
    DatabaseUnavailableError,
    InsufficientDataError,
    UnknownSkuError,
)
from siprems.http import error_response, new_resolver, principal
from siprems.http.submit_api import _status_of

from tests.fixtures.app import LambdaContext, api_event


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (UnknownSkuError("X-1"), 404, "unknown_sku"),
        (ConflictError("done"), 409, "conflict"),
        (InsufficientDataError("too little"), 422, "insufficient_data"),
        (DatabaseUnavailableError("down"), 503, "database_unavailable"),
    ],
)
def test_errors_map_to_status_and_body(error, status, code):
    response = error_response(error)
    assert response.status_code == status
    assert response.body["error"] == error.public_message
    assert response.body["type"] == code


def test_a_jobs_table_failure_is_not_called_the_model_store(aws):
    """DynamoDB throttling or an outage: the same code and retries as an S3 failure, and a
    sentence that names what failed (the table's name stays in the logs)."""
    import boto3
    from botocore.stub import Stubber
    from siprems.errors import StorageUnavailableError
    from siprems.jobs.store import JobStore

    resource = boto3.resource("dynamodb", region_name="us-east-1")
    store = JobStore(resource, "prod-jobs-table")
    with Stubber(resource.meta.client) as stub:
        stub.add_client_error("get_item", "ProvisionedThroughputExceededException")
        with pytest.raises(StorageUnavailableError) as caught:
            store.get("a-task")
    body = error_response(caught.value).body
    assert body["type"] == "storage_unavailable" and caught.value.http_status == 503
    assert "job store" in body["error"] and "prod-jobs-table" not in json.dumps(body)


def test_an_unreachable_database_is_named_in_the_logs_only():
    """The connection error names the server and its user (for operators); a client gets a
    503 that names neither, and so does a job's recorded error."""
    from siprems.jobs.model import JobError
    from siprems.sales.db import connect_url

    with pytest.raises(DatabaseUnavailableError) as caught:
        connect_url("postgresql://svc_app:pw@127.0.0.1:9/shopdb?connect_timeout=1&sslmode=disable")
    assert "svc_app" in caught.value.message and "127.0.0.1:9" in caught.value.message
    body = error_response(caught.value).body
    recorded = JobError.of(caught.value)
    for public in (body["error"], json.dumps(body), recorded.message):
        assert "svc_app" not in public and "127.0.0.1" not in public and "shopdb" not in public
    assert body["type"] == recorded.type == "database_unavailable"
    assert "unavailable" in body["error"]


def test_stored_error_types_map_back_to_their_status():
    assert _status_of("unknown_sku") == 404
    assert _status_of("insufficient_data") == 422
    assert _status_of("database_unavailable") == 503
    assert _status_of("something_else") == 500


class Payload(BaseModel):
    n: int = Field(ge=1, strict=True)


@pytest.fixture
def demo_app():
    app = new_resolver()

    @app.post("/api/predict/async")
    def echo(body: Annotated[Payload, Body(embed=False)]) -> dict:
        return {"n": body.n, "user": principal(app).user_id}

    @app.get("/api/admin/dlq")
    def admin() -> dict:
        return {"admin": principal(app, admin=True).user_id}

    def call(event):
        response = app.resolve(event, LambdaContext())
        headers = {k: v[-1] for k, v in response.get("multiValueHeaders", {}).items()}
        return response["statusCode"], json.loads(response["body"]), headers

    return call


def test_validation_error_is_422_with_the_field(demo_app):
    status, body, _ = demo_app(api_event("submit/predict-async.json", body={"n": 0}))
    assert status == 422
    assert body["type"] == "invalid_input" and "n" in body["error"]


def test_malformed_json_is_400(demo_app):
    status, body, _ = demo_app(api_event("submit/predict-async-malformed-json.json"))
    assert (status, body["type"]) == (400, "invalid_json")


def test_request_without_authorizer_context_is_refused(demo_app):
    event = api_event("submit/predict-async-no-authorizer.json", body={"n": 3})
    status, body, _ = demo_app(event)
    assert (status, body["type"]) == (401, "unauthorized")


def test_admin_route_checks_the_role_again(demo_app):
    status, body, _ = demo_app(api_event("status/dlq-non-admin.json"))
    assert (status, body["type"]) == (403, "forbidden")
    status, body, _ = demo_app(api_event("status/dlq.json"))
    assert (status, body) == (200, {"admin": "1"})


def test_ok_response_carries_cors_headers(demo_app):
    event = api_event("submit/predict-async.json", body={"n": 3})
    event["headers"]["Origin"] = "https://shop.example.com"
    event["multiValueHeaders"]["Origin"] = ["https://shop.example.com"]
    status, body, headers = demo_app(event)
    assert (status, body) == (200, {"n": 3, "user": "42"})
    assert headers["Access-Control-Allow-Origin"] == "*"


def test_openapi_document_lists_every_route_once():
    from siprems.http.openapi import openapi_document

    document = openapi_document()
    assert document["info"]["title"] == "SIPREMS Forecast API"
    operations = [(m, p) for p, ops in document["paths"].items() for m in ops]
    # the 11 API routes, the status data and page, the docs page and its files
    assert len(operations) == len(set(operations)) == 15
    assert "bearerAuth" in document["components"]["securitySchemes"]
