"""The status page and the API docs of the service deployed in the local stack, in headless
Chromium (Debian's package): served through API Gateway without the authorizer, reading the
admin data route with the token of the address fragment. The screenshot is kept in
.state/local/status-page.png to look at."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import Service, http
from tests.fixtures.browser import chromium as headless_chromium
from tests.fixtures.browser import needs_chromium

ROOT = Path(__file__).resolve().parents[2]
pytestmark = needs_chromium


def chromium(url: str, profile: Path, *extra: str) -> str:
    return headless_chromium(url, profile, *extra, budget_ms=15000, timeout=120)


def test_status_page_in_a_browser(service: Service, tmp_path):
    trained = http(
        "POST", f"{service.base}/api/tasks/training/product/BRD-001", token=service.user_token
    )
    assert trained.status == 202, trained.body
    data = http("GET", f"{service.base}/api/admin/status", token=service.admin_token)
    assert data.status == 200 and set(data.body) >= {"jobs", "queue", "dead_letters", "models"}
    assert http("GET", f"{service.base}/api/admin/status").status == 401
    url = f"{service.base}/api/status#token={service.admin_token}"
    shot = ROOT / ".state" / "local" / "status-page.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    chromium(url, tmp_path / "a", f"--screenshot={shot}")
    assert shot.read_bytes()[:4] == b"\x89PNG"
    dom = chromium(url, tmp_path / "b", "--dump-dom")
    assert "Jobs by status" in dom and "dead letters" in dom and "rate(1 minute)" in dom


def test_docs_page_in_a_browser(service: Service, tmp_path):
    dom = chromium(f"{service.base}/api/docs", tmp_path / "c", "--dump-dom")
    assert "SIPREMS Forecast API" in dom and "/api/predict/async" in dom
