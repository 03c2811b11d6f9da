"""Writes events/: one sample event per function and route, valid input for `sam local invoke`.

    .venv/bin/python -m scripts.gen_events            # rewrite events/
    .venv/bin/python -m scripts.gen_events --check    # fail if events/ is out of date

Shapes follow what AWS sends: API Gateway REST proxy events (with the authorizer context a
Lambda REQUEST authorizer passes on), authorizer REQUEST events, an SQS batch, an EventBridge
scheduled event. Tokens are signed with SAMPLE_SIGNING_KEY, a public key for these samples
only: a deployment uses its own key (SSM parameter), so these tokens are worthless there.
To invoke the authorizer locally with them, set JWT_SECRET_KEY to SAMPLE_SIGNING_KEY.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jwt

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"

SAMPLE_SIGNING_KEY = "siprems-sample-events-only-not-a-deployment-key"
REGION = "us-east-1"
ACCOUNT = "123456789012"
API_ID = "abcdef1234"
STAGE = "prod"
SAMPLE_TASK_ID = "3f2b8c1e-7d4a-4c9b-9e2f-5a6b7c8d9e0f"
FAR_FUTURE = int(datetime(2099, 1, 1, tzinfo=UTC).timestamp())
ISSUED = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())

USER = {"user_id": "42", "email": "clerk@example.com", "role": "user"}
ADMIN = {"user_id": "1", "email": "admin@example.com", "role": "admin"}


def token(
    claims: dict[str, Any] | None = None, *, key: str = SAMPLE_SIGNING_KEY, **overrides: Any
) -> str:
    body = {
        "user_id": 42,
        "email": "clerk@example.com",
        "type": "access",
        "iat": ISSUED,
        "exp": FAR_FUTURE,
        **(claims or {}),
        **overrides,
    }
    return jwt.encode(body, key, algorithm="HS256")


def unsigned_token(alg: str) -> str:
    """A token whose header names another algorithm (alg none, RS256), signature bogus."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    claims = {
        "user_id": 42,
        "email": "clerk@example.com",
        "type": "access",
        "iat": ISSUED,
        "exp": FAR_FUTURE,
        "role": "admin",
    }
    signature = "" if alg == "none" else part({"sig": "forged"})
    return f"{part({'alg': alg, 'typ': 'JWT'})}.{part(claims)}.{signature}"


USER_TOKEN = token()
ADMIN_TOKEN = token({"user_id": 1, "email": "admin@example.com", "role": "admin"})


def method_arn(method: str, path: str) -> str:
    return f"arn:aws:execute-api:{REGION}:{ACCOUNT}:{API_ID}/{STAGE}/{method}{path}"


def api_event(
    method: str,
    resource: str,
    path: str,
    *,
    body: Any = None,
    raw_body: str | None = None,
    path_parameters: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    caller: dict[str, str] | None = USER,
    bearer: str | None = USER_TOKEN,
) -> dict[str, Any]:
    headers = {
        "Accept": "application/json",
        "Content-Type": "application/json",
        "Host": f"{API_ID}.execute-api.{REGION}.amazonaws.com",
        "User-Agent": "siprems-sample",
        "X-Forwarded-Proto": "https",
    }
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    if raw_body is None and body is not None:
        raw_body = json.dumps(body)
    context: dict[str, Any] = {
        "accountId": ACCOUNT,
        "apiId": API_ID,
        "domainName": f"{API_ID}.execute-api.{REGION}.amazonaws.com",
        "httpMethod": method,
        "identity": {"sourceIp": "127.0.0.1", "userAgent": "siprems-sample"},
        "path": f"/{STAGE}{path}",
        "protocol": "HTTP/1.1",
        "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
        "requestTime": "28/Nov/2026:12:00:00 +0000",
        "requestTimeEpoch": 1795867200000,
        "resourceId": "abc123",
        "resourcePath": resource,
        "stage": STAGE,
    }
    if caller is not None:
        context["authorizer"] = {
            "principalId": caller["user_id"],
            "integrationLatency": 3,
            **caller,
        }
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": context,
        "body": raw_body,
        "isBase64Encoded": False,
    }


