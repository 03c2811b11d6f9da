"""Schema-driven fuzzing with schemathesis: the service's own OpenAPI document, fetched from
the local stack, against the API behind the real authorizer with a valid admin token. Every
check schemathesis has must pass: no server errors, status codes, content types, headers and
bodies as documented, bad input refused, auth not ignored.

Bounded for CI: ``SIPREMS_FUZZ_EXAMPLES`` examples per operation (default 10), a fixed seed
(``SIPREMS_FUZZ_SEED``). Left out, with the reason:
- ``POST /api/tasks/training/all``: its only input is the token (the auth matrix covers it),
  and each call queues a fit of every product;
- the ``unsupported_method`` check: API Gateway itself answers a method a resource does not
  have with 403 "Missing Authentication Token" before any function runs (as on AWS), not 405.

One failure is LocalStack's, not the service's, and is reported but let through: its API Gateway
fails (500 "Error in apigateway invocation: list index out of range") on a request whose
Content-Type is multipart without a boundary, before any function runs; on AWS the request
reaches the function, which answers 415 (tests/unit/test_fuzz_findings.py).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from scripts.stack import ROOT

EXAMPLES = int(os.environ.get("SIPREMS_FUZZ_EXAMPLES", "10"))
SEED = int(os.environ.get("SIPREMS_FUZZ_SEED", "20261129"))
EXCLUDED_OPERATIONS = ["POST /api/tasks/training/all"]
EXCLUDED_CHECKS = ["unsupported_method"]
LOCALSTACK_GAP = "Error in apigateway invocation: list index out of range"


def failures(output: str) -> list[str]:
    """Each failed test case of the report: its check codes and its answer."""
    return re.split(r"\n\d+\. Test Case ID: ", output)[1:]


def localstack_gap(case: str) -> bool:
    return LOCALSTACK_GAP in case and set(re.findall(r"- (ST\d+) ", case)) == {"ST102"}


@pytest.mark.timeout(900)
def test_the_api_keeps_its_openapi_contract_under_fuzzing(service, tmp_path: Path):
    har = tmp_path / "requests.har"
    command = [
        str(ROOT / ".venv" / "bin" / "st"),
        "run",
        f"{service.base}/api/openapi.json",
        "--url",
        service.base,
        "--header",
        f"Authorization: Bearer {service.admin_token}",
        "--checks",
        "all",
        "--exclude-checks",
        ",".join(EXCLUDED_CHECKS),
        *[arg for op in EXCLUDED_OPERATIONS for arg in ("--exclude-name", op)],
        "--max-examples",
        str(EXAMPLES),
        "--seed",
        str(SEED),
        "--workers",
        "2",
        "--generation-database",
        "none",
        "--request-timeout",
        "120",
        # speed is measured by the benchmarks, not here (a shared machine is often slow)
        "--max-response-time",
        "120",
        "--no-color",
        "--report",
        "har",
        "--report-har-path",
        str(har),
    ]
    result = subprocess.run(  # noqa: S603 - the project's own tool
        command, capture_output=True, text=True, check=False, cwd=tmp_path
    )
    entries = json.loads(har.read_text())["log"]["entries"] if har.exists() else []
    statuses: dict[int, int] = {}
    for entry in entries:
        status = entry["response"]["status"]
        statuses[status] = statuses.get(status, 0) + 1
    summary = [line for line in result.stdout.splitlines() if "generated" in line]
    print(
        f"schemathesis: {len(entries)} requests, {EXAMPLES} examples per operation, seed {SEED}; "
        f"answers by status {dict(sorted(statuses.items()))}; {' '.join(summary).strip()}"
    )
    cases = failures(result.stdout)
    known = [case for case in cases if localstack_gap(case)]
    if known:
        print(f"schemathesis: {len(known)} failures of LocalStack's API Gateway let through")
    if result.returncode != 0:
        assert cases and len(known) == len(cases), result.stdout[-6000:] + result.stderr[-2000:]
    assert entries, "no request was recorded"
    assert not [s for s in statuses if s >= 500] or known
