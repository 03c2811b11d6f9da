"""The bad-token matrix on every route of the template, through the in-process API Gateway
(the real authorizer and handlers): each bad token is 401 and changes nothing; a user's token
is 403 on the admin routes (those the OpenAPI document marks with the admin role) and an
admin's is let through; public routes stay public. Routes come from template.yaml, so a new
route is covered without touching this file."""

from __future__ import annotations

import pytest
from siprems.auth import mint_token
from siprems.http.openapi import openapi_document

from scripts.gen_events import SAMPLE_SIGNING_KEY
from tests.fixtures import gateway as gateway_module
from tests.fixtures.gateway import Gateway, template_routes
from tests.fixtures.tokens import PREDICT_BODY, bad_tokens, concrete_path, send_matrix

ROUTES = template_routes()
AUTHORIZED = [(r.method, r.path) for r in ROUTES if r.authorized]
PUBLIC = [(r.method, r.path) for r in ROUTES if not r.authorized]
# moto has no start_message_move_task: an admin's redrive is let through on the local stack
# (tests/e2e/test_auth_matrix.py), not here.
MOTO_LACKS = {("POST", "/api/admin/dlq/redrive")}


def admin_only(method: str, path: str) -> bool:
    """As the OpenAPI document says: the operation's security names the admin role."""
    operation = openapi_document()["paths"][path][method.lower()]
    return any(
        "admin" in scopes for req in operation.get("security", []) for scopes in req.values()
    )


def state(app) -> dict:
    """Everything a request could change: jobs, both queues, stored objects."""
    counts = {}
    for name, url in (("queue", app.queue_url), ("dlq", app.dlq_url)):
        attributes = app.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])
        counts[name] = {
            k: v for k, v in attributes["Attributes"].items() if k.startswith("ApproximateNumber")
        }
    objects = app.s3.list_object_versions(Bucket=app.bucket).get("Versions", [])
    return {
        "jobs": sorted(app.items(), key=lambda item: item["task_id"]),
        "queues": counts,
        "objects": sorted(o["Key"] + o["VersionId"] for o in objects),
    }


@pytest.fixture
def quiet_gateway(app):
    """The gateway without its worker turns: nothing moves unless a request moves it."""
    server = Gateway(app)
    server.after_request = lambda: None
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def existing_task(app, quiet_gateway) -> str:
    """A queued job, so the task routes (status, cancel) name a real task."""
    import requests

    token = mint_token(SAMPLE_SIGNING_KEY, user_id=7, email="owner@example.com")
    answer = requests.post(
        f"{quiet_gateway.url}/api/predict/async",
        json=PREDICT_BODY,
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert answer.status_code == 202, answer.text
    return answer.json()["task_id"]


def values(task_id: str) -> dict[str, str]:
    return {"task_id": task_id, "sku": "BRD-001", "asset": "swagger-ui.css"}


def test_the_template_has_authorized_admin_and_public_routes():
    assert len(AUTHORIZED) >= 11 and len(PUBLIC) >= 3
    assert sum(admin_only(*route) for route in AUTHORIZED) >= 4


def test_every_bad_token_is_401_on_every_route_and_changes_nothing(
    app, quiet_gateway, existing_task
):
    before = state(app)
    cases = bad_tokens(SAMPLE_SIGNING_KEY)
    answers = send_matrix(quiet_gateway.url, AUTHORIZED, cases, values(existing_task))
    print(
        f"auth matrix (in-process gateway): {len(answers)} requests, "
        f"{len(cases)} bad tokens x {len(AUTHORIZED)} routes"
    )
    assert len(answers) == len(cases) * len(AUTHORIZED)
    wrong = [a for a in answers if a.status != 401]
    assert wrong == []
    assert {a.body for a in answers} == {'{"error": "unauthorized", "type": "unauthorized"}'}
    assert state(app) == before


def test_a_user_is_refused_the_admin_routes_and_an_admin_is_let_through(
    app, quiet_gateway, existing_task
):
    user = mint_token(SAMPLE_SIGNING_KEY, user_id=7, email="clerk@example.com")
    admin = mint_token(SAMPLE_SIGNING_KEY, user_id=1, email="boss@example.com", role="admin")
    before = state(app)
    import requests

    def status(method: str, path: str, token: str) -> int:
        return requests.request(
            method,
            quiet_gateway.url + concrete_path(path, values(existing_task)),
            headers={"Authorization": f"Bearer {token}"},
            json=PREDICT_BODY if method == "POST" else None,
            timeout=60,
        ).status_code

    admin_routes = [route for route in AUTHORIZED if admin_only(*route)]
    assert {status(*route, user) for route in admin_routes} == {403}
    assert state(app) == before  # refused before anything was written
    for route in AUTHORIZED:
        if route in MOTO_LACKS:
            continue
        if admin_only(*route):
            assert status(*route, admin) not in (401, 403), route
        else:
            assert status(*route, user) not in (401, 403), route


def test_public_routes_need_no_token_and_ignore_a_bad_one(quiet_gateway):
    import requests

    cases = {c.name: c for c in bad_tokens(SAMPLE_SIGNING_KEY)}
    for method, path in PUBLIC:
        url = quiet_gateway.url + concrete_path(path, values("unused"))
        for case in (cases["missing header"], cases["alg none"], cases["wrong secret"]):
            headers = {"Authorization": case.header} if case.header else {}
            answer = requests.request(method, url, headers=headers, timeout=60)
            assert answer.status_code == 200, (method, path, case.name)


def test_handlers_refuse_what_a_misconfigured_gateway_lets_through(
    app, quiet_gateway, existing_task, monkeypatch
):
    """Defence in depth: with an authorizer policy that allows everything, a user is still
    refused the admin routes by the handlers; with no authorizer at all, every route that
    needs one answers 401."""
    import requests

    user = mint_token(SAMPLE_SIGNING_KEY, user_id=7, email="clerk@example.com")
    before = state(app)

    def status(method: str, path: str, token: str | None) -> int:
        return requests.request(
            method,
            quiet_gateway.url + concrete_path(path, values(existing_task)),
            headers={"Authorization": f"Bearer {token}"} if token else {},
            json=PREDICT_BODY if method == "POST" else None,
            timeout=60,
        ).status_code

    monkeypatch.setattr(gateway_module, "_allows", lambda policy, method_arn: True)
    admin_routes = [route for route in AUTHORIZED if admin_only(*route)]
    assert {status(*route, user) for route in admin_routes} == {403}

    quiet_gateway.routes = [
        gateway_module.Route(r.function, r.method, r.path, r.pattern, authorized=False)
        for r in quiet_gateway.routes
    ]
    assert {status(*route, None) for route in AUTHORIZED} == {401}
    assert state(app) == before