def authorizer_event(
    method: str, resource: str, path: str, authorization: str | None
) -> dict[str, Any]:
    headers = {"Accept": "application/json", "Host": f"{API_ID}.execute-api.{REGION}.amazonaws.com"}
    if authorization is not None:
        headers["Authorization"] = authorization
    return {
        "type": "REQUEST",
        "methodArn": method_arn(method, path),
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": {},
        "pathParameters": {},
        "stageVariables": {},
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": API_ID,
            "httpMethod": method,
            "path": f"/{STAGE}{path}",
            "requestId": "2f1d4c3b-0000-4000-8000-000000000001",
            "resourceId": "abc123",
            "resourcePath": resource,
            "stage": STAGE,
            "identity": {"sourceIp": "127.0.0.1"},
        },
    }


def sqs_record(message_id: str, body: dict[str, Any] | str) -> dict[str, Any]:
    return {
        "messageId": message_id,
        "receiptHandle": f"sample-receipt-{message_id}",
        "body": body if isinstance(body, str) else json.dumps(body, separators=(",", ":")),
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1795867200000",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1795867200100",
        },
        "messageAttributes": {},
        "md5OfBody": "",
        "eventSource": "aws:sqs",
        "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:siprems-forecast-JobsQueue",
        "awsRegion": REGION,
    }


