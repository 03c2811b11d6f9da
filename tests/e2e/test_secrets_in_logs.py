"""No token or secret in any log the local stack keeps: the functions' output (what CloudWatch
Logs would hold), LocalStack's own log and the deploy logs, after requests with valid and bad
tokens and a forecast that read sales with the database password."""

from __future__ import annotations

import requests

from scripts.stack import ROOT
from tests.e2e.test_service import wait_task
from tests.fixtures.tokens import PREDICT_BODY, bad_tokens, leaks

STATE = ROOT / ".state"


def test_no_token_or_secret_in_the_local_stacks_logs(service):
    cases = bad_tokens(service.secret)
    sent = [service.user_token, service.admin_token]
    sent += [c.header.removeprefix("Bearer ") for c in cases if c.header]
    with requests.Session() as http:
        http.trust_env = False
        for case in cases:
            headers = {"Authorization": case.header} if case.header is not None else {}
            answer = http.post(
                f"{service.base}/api/predict/async", json=PREDICT_BODY, headers=headers, timeout=120
            )
            assert answer.status_code == 401, case.name
        user = {"Authorization": f"Bearer {service.user_token}"}
        queued = http.post(
            f"{service.base}/api/predict/async", json=PREDICT_BODY, headers=user, timeout=180
        )
        assert queued.status_code == 202, queued.text
        assert wait_task(service, queued.json()["task_id"])["status"] == "SUCCESS"
        admin = {"Authorization": f"Bearer {service.admin_token}"}
        assert http.get(f"{service.base}/api/admin/status", headers=admin, timeout=120).ok

    logs = [
        *sorted((STATE / "localstack" / "functions").glob("*.log")),
        STATE / "localstack" / "localstack.log",
        *sorted((STATE / "stacks").glob("*/deploy.log")),
    ]
    logs = [path for path in logs if path.exists()]
    assert any("siprems-e2e-AuthorizerFunction" in path.name for path in logs)
    found = {}
    lines = 0
    for path in logs:
        text = path.read_text(errors="replace")
        lines += text.count("\n")
        if problems := leaks(text, [*sent, service.secret, service.database_password]):
            found[str(path.relative_to(ROOT))] = problems[:5]
    print(f"searched {len(logs)} log files ({lines} lines) for {len(sent)} tokens and 2 secrets")
    assert found == {}
