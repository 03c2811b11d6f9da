"""The HTTP client of the API: one method per route, errors a person can act on.

Every failure is an ``ApiError`` whose message says what went wrong and what to do
(unreachable API, refused token, unknown SKU, ...); ``exit_code`` groups them for scripts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests

TERMINAL = frozenset({"SUCCESS", "FAILURE", "REVOKED"})

# Exit codes of the CLI, by kind of failure (documented in `siprems --help`).
EXIT_ERROR = 1  # the API refused the request or a job failed
EXIT_USAGE = 2  # bad command line (argparse's own code)
EXIT_UNREACHABLE = 3  # no answer from the API, or no such API at the URL
EXIT_AUTH = 4  # no token, bad or expired token, missing role
EXIT_NOT_FOUND = 5  # unknown SKU or task
EXIT_TIMEOUT = 6  # gave up waiting for a job

THROTTLED_RETRIES = 3  # a request the API stage throttled (429) is sent again after 1, 2, 4 s


class ApiError(Exception):
    """A failure with a message for people and an exit code for scripts."""

    def __init__(
        self,
        message: str,
        *,
        exit_code: int = EXIT_ERROR,
        status: int | None = None,
        type: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.status = status
        self.type = type
        self.body = body

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": self.message,
            "type": self.type or "error",
            "status": self.status,
            "exit_code": self.exit_code,
        }


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]


class Client:
    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float = 35.0,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not base_url:
            raise ApiError(
                "no API URL: pass --api-url or set SIPREMS_API_URL "
                "(the stack's ApiUrl output, e.g. https://abc123.execute-api.eu-west-1"
                ".amazonaws.com/prod)",
                exit_code=EXIT_USAGE,
                type="no_api_url",
            )
        if not base_url.startswith(("http://", "https://")):
            raise ApiError(
                f"the API URL must start with http:// or https:// (got {base_url!r})",
                exit_code=EXIT_USAGE,
                type="bad_api_url",
            )
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.session = session or requests.Session()
        self._sleep = sleep

    # --- routes ------------------------------------------------------------------------------
    def predict_async(self, sku: str, days: int) -> dict[str, Any]:
        return self._call("POST", "/api/predict/async", {"product_sku": sku, "days": days}).body

    def predict(self, sku: str, days: int) -> Answer:
        """The sync-compatible route: 200 with the forecast, or 202 with the task id."""
        return self._call("POST", "/api/predict", {"product_sku": sku, "days": days})

    def task(self, task_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/tasks/{_segment(task_id)}").body

    def train(self, sku: str) -> dict[str, Any]:
        return self._call("POST", f"/api/tasks/training/product/{_segment(sku)}").body

    def train_all(self) -> dict[str, Any]:
        return self._call("POST", "/api/tasks/training/all").body

    def active(self, limit: int = 50) -> dict[str, Any]:
        return self._call("GET", f"/api/tasks/active?limit={limit}").body

    def scheduled(self, limit: int = 50) -> dict[str, Any]:
        return self._call("GET", f"/api/tasks/scheduled?limit={limit}").body

    def cancel(self, task_id: str) -> dict[str, Any]:
        return self._call("POST", f"/api/tasks/{_segment(task_id)}/cancel").body

    def dead_letters(self, limit: int = 10) -> dict[str, Any]:
        return self._call("GET", f"/api/admin/dlq?limit={limit}").body

    def redrive(self) -> dict[str, Any]:
        return self._call("POST", "/api/admin/dlq/redrive").body

    def overview(self) -> dict[str, Any]:
        return self._call("GET", "/api/admin/status").body

    # --- waiting -----------------------------------------------------------------------------
    def watch(
        self,
        task_id: str,
        *,
        timeout: float,
        poll_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> Iterator[dict[str, Any]]:
        """The task as seen at each poll, until it is terminal; ApiError on timeout."""
        deadline = clock() + timeout
        while True:
            task = self.task(task_id)
            yield task
            if task.get("status") in TERMINAL:
                return
            if clock() >= deadline:
                raise ApiError(
                    f"task {task_id} still {task.get('status')} after {timeout:.0f} s; "
                    f"check it later with: siprems status {task_id}",
                    exit_code=EXIT_TIMEOUT,
                    type="timeout",
                    body=task,
                )
            sleep(poll_seconds)

    # --- HTTP --------------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Answer:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        url = self.base_url + path
        for attempt in range(THROTTLED_RETRIES + 1):
            response = self._send(method, url, body, headers)
            if response.status_code != 429 or attempt == THROTTLED_RETRIES:
                break
            # the API stage's throttling (429, nothing done): the same request, a little later
            self._sleep(float(2**attempt))
        try:
            data = response.json() if response.content else {}
        except ValueError:
            data = {"error": response.text[:200].strip() or response.reason}
        if not isinstance(data, dict):
            data = {"data": data}
        if response.status_code >= 400:
            raise _error(response.status_code, data, self, method, path)
        return Answer(response.status_code, data)

    def _send(
        self, method: str, url: str, body: dict[str, Any] | None, headers: dict[str, str]
    ) -> requests.Response:
        try:
            return self.session.request(
                method, url, json=body, headers=headers, timeout=self.timeout
            )
        except requests.ConnectionError as exc:
            raise ApiError(
                f"cannot reach the API at {self.base_url} ({_reason(exc)}); is the service "
                "running (make up) and is the URL right (--api-url / SIPREMS_API_URL)?",
                exit_code=EXIT_UNREACHABLE,
                type="unreachable",
            ) from exc
        except requests.Timeout as exc:
            raise ApiError(
                f"the API at {self.base_url} did not answer within {self.timeout:.0f} s",
                exit_code=EXIT_UNREACHABLE,
                type="unreachable",
            ) from exc


def _error(status: int, body: dict[str, Any], client: Client, method: str, path: str) -> ApiError:
    kind = str(body.get("type") or "")
    detail = str(body.get("error") or body.get("message") or "").strip()
    wrong_url = (
        f"no such route {method} {path} at {client.base_url}: is the API URL right? "
        '(local stack: each make up deploys a new API id; eval "$(.venv/bin/siprems token '
        '--env)" sets the current one)'
    )
    if status == 401:
        if not client.token:
            message = (
                "no token: pass --token or set SIPREMS_TOKEN "
                "(for the local stack: export SIPREMS_TOKEN=$(siprems token))"
            )
        else:
            message = (
                "the API refused the token (missing, malformed, expired or signed with "
                "another key); get a fresh one (local stack: siprems token)"
            )
        return ApiError(message, exit_code=EXIT_AUTH, status=status, type="unauthorized", body=body)
    if status == 403:
        message = (
            f"{method} {path} needs the admin role; this token does not have it "
            "(local stack: siprems token --role admin)"
        )
        # A stack deployed before the template's own 404 for it: API Gateway answers a route
        # that does not exist with 403 "Missing Authentication Token".
        if "missing authentication token" in detail.lower():
            return ApiError(wrong_url, exit_code=EXIT_UNREACHABLE, status=status, body=body)
        return ApiError(message, exit_code=EXIT_AUTH, status=status, type="forbidden", body=body)
    if status == 404:
        # "no such route": the gateway's answer, no function has this route. No ``type``:
        # not this API's answer at all (every error of it has one), e.g. LocalStack's for an
        # API id that a restart replaced.
        if detail == "no such route" or not kind:
            text = wrong_url if detail == "no such route" else f"{wrong_url}; it said: {detail}"
            return ApiError(text, exit_code=EXIT_UNREACHABLE, status=status, body=body)
        return ApiError(
            detail or f"not found: {path}",
            exit_code=EXIT_NOT_FOUND,
            status=status,
            type=kind or "not_found",
            body=body,
        )
    message = detail or f"HTTP {status}"
    if status >= 500:
        message = f"the service failed ({message}); try again, or see the function logs"
    return ApiError(message, status=status, type=kind or "http_error", body=body)


def _segment(value: str) -> str:
    return quote(value, safe="")


def _reason(exc: requests.ConnectionError) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out"):
        if marker in text:
            return marker.lower()
    return "connection failed"
