"""The status page and the API docs in a real headless browser (Debian's Chromium), against the
real handlers behind the in-process API Gateway: the page signs in with the token of its
address fragment, calls the admin route and renders it; the docs page renders Swagger UI from
the API's own files. Skipped where Chromium is not installed (apt-get install chromium)."""

from __future__ import annotations

from pathlib import Path

import requests
from siprems.auth import mint_token

from scripts.gen_events import SAMPLE_SIGNING_KEY
from tests.fixtures.browser import chromium, needs_chromium
from tests.fixtures.gateway import gateway  # noqa: F401 - the fixture

pytestmark = needs_chromium
ADMIN = mint_token(SAMPLE_SIGNING_KEY, user_id=1, email="ops@example.com", role="admin")
USER = mint_token(SAMPLE_SIGNING_KEY, user_id=7, email="clerk@example.com")


def browse(url: str, profile: Path, *, screenshot: Path | None = None) -> str:
    """The DOM after the page's scripts ran (and a screenshot if asked)."""
    if screenshot is not None:
        chromium(url, profile, f"--screenshot={screenshot}")
    return chromium(url, profile, "--dump-dom")


def test_status_page_renders_the_service_state(gateway, app, tmp_path):  # noqa: F811
    task = requests.post(
        f"{gateway.url}/api/tasks/training/product/BRD-001",
        headers={"Authorization": f"Bearer {USER}"},
        timeout=60,
    ).json()
    for _ in range(20):  # the gateway's worker runs between polls
        status = requests.get(
            f"{gateway.url}/api/tasks/{task['task_id']}",
            headers={"Authorization": f"Bearer {USER}"},
            timeout=60,
        )
        if status.status_code == 200:
            break
    shot = tmp_path / "status.png"
    dom = browse(f"{gateway.url}/api/status#token={ADMIN}", tmp_path / "p1", screenshot=shot)
    assert shot.read_bytes()[:4] == b"\x89PNG"
    assert "Jobs by status" in dom and "BRD-001" in dom  # the model row was rendered
    assert "cron(0 2 * * ? *)" in dom
    assert "no failed jobs" in dom
    assert ADMIN not in dom  # the token left the address and the page


def test_status_page_without_a_token_asks_for_one(gateway, tmp_path):  # noqa: F811
    dom = browse(f"{gateway.url}/api/status", tmp_path / "p2")
    assert "Paste an access token" in dom
    refused = browse(f"{gateway.url}/api/status#token={USER}", tmp_path / "p3")
    assert "does not have the admin role" in refused


def test_docs_page_renders_swagger_ui(gateway, tmp_path):  # noqa: F811
    shot = tmp_path / "docs.png"
    dom = browse(f"{gateway.url}/api/docs", tmp_path / "p4", screenshot=shot)
    assert shot.read_bytes()[:4] == b"\x89PNG"
    assert "SIPREMS Forecast API" in dom
    assert "/api/predict/async" in dom and "/api/admin/status" in dom