def build() -> dict[str, Any]:
    tid = SAMPLE_TASK_ID
    task_path = {"task_id": tid}
    e: dict[str, Any] = {}

    # --- authorizer -------------------------------------------------------------------------
    tasks = ("GET", "/api/tasks/{task_id}", f"/api/tasks/{tid}")
    train_all = ("POST", "/api/tasks/training/all", "/api/tasks/training/all")
    dlq = ("GET", "/api/admin/dlq", "/api/admin/dlq")
    e["authorizer/valid-user.json"] = authorizer_event(*tasks, f"Bearer {USER_TOKEN}")
    e["authorizer/valid-admin.json"] = authorizer_event(*train_all, f"Bearer {ADMIN_TOKEN}")
    e["authorizer/user-on-admin-route.json"] = authorizer_event(*dlq, f"Bearer {USER_TOKEN}")
    e["authorizer/missing-token.json"] = authorizer_event(*tasks, None)
    e["authorizer/not-bearer.json"] = authorizer_event(*tasks, f"Basic {USER_TOKEN}")
    e["authorizer/expired-token.json"] = authorizer_event(
        *tasks, "Bearer " + token(iat=ISSUED - 7200, exp=ISSUED - 3600)
    )
    e["authorizer/bad-signature.json"] = authorizer_event(
        *tasks, "Bearer " + token(key="another-key-that-is-not-the-signing-key-0000")
    )
    e["authorizer/alg-none.json"] = authorizer_event(*tasks, "Bearer " + unsigned_token("none"))
    e["authorizer/alg-rs256.json"] = authorizer_event(*tasks, "Bearer " + unsigned_token("RS256"))
    e["authorizer/refresh-token.json"] = authorizer_event(*tasks, "Bearer " + token(type="refresh"))
    e["authorizer/malformed-token.json"] = authorizer_event(*tasks, "Bearer not.a.jwt")

    # --- submit -----------------------------------------------------------------------------
    def predict(path: str, body: Any = None, raw: str | None = None, **kw: Any) -> dict:
        return api_event("POST", path, path, body=body, raw_body=raw, **kw)

    good = {"product_sku": "BRD-001", "days": 7}
    e["submit/predict-async.json"] = predict("/api/predict/async", good)
    e["submit/predict-sync.json"] = predict("/api/predict", good)
    e["submit/predict-async-days-0.json"] = predict("/api/predict/async", {**good, "days": 0})
    e["submit/predict-async-days-366.json"] = predict("/api/predict/async", {**good, "days": 366})
    e["submit/predict-async-days-string.json"] = predict(
        "/api/predict/async", {**good, "days": "x"}
    )
    e["submit/predict-async-missing-sku.json"] = predict("/api/predict/async", {"days": 7})
    e["submit/predict-async-unknown-sku.json"] = predict(
        "/api/predict/async", {"product_sku": "NOPE-404", "days": 7}
    )
    e["submit/predict-async-malformed-json.json"] = predict(
        "/api/predict/async", raw='{"product_sku": "BRD-001", "days": '
    )
    e["submit/predict-async-no-authorizer.json"] = predict(
        "/api/predict/async", good, caller=None, bearer=None
    )
    e["submit/train-product.json"] = api_event(
        "POST",
        "/api/tasks/training/product/{sku}",
        "/api/tasks/training/product/BRD-001",
        path_parameters={"sku": "BRD-001"},
    )
    e["submit/train-product-unknown-sku.json"] = api_event(
        "POST",
        "/api/tasks/training/product/{sku}",
        "/api/tasks/training/product/NOPE-404",
        path_parameters={"sku": "NOPE-404"},
    )
    e["submit/train-all.json"] = api_event(
        "POST",
        "/api/tasks/training/all",
        "/api/tasks/training/all",
        caller=ADMIN,
        bearer=ADMIN_TOKEN,
    )
    e["submit/train-all-non-admin.json"] = api_event(
        "POST", "/api/tasks/training/all", "/api/tasks/training/all"
    )

    # --- status -----------------------------------------------------------------------------
    e["status/task.json"] = api_event(
        "GET", "/api/tasks/{task_id}", f"/api/tasks/{tid}", path_parameters=task_path
    )
    e["status/predict-task.json"] = api_event(
        "GET",
        "/api/predict/task/{task_id}",
        f"/api/predict/task/{tid}",
        path_parameters=task_path,
    )
    e["status/active.json"] = api_event("GET", "/api/tasks/active", "/api/tasks/active")
    e["status/scheduled.json"] = api_event("GET", "/api/tasks/scheduled", "/api/tasks/scheduled")
    e["status/cancel.json"] = api_event(
        "POST",
        "/api/tasks/{task_id}/cancel",
        f"/api/tasks/{tid}/cancel",
        path_parameters=task_path,
    )
    e["status/dlq.json"] = api_event(
        "GET", "/api/admin/dlq", "/api/admin/dlq", caller=ADMIN, bearer=ADMIN_TOKEN
    )
    e["status/dlq-non-admin.json"] = api_event("GET", "/api/admin/dlq", "/api/admin/dlq")
    e["status/dlq-redrive.json"] = api_event(
        "POST",
        "/api/admin/dlq/redrive",
        "/api/admin/dlq/redrive",
        caller=ADMIN,
        bearer=ADMIN_TOKEN,
    )
    e["status/openapi.json"] = api_event(
        "GET", "/api/openapi.json", "/api/openapi.json", caller=None, bearer=None
    )
    e["status/status-data.json"] = api_event(
        "GET", "/api/admin/status", "/api/admin/status", caller=ADMIN, bearer=ADMIN_TOKEN
    )
    e["status/status-page.json"] = api_event(
        "GET", "/api/status", "/api/status", caller=None, bearer=None
    )
    e["status/docs.json"] = api_event("GET", "/api/docs", "/api/docs", caller=None, bearer=None)
    e["status/docs-asset.json"] = api_event(
        "GET",
        "/api/docs/{asset}",
        "/api/docs/swagger-ui.css",
        path_parameters={"asset": "swagger-ui.css"},
        caller=None,
        bearer=None,
    )

    # --- worker -----------------------------------------------------------------------------
    e["worker/sqs-batch.json"] = {
        "Records": [
            sqs_record(
                "059f36b4-87a3-44ab-83d2-661975830a7d",
                {"task_id": tid, "type": "predict", "product_sku": "BRD-001"},
            ),
        ]
    }
    e["worker/sqs-poison.json"] = {
        "Records": [
            sqs_record("2e1424d4-f796-459a-8184-9c92662be6da", "this is not a job message"),
        ]
    }

    # --- train_all --------------------------------------------------------------------------
    e["train_all/schedule.json"] = {
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": "2026-11-29T02:00:00Z",
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/siprems-forecast-Nightly"],
        "detail": {},
    }
    e["train_all/api-parent.json"] = {"parent_id": tid}
    return e


def render(event: Any) -> str:
    return json.dumps(event, indent=2, sort_keys=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare with events/")
    args = parser.parse_args(argv)
    stale = []
    for name, event in build().items():
        path = EVENTS / name
        text = render(event)
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if stale:
        print("out of date (run python -m scripts.gen_events):", *stale, sep="\n  ")
        return 1
    if not args.check:
        print(f"wrote {len(build())} events under {EVENTS.relative_to(ROOT)}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
