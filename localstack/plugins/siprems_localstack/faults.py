"""Fault injection at LocalStack's AWS API layer, for the reliability tests.

A rule makes matching AWS requests fail as the real service would fail them (an error response
in the service's own protocol), before the request reaches the service: nothing is written.
The functions under test see a genuine AWS error through boto3 (with boto3's own retries), so
the project's code is exercised unchanged.

Rules are set through an internal endpoint of the running LocalStack:

    POST   /_siprems/faults          {"service": "s3", "operation": "PutObject",
                                      "match": {"Bucket": "my-bucket", "Key": "models/*"},
                                      "status": 500, "code": "InternalError",
                                      "message": "...", "times": null,
                                      "delay_seconds": 0}
                                     -> 201 {"id": ..., ...}
    GET    /_siprems/faults          -> {"rules": [... with "hits"]}
    DELETE /_siprems/faults          -> removes every rule
    DELETE /_siprems/faults/<id>     -> removes one rule

``operation`` and ``match`` are optional. ``match`` compares fields of the parsed request
(``Bucket``, ``Key``, ``TableName``, ``QueueUrl`` ...) for equality, or as a prefix when the
value ends with ``*``. ``times``: fail only that many matching requests (null: until removed).
``delay_seconds``: hold the request that long first (a hanging dependency); with ``"status":
null`` the request then goes on to the service. Every matched request counts as a hit of its
rule, so a test can check the fault was met.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass, field

from localstack.aws.api import CommonServiceException, RequestContext
from localstack.aws.chain import HandlerChain
from localstack.http import Request, Response

LOG = logging.getLogger(__name__)

PATH = "/_siprems/faults"


@dataclass
class FaultRule:
    id: int
    service: str
    operation: str | None = None
    match: dict[str, str] = field(default_factory=dict)
    status: int | None = 500
    code: str = "InternalError"
    message: str = "We encountered an internal error. Please try again. (injected fault)"
    times: int | None = None
    delay_seconds: float = 0
    hits: int = 0

    def matches(self, context: RequestContext) -> bool:
        if context.service is None or context.service.service_name != self.service:
            return False
        if self.operation and (
            context.operation is None or context.operation.name != self.operation
        ):
            return False
        request = context.service_request or {}
        for name, expected in self.match.items():
            actual = request.get(name)
            if not isinstance(actual, str):
                return False
            if expected.endswith("*"):
                if not actual.startswith(expected[:-1]):
                    return False
            elif actual != expected:
                return False
        return True


class FaultRegistry:
    """The active rules; shared by the request handler and the endpoint (thread safe)."""

    def __init__(self) -> None:
        self._rules: dict[int, FaultRule] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, spec: dict) -> FaultRule:
        if not isinstance(spec, dict) or not isinstance(spec.get("service"), str):
            raise ValueError('a rule needs "service" (e.g. "s3")')
        known = {
            "service",
            "operation",
            "match",
            "status",
            "code",
            "message",
            "times",
            "delay_seconds",
        }
        unknown = set(spec) - known
        if unknown:
            raise ValueError(f"unknown fields: {sorted(unknown)}")
        match = spec.get("match") or {}
        if not isinstance(match, dict) or not all(isinstance(v, str) for v in match.values()):
            raise ValueError('"match" must map request fields to strings')
        with self._lock:
            rule = FaultRule(id=next(self._ids), **{k: v for k, v in spec.items() if k != "match"})
            rule.match = dict(match)
            self._rules[rule.id] = rule
        LOG.info("fault rule %s added: %s", rule.id, asdict(rule))
        return rule

    def remove(self, rule_id: int | None = None) -> int:
        with self._lock:
            if rule_id is None:
                removed = len(self._rules)
                self._rules.clear()
                return removed
            return 1 if self._rules.pop(rule_id, None) else 0

    def rules(self) -> list[dict]:
        with self._lock:
            return [asdict(rule) for rule in self._rules.values()]

    def hit(self, context: RequestContext) -> FaultRule | None:
        """The rule that fails this request (counting the hit), if any."""
        with self._lock:
            for rule in self._rules.values():
                if rule.times is not None and rule.hits >= rule.times:
                    continue
                if rule.matches(context):
                    rule.hits += 1
                    return rule
        return None


REGISTRY = FaultRegistry()


def fail_matching_requests(chain: HandlerChain, context: RequestContext, response: Response):
    """Request handler (after the request is parsed, before the service runs it)."""
    rule = REGISTRY.hit(context)
    if rule is None:
        return
    if rule.delay_seconds:
        time.sleep(rule.delay_seconds)
    if rule.status:
        raise CommonServiceException(
            rule.code, rule.message, status_code=rule.status, sender_fault=rule.status < 500
        )


def _json(body: object, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def faults_endpoint(request: Request, **_kwargs) -> Response:
    if request.method == "GET":
        return _json({"rules": REGISTRY.rules()})
    if request.method == "DELETE":
        return _json({"removed": REGISTRY.remove()})
    try:
        rule = REGISTRY.add(json.loads(request.get_data() or b"null"))
    except (ValueError, TypeError) as exc:
        return _json({"error": str(exc)}, status=400)
    return _json(asdict(rule), status=201)


def fault_endpoint(request: Request, rule_id: str, **_kwargs) -> Response:
    try:
        removed = REGISTRY.remove(int(rule_id))
    except ValueError:
        removed = 0
    return _json({"removed": removed}, status=200 if removed else 404)


def register() -> None:
    from localstack.aws import handlers
    from localstack.services.edge import ROUTER

    handlers.serve_custom_service_request_handlers.append(fail_matching_requests)
    ROUTER.add(PATH, endpoint=faults_endpoint, methods=["GET", "POST", "DELETE"])
    ROUTER.add(f"{PATH}/<rule_id>", endpoint=fault_endpoint, methods=["DELETE"])
