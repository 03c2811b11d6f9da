"""No token or secret in any log line: everything the authorizer, the API functions and the
worker write (Powertools JSON logs on stdout, the logging module, stderr) while they handle
valid and bad tokens and read sales with a database password, is captured and searched for
JWT-shaped strings, each token sent, the signing key and the password."""

from __future__ import annotations

import logging
import secrets
import sys
import time

import requests
from siprems.auth import mint_token

from scripts.gen_events import SAMPLE_SIGNING_KEY
from tests.fixtures.app import handler_module
from tests.fixtures.gateway import gateway  # noqa: F401 - the fixture
from tests.fixtures.tokens import PREDICT_BODY, bad_tokens, leaks, with_password

FUNCTIONS = ("authorizer", "submit", "status", "worker")


def test_leaks_finds_tokens_and_secrets():
    token = mint_token(SAMPLE_SIGNING_KEY, user_id=1, email="e@example.com")
    assert leaks(f"refused {token}", [])
    assert leaks("sig " + token.rsplit(".", 1)[1], [token])
    assert leaks(f"key={SAMPLE_SIGNING_KEY}", [SAMPLE_SIGNING_KEY])
    assert leaks('{"level":"INFO","message":"token refused"}', [token]) == []


def test_no_token_or_secret_in_any_log_line(app, gateway, capfd, caplog, monkeypatch):  # noqa: F811
    from siprems.config import load_settings
    from siprems.jobs import services as services_module

    password = "pw-" + secrets.token_hex(12)
    database_url = with_password(load_settings().database_url, password)
    monkeypatch.setenv("DATABASE_URL", database_url)
    load_settings.cache_clear()
    services_module.get_services.cache_clear()
    caplog.set_level(logging.DEBUG)
    # The functions' loggers as their modules hold them, at DEBUG and writing to this test's
    # stdout (a handler keeps the stream it was made with, maybe an earlier test's capture).
    loggers = {id(m.logger): m.logger for m in map(handler_module, FUNCTIONS)}.values()
    restore = [(lg, lg.log_level, lg.registered_handler.stream) for lg in loggers]
    for lg in loggers:
        lg.setLevel("DEBUG")
        lg.registered_handler.setStream(sys.stdout)
    user = mint_token(SAMPLE_SIGNING_KEY, user_id=7, email="clerk@example.com")
    admin = mint_token(SAMPLE_SIGNING_KEY, user_id=1, email="boss@example.com", role="admin")
    cases = bad_tokens(SAMPLE_SIGNING_KEY)
    sent = [user, admin] + [c.header.removeprefix("Bearer ") for c in cases if c.header]
    try:
        with requests.Session() as http:
            http.trust_env = False

            def call(method: str, path: str, token_header: str | None, **kwargs):
                headers = {"Authorization": token_header} if token_header else {}
                return http.request(
                    method, gateway.url + path, headers=headers, timeout=120, **kwargs
                )

            for case in cases:  # every bad token, on a user and an admin route
                assert (
                    call("POST", "/api/predict/async", case.header, json=PREDICT_BODY).status_code
                    == 401
                )
                assert call("GET", "/api/admin/dlq", case.header).status_code == 401
            bearer = f"Bearer {user}"
            queued = call("POST", "/api/predict/async", bearer, json=PREDICT_BODY)
            assert queued.status_code == 202, queued.text
            task_id = queued.json()["task_id"]
            deadline = time.monotonic() + 120
            while (answer := call("GET", f"/api/tasks/{task_id}", bearer)).status_code == 202:
                assert time.monotonic() < deadline, answer.text
            assert answer.json()["status"] == "SUCCESS", answer.text  # the worker read sales
            assert call("POST", "/api/predict/async", bearer, json={"days": 7}).status_code == 422
            assert call("GET", "/api/admin/status", f"Bearer {admin}").status_code == 200
            assert call("GET", "/api/admin/dlq", bearer).status_code == 403
            # the database unreachable: the error is logged, its password must not be
            monkeypatch.setenv("DATABASE_URL", database_url.replace("siprems?", "siprems?port=1&"))
            load_settings.cache_clear()
            services_module.get_services.cache_clear()
            down = call("POST", "/api/tasks/training/product/BRD-001", bearer)
            assert down.status_code == 503, down.text
    finally:
        for lg, level, stream in restore:
            lg.setLevel(level)
            lg.registered_handler.setStream(stream)
    captured = capfd.readouterr()
    text = "\n".join([captured.out, captured.err, caplog.text])
    assert '"message":"token refused"' in text  # the logs were captured
    assert "database_unavailable" in text
    print(f"searched {len(text.splitlines())} log lines for {len(sent)} tokens and 2 secrets")
    assert leaks(text, [*sent, SAMPLE_SIGNING_KEY, password]) == []
