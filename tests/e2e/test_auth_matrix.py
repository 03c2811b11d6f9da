"""The bad-token matrix on the local stack: every route of template.yaml behind API Gateway,
the authorizer run by the project's LocalStack plugin as a Lambda function. Each bad token is
401 with the template's error body and writes no job; a user's token is 403 on the admin
routes and an admin's is let through; the public pages stay public."""

from __future__ import annotations

import time

import pytest
import requests

from scripts import stack
from tests.e2e.test_service import wait_task
from tests.fixtures.gateway import template_routes
from tests.fixtures.tokens import PREDICT_BODY, bad_tokens, concrete_path, send_matrix
from tests.integration.test_auth_matrix import admin_only

MATRIX_USER = 4242  # every bad token names this user (tampered ones the next id)
ROUTES = template_routes()
AUTHORIZED = [(r.method, r.path) for r in ROUTES if r.authorized]
PUBLIC = [(r.method, r.path) for r in ROUTES if not r.authorized]
UNAUTHORIZED = {"error": "unauthorized", "type": "unauthorized"}


def jobs_requested_by(service, users: set[str]) -> list[dict]:
    table = stack.client("dynamodb")
    pages = table.get_paginator("scan").paginate(TableName=service.outputs["JobsTableName"])
    return [
        item
        for page in pages
        for item in page["Items"]
        if item.get("requested_by", {}).get("S") in users
    ]


@pytest.mark.timeout(900)  # about 360 requests, each through the authorizer function
def test_every_bad_token_is_401_on_every_route_and_writes_nothing(service):
    submitted = requests.post(
        f"{service.base}/api/predict/async",
        json=PREDICT_BODY,
        headers={"Authorization": f"Bearer {service.user_token}"},
        timeout=180,  # the first call may start the function cold on a busy machine
    )
    assert submitted.status_code == 202, submitted.text
    task_id = submitted.json()["task_id"]
    finished = wait_task(service, task_id)
    values = {"task_id": task_id, "sku": "BRD-001", "asset": "swagger-ui.css"}
    cases = bad_tokens(service.secret, user_id=MATRIX_USER)

    started = time.monotonic()
    answers = send_matrix(service.base, AUTHORIZED, cases, values, workers=4)
    elapsed = time.monotonic() - started
    print(
        f"auth matrix (local stack): {len(answers)} requests ({len(cases)} bad tokens x "
        f"{len(AUTHORIZED)} routes) in {elapsed:.1f} s"
    )
    assert [a for a in answers if a.status != 401] == []
    assert {a.body for a in answers} == {'{"error": "unauthorized", "type": "unauthorized"}'}
    assert jobs_requested_by(service, {str(MATRIX_USER), str(MATRIX_USER + 1)}) == []
    again = wait_task(service, task_id)  # the cancel route did not revoke it
    assert (again["status"], again.get("finished_at")) == (
        finished["status"],
        finished.get("finished_at"),
    )


def test_admin_routes_refuse_a_user_and_let_an_admin_through(service):
    values = {"task_id": "0b7c1d1e-0000-4000-8000-000000000000", "sku": "BRD-001"}

    def status(method: str, path: str, token: str) -> int:
        return requests.request(
            method,
            service.base + concrete_path(path, values),
            headers={"Authorization": f"Bearer {token}"},
            json=PREDICT_BODY if method == "POST" else None,
            timeout=60,
        ).status_code

    admin_routes = [route for route in AUTHORIZED if admin_only(*route)]
    assert {status(*route, service.user_token) for route in admin_routes} == {403}
    # training every product is left out: it queues a fit of every product (the fast tier
    # and test_service cover it); the others only read or move dead letters.
    for route in admin_routes:
        if route != ("POST", "/api/tasks/training/all"):
            assert status(*route, service.admin_token) in (200, 202), route


def test_public_routes_need_no_token_and_ignore_a_bad_one(service):
    cases = {c.name: c for c in bad_tokens(service.secret)}
    for method, path in PUBLIC:
        url = service.base + concrete_path(path, {"asset": "swagger-ui.css"})
        for case in (cases["missing header"], cases["alg none"], cases["wrong secret"]):
            headers = {"Authorization": case.header} if case.header else {}
            assert requests.request(method, url, headers=headers, timeout=60).status_code == 200
