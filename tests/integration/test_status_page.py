"""The status page's data (GET /api/admin/status), the pages (/api/status, /api/docs and the
Swagger UI files), the exported OpenAPI document and the CloudWatch dashboard. Over HTTP
through the in-process API Gateway (tests/fixtures/gateway.py): real handlers, moto, the
embedded PostgreSQL, real Prophet fits."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import requests
from siprems.auth import mint_token
from siprems.jobs.model import Job, JobError, JobType

from scripts.gen_events import SAMPLE_SIGNING_KEY
from tests.fixtures.app import load_template
from tests.fixtures.gateway import gateway  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[2]


def get(url: str, **kwargs) -> requests.Response:
    return requests.get(url, timeout=60, **kwargs)


def post(url: str, **kwargs) -> requests.Response:
    return requests.post(url, timeout=60, **kwargs)


ADMIN = {
    "Authorization": "Bearer "
    + mint_token(SAMPLE_SIGNING_KEY, user_id=1, email="o@x.io", role="admin")
}
USER = {"Authorization": "Bearer " + mint_token(SAMPLE_SIGNING_KEY, user_id=7, email="c@x.io")}


def test_status_data_shows_jobs_queues_failures_nightly_and_models(gateway, app):  # noqa: F811
    # A trained product (through the API: the worker runs between polls) ...
    task = post(f"{gateway.url}/api/tasks/training/product/BRD-001", headers=USER).json()
    for _ in range(20):
        if get(f"{gateway.url}/api/tasks/{task['task_id']}", headers=USER).status_code == 200:
            break
    # ... a failed job with its error, a job waiting in the queue, a dead letter.
    failed = Job.new(JobType.PREDICT, product_sku="CAK-002", params={"days": 7})
    app.services.store.create(failed)
    running = app.services.store.mark_started(failed.task_id, stale_after=timedelta(minutes=5))
    app.services.store.mark_failed(
        running.job, error=JobError(type="insufficient_data", message="CAK-002: 3 days of sales")
    )
    post(
        f"{gateway.url}/api/predict/async", headers=USER, json={"product_sku": "BRD-001", "days": 3}
    )
    app.sqs.send_message(QueueUrl=app.dlq_url, MessageBody='{"task_id": "poison"}')

    answer = get(f"{gateway.url}/api/admin/status", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    data = answer.json()
    assert data["jobs"]["SUCCESS"] == 1 and data["jobs"]["FAILURE"] == 1
    assert data["jobs"]["PENDING"] == 1 and set(data["jobs"]) == {
        "PENDING",
        "STARTED",
        "RETRY",
        "SUCCESS",
        "FAILURE",
        "REVOKED",
    }
    assert data["queue"]["visible"] == 1 and data["dead_letters"]["visible"] == 1
    [failure] = data["recent_failures"]
    assert failure["task_id"] == failed.task_id
    assert failure["error"] == {"type": "insufficient_data", "message": "CAK-002: 3 days of sales"}
    assert data["nightly"]["schedule"] == "cron(0 2 * * ? *)"
    assert re.match(r"^\d{4}-\d\d-\d\dT02:00:00\.000Z$", data["nightly"]["next_run"])
    [model] = data["models"]
    assert model["sku"] == "BRD-001" and 0 <= model["age_hours"] < 1
    assert 0 < model["accuracy"] <= 100 and model["mape"] > 0 and model["samples"] > 100
    assert 0 < model["coverage_80"] <= 1


def test_status_data_needs_an_admin_token(gateway):  # noqa: F811
    assert get(f"{gateway.url}/api/admin/status").status_code == 401
    assert get(f"{gateway.url}/api/admin/status", headers=USER).status_code == 403
    bad = {"Authorization": "Bearer " + mint_token("other-key-" * 4, user_id=1, email="o@x.io")}
    assert get(f"{gateway.url}/api/admin/status", headers=bad).status_code == 401


def test_status_page_is_a_page_without_data(gateway):  # noqa: F811
    answer = get(f"{gateway.url}/api/status")
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in answer.headers["Content-Security-Policy"]
    assert answer.headers["Cache-Control"] == "no-store"
    page = answer.text
    assert "<title>SIPREMS Forecast - status</title>" in page
    assert "/admin/status" in page and "Authorization" in page and "sessionStorage" in page
    assert "BRD-001" not in page  # nothing from the service is in the page itself


def test_docs_page_and_its_swagger_ui_files(gateway):  # noqa: F811
    page = get(f"{gateway.url}/api/docs")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "swagger-ui-bundle.js" in page.text and "/openapi.json" in page.text
    bundle = get(f"{gateway.url}/api/docs/swagger-ui-bundle.js")
    assert bundle.status_code == 200
    assert bundle.headers["Content-Type"].startswith("text/javascript")
    assert len(bundle.content) > 1_000_000 and "SwaggerUIBundle" in bundle.text
    css = get(f"{gateway.url}/api/docs/swagger-ui.css")
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    missing = get(f"{gateway.url}/api/docs/secrets.js")
    assert missing.status_code == 404 and missing.json()["type"] == "not_found"
    document = get(f"{gateway.url}/api/openapi.json").json()
    assert document["paths"]["/api/admin/status"]["get"]["tags"] == ["admin"]


def test_exported_openapi_document_is_in_sync():
    from siprems.http.openapi import openapi_document

    exported = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert exported == openapi_document(), (
        "docs/openapi.json is out of date: PYTHONPATH=layers/common/python "
        ".venv/bin/python -m siprems.http.openapi > docs/openapi.json"
    )


def test_public_routes_are_exactly_the_pages():
    from siprems.http.status_page import PUBLIC_PATHS

    template = load_template()
    public = {
        event["Properties"]["Path"]
        for event in template["Resources"]["StatusFunction"]["Properties"]["Events"].values()
        if (event["Properties"].get("Auth") or {}).get("Authorizer") == "NONE"
    }
    assert public == {*PUBLIC_PATHS, "/api/openapi.json"}


def test_dashboard_is_valid_and_shows_the_metrics_the_code_emits():
    dashboard = load_template()["Resources"]["OperationsDashboard"]["Properties"]
    body, names = dashboard["DashboardBody"]["Fn::Sub"]
    text = re.sub(r"\$\{[^}]+\}", "X", body)  # the values CloudFormation substitutes
    widgets = json.loads(text)["widgets"]
    metrics = {(m[0], m[1]) for w in widgets for m in w["properties"]["metrics"]}
    for name in ("JobsSubmitted", "JobsSucceeded", "JobsFailed", "JobsRejected", "FitSeconds"):
        assert ("SipremsForecast", name) in metrics
        emitted = any(
            f'name="{name}"' in path.read_text()
            for path in (ROOT / "layers/common/python/siprems").rglob("*.py")
        )
        assert emitted, name
    assert ("AWS/SQS", "ApproximateAgeOfOldestMessage") in metrics
    assert ("AWS/SQS", "ApproximateNumberOfMessagesVisible") in metrics
    assert set(names) == {"JobsQueueName", "DeadLetterQueueName"}


def test_sample_events_of_the_pages_and_the_status_data(app):
    from tests.fixtures.app import api_event, invoke, response_json

    data = invoke("status", api_event("status/status-data.json"))
    assert data["statusCode"] == 200 and response_json(data)["models"] == []
    page = invoke("status", api_event("status/status-page.json"))
    assert page["statusCode"] == 200 and "<html" in page["body"]
    assert invoke("status", api_event("status/docs.json"))["statusCode"] == 200
    css = invoke("status", api_event("status/docs-asset.json"))
    assert css["statusCode"] == 200
    assert css["multiValueHeaders"]["Content-Type"][0].startswith("text/css")
