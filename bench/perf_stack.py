"""Through the local stack: submit latency, where it goes, and submit-to-result.

    SIPREMS_LOCALSTACK_PORT=4571 .venv/bin/python -m bench.perf_stack [--submits 500]

Starts what is not running (LocalStack on the host with the project's plugins, the embedded
PostgreSQL with the Kiel data), deploys template.yaml as its own stack ``siprems-perf`` (the
nightly rule off) and stops afterwards only what it started. Then, as a client over HTTP:

- **submit latency**: ``--submits`` sequential ``POST /api/predict/async`` (30 days of BRD-001)
  with a user token on one keep-alive connection: LocalStack's gateway, API Gateway's REST
  chain, the REQUEST authorizer (cached per token, as API Gateway does), the submit Lambda as a
  local process (product check in PostgreSQL, conditional ``PutItem``, ``SendMessage``), 202.
  The worker's event source mapping is disabled meanwhile, so the figure is the submit path
  alone on a machine not busy with forecasts; the queued jobs are purged afterwards. Next to
  the latencies, the CPU time LocalStack and its function processes spent per submit (what
  the machine's load moves least).
- **where the time goes**, each on the same warm stack: a request refused before any Lambda
  (no token: 401 from the authorizer step), a cache-missing authorizer (a new token each
  time), ``lambda.invoke`` of the submit function with the same API event (LocalStack's
  invoke path without the gateway), the handler's own duration (the runtime's ``REPORT``
  lines), and the handler's calls one by one from this process (PostgreSQL product check,
  ``PutItem``, ``SendMessage``).
- **submit to result**: ``POST`` then polling ``GET /api/tasks/{id}`` every 20 ms until it is
  terminal, for a product with a stored model (``--stored`` runs) and for one whose model was
  deleted first, so the worker trains it (``--first-train`` runs); the first of each
  includes the worker's cold start and is reported apart.

Writes ``bench/results/perf_stack.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.perf_common import ROOT, percentile, summary, write_result

STACK_NAME = "siprems-perf"
SKU = "BRD-001"
FIRST_TRAIN_SKU = "CRS-001"
LAUNCHER = ROOT / "localstack" / "launcher.py"
FUNCTION_LOGS = ROOT / ".state" / "localstack" / "functions"


def latency(values: list[float]) -> dict[str, float]:
    """Median, p95 and p99 next to the usual spread."""
    return {
        **summary(values),
        "p50": round(percentile(values, 50), 1),
        "p95": round(percentile(values, 95), 1),
        "p99": round(percentile(values, 99), 1),
    }


class Api:
    """One keep-alive HTTP connection to the API's stage, as a client would hold."""

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.host, self.port, self.prefix = parts.hostname, parts.port, parts.path
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)

    def call(
        self, method: str, path: str, token: str | None, body: Any = None
    ) -> tuple[int, Any, float]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        data = json.dumps(body) if body is not None else None
        started = time.perf_counter()
        for attempt in (1, 2):
            try:
                self.conn.request(method, self.prefix + path, body=data, headers=headers)
                answer = self.conn.getresponse()
                raw = answer.read()
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()  # the server closed the idle connection: reconnect once
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
                if attempt == 2:
                    raise
        ms = (time.perf_counter() - started) * 1000
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw.decode(errors="replace")
        return answer.status, parsed, ms


def timed(call: Callable[[], object], runs: int) -> list[float]:
    values = []
    for _ in range(runs):
        started = time.perf_counter()
        call()
        values.append((time.perf_counter() - started) * 1000)
    return values


def stack_cpu_ms() -> dict[str, float]:
    """CPU time used so far by LocalStack's process and by the function processes below it
    (user + system, ms): what a request costs the stack, whatever the machine's load."""
    spec = importlib.util.spec_from_file_location("localstack_launcher", LAUNCHER)
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    pid = launcher.read_pid()
    if pid is None:
        return {}
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")

    def cpu(process: int) -> float:
        try:
            fields = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) * tick_ms  # utime, stime

    return {
        "localstack": cpu(pid),
        "functions": sum(cpu(child) for child in launcher.descendants(pid)),
    }


def report_durations(function_name: str) -> list[float]:
    """The ``Duration`` of every ``REPORT`` line the function's environments wrote so far."""
    durations = []
    for path in FUNCTION_LOGS.glob(f"{function_name}-*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("REPORT RequestId:") and "Duration:" in line:
                durations.append(float(line.split("Duration:")[1].split()[0]))
    return durations


@contextlib.contextmanager
def localstack_running() -> Iterator[str]:
    """LocalStack on this host (started if needed, stopped after if started here); yields
    its endpoint."""
    from scripts import stack

    status = [sys.executable, str(LAUNCHER), "status"]
    was_running = subprocess.run(status, capture_output=True).returncode == 0  # noqa: S603
    try:
        if not was_running:
            subprocess.run([sys.executable, str(LAUNCHER), "start"], check=True)  # noqa: S603
        yield stack.ENDPOINT
    finally:
        if not was_running:
            subprocess.run([sys.executable, str(LAUNCHER), "stop"], check=False)  # noqa: S603


@contextlib.contextmanager
def local_stack() -> Iterator[dict[str, str]]:
    """LocalStack + PostgreSQL (started if needed, stopped after if started here) and the
    service deployed as ``siprems-perf``; yields the stack's outputs plus the API base."""
    from scripts import stack

    postgres_was_running = stack.postgres_running()
    with localstack_running(), contextlib.ExitStack() as cleanup:
        if not postgres_was_running:
            cleanup.callback(stack.stop_postgres)
        database_url = stack.start_services(record=False)
        stack.ensure_jwt_secret()
        outputs = stack.deploy(
            ROOT / "template.yaml",
            STACK_NAME,
            {
                "StageName": stack.STAGE,
                "LocalDatabaseUrl": database_url,
                "NightlyScheduleEnabled": "false",
            },
            {"WorkerFunction": stack.WORKER_REPOSITORY},
            ROOT / ".state" / "stacks" / STACK_NAME,
        )
        outputs["ApiBase"] = stack.api_base(outputs)
        outputs["DatabaseUrl"] = database_url
        yield outputs


def set_worker_mapping(outputs: dict[str, str], enabled: bool) -> None:
    from scripts import stack

    lam = stack.client("lambda")
    for mapping in lam.list_event_source_mappings(FunctionName=outputs["WorkerFunctionName"])[
        "EventSourceMappings"
    ]:
        lam.update_event_source_mapping(UUID=mapping["UUID"], Enabled=enabled)
        wanted = "Enabled" if enabled else "Disabled"
        deadline = time.monotonic() + 30
        while lam.get_event_source_mapping(UUID=mapping["UUID"])["State"] != wanted:
            if time.monotonic() > deadline:
                raise RuntimeError(f"event source mapping not {wanted} after 30 s")
            time.sleep(0.2)


def wait_result(api: Api, token: str, task_id: str, timeout_s: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status, body, _ = api.call("GET", f"/api/tasks/{task_id}", token)
        if status == 200:
            if body.get("status") != "SUCCESS":
                raise RuntimeError(f"task {task_id} ended {body.get('status')}: {body}")
            return body
        if time.monotonic() > deadline:
            raise RuntimeError(f"task {task_id} not done after {timeout_s:.0f} s: {body}")
        time.sleep(0.02)


def submit_to_result(api: Api, token: str, sku: str, before: Callable[[], None], runs: int):
    values = []
    for _ in range(runs):
        before()
        started = time.perf_counter()
        status, body, _ = api.call(
            "POST", "/api/predict/async", token, {"product_sku": sku, "days": 30}
        )
        if status != 202:
            raise RuntimeError(f"submit answered {status}: {body}")
        wait_result(api, token, body["task_id"])
        values.append((time.perf_counter() - started) * 1000)
        print(f"  {sku}: {values[-1]:.0f} ms", flush=True)
    return values


def handler_calls(outputs: dict[str, str], runs: int) -> dict[str, Any]:
    """The submit handler's work, from this process against the same stack: the import
    (the function's init), and each of its calls to PostgreSQL, DynamoDB and SQS."""
    from scripts import stack

    os.environ.update(stack.aws_env())
    os.environ.update(
        {
            "JOBS_TABLE": outputs["JobsTableName"],
            "JOBS_QUEUE_URL": outputs["JobsQueueUrl"],
            "JOBS_DLQ_URL": outputs["JobsDeadLetterQueueUrl"],
            "MODELS_BUCKET": outputs["ModelsBucketName"],
            "DATABASE_URL": outputs["DatabaseUrl"],
            "POWERTOOLS_TRACE_DISABLED": "1",
            "POWERTOOLS_METRICS_NAMESPACE": "SipremsForecastPerf",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
        }
    )
    code = (
        "import sys,time;sys.path.insert(0,'layers/common/python');t=time.perf_counter();"
        "import importlib.util as u;s=u.spec_from_file_location('a','functions/submit/app.py');"
        "m=u.module_from_spec(s);s.loader.exec_module(m);print((time.perf_counter()-t)*1000)"
    )
    imports = []
    for _ in range(5):
        done = subprocess.run(  # noqa: S603
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
        )
        imports.append(float(done.stdout.strip().splitlines()[-1]))

    from siprems.config import load_settings
    from siprems.jobs import service
    from siprems.jobs.model import Job, JobType
    from siprems.jobs.services import get_services

    load_settings.cache_clear()
    get_services.cache_clear()
    svc = get_services()

    def product_lookup() -> None:  # what a product check costs when it is not remembered
        with svc.sales.repository() as sales:
            sales.product_exists(SKU)

    product_lookup()  # warm: first connection, clients
    product = timed(product_lookup, runs)
    remembered = timed(lambda: service.require_product(svc, SKU), runs)
    jobs = [Job.new(JobType.PREDICT, product_sku=SKU, params={"days": 30}) for _ in range(runs)]
    it = iter(jobs)
    put = timed(lambda: svc.store.create(next(it)), runs)
    it = iter(jobs)
    send = timed(lambda: svc.queue.send(next(it).message()), runs)
    return {
        "handler_import_ms": summary(imports),
        "product_lookup_ms": summary(product),
        "product_check_remembered_ms": summary(remembered, 3),
        "dynamodb_put_ms": summary(put),
        "sqs_send_ms": summary(send),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.perf_stack")
    parser.add_argument("--submits", type=int, default=500)
    parser.add_argument("--probes", type=int, default=100, help="runs of each breakdown probe")
    parser.add_argument("--stored", type=int, default=10)
    parser.add_argument("--first-train", type=int, default=5)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "layers" / "common" / "python"))
    from siprems.auth import mint_token

    from scripts import stack

    results: dict[str, Any] = {}
    with local_stack() as outputs:
        secret = stack.SECRET_FILE.read_text().strip()
        token = mint_token(secret, user_id=11, email="perf@siprems.local")
        api = Api(outputs["ApiBase"])
        body = {"product_sku": SKU, "days": 30}

        # Cold: the first request starts the authorizer's and the submit function's processes.
        set_worker_mapping(outputs, enabled=False)
        status, answer, cold_ms = api.call("POST", "/api/predict/async", token, body)
        if status != 202:
            raise RuntimeError(f"submit answered {status}: {answer}")
        for _ in range(20):  # warm-up
            api.call("POST", "/api/predict/async", token, body)

        reports_before = len(report_durations(outputs["SubmitFunctionName"]))
        load_before = os.getloadavg()
        cpu_before = os.times()
        stack_before = stack_cpu_ms()
        submits = []
        for _ in range(args.submits):
            status, answer, ms = api.call("POST", "/api/predict/async", token, body)
            if status != 202:
                raise RuntimeError(f"submit answered {status}: {answer}")
            submits.append(ms)
        cpu_after = os.times()
        stack_after = stack_cpu_ms()
        handler_ms = report_durations(outputs["SubmitFunctionName"])[reports_before:]
        s = latency(submits)
        print(
            f"submit latency over {len(submits)} requests: p50 {s['p50']:.1f} ms, p95 "
            f"{s['p95']:.1f} ms, p99 {s['p99']:.1f} ms (cold first request {cold_ms:.0f} ms); "
            f"handler duration median {summary(handler_ms)['median']:.1f} ms",
            flush=True,
        )
        stack_cpu = {
            part: round((stack_after[part] - stack_before[part]) / len(submits), 2)
            for part in stack_after
        }
        print(f"stack CPU ms per submit: {stack_cpu}", flush=True)
        results["submit"] = {
            "requests": len(submits),
            "latency_ms": s,
            "cold_first_request_ms": round(cold_ms, 1),
            "handler_duration_ms": summary(handler_ms) if handler_ms else None,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "stack_cpu_ms_per_request": stack_cpu,
            "client_cpu_ms_per_request": round(
                (cpu_after.user + cpu_after.system - cpu_before.user - cpu_before.system)
                * 1000
                / len(submits),
                2,
            ),
        }

        # Where the time goes.
        probes: dict[str, Any] = {}
        refused = timed(lambda: api.call("POST", "/api/predict/async", None, body), args.probes)
        probes["gateway_401_no_lambda_ms"] = summary(refused)
        fresh = [
            mint_token(secret, user_id=f"probe-{i}", email="perf@siprems.local")
            for i in range(args.probes)
        ]
        tokens = iter(fresh)
        uncached = timed(
            lambda: api.call("POST", "/api/predict/async", next(tokens), body), args.probes
        )
        probes["submit_authorizer_uncached_ms"] = summary(uncached)
        event = json.loads((ROOT / "events" / "submit" / "predict-async.json").read_text())
        event["body"] = json.dumps(body)
        lam = stack.client("lambda")
        payload = json.dumps(event).encode()
        invoked = timed(
            lambda: lam.invoke(FunctionName=outputs["SubmitFunctionName"], Payload=payload)[
                "Payload"
            ].read(),
            args.probes,
        )
        probes["lambda_invoke_submit_ms"] = summary(invoked)
        probes.update(handler_calls(outputs, args.probes))
        results["breakdown"] = probes
        for name, value in probes.items():
            print(f"  {name:32s} median {value['median']:7.1f} ms", flush=True)

        stack.client("sqs").purge_queue(QueueUrl=outputs["JobsQueueUrl"])
        time.sleep(1)  # SQS lets a purge take up to 60 s; LocalStack's is immediate
        set_worker_mapping(outputs, enabled=True)

        # Submit to result.
        s3 = stack.client("s3")
        bucket = outputs["ModelsBucketName"]

        def delete_model(sku: str) -> Callable[[], None]:
            def run() -> None:
                listed = s3.list_object_versions(Bucket=bucket, Prefix=f"models/{sku}/")
                objects = [
                    {"Key": v["Key"], "VersionId": v["VersionId"]}
                    for v in listed.get("Versions", []) + listed.get("DeleteMarkers", [])
                ]
                if objects:
                    s3.delete_objects(Bucket=bucket, Delete={"Objects": objects})

            return run

        print("submit to result, first train (model deleted before each):", flush=True)
        first = submit_to_result(
            api, token, FIRST_TRAIN_SKU, delete_model(FIRST_TRAIN_SKU), args.first_train + 1
        )
        print("submit to result, stored model:", flush=True)
        submit_to_result(api, token, SKU, lambda: None, 1)  # trains BRD-001 if needed
        stored = submit_to_result(api, token, SKU, lambda: None, args.stored + 1)
        results["submit_to_result"] = {
            "stored_model_ms": summary(stored[1:]),
            "stored_model_first_ms": round(stored[0], 1),
            "first_train_ms": summary(first[1:]),
            "first_train_with_worker_cold_start_ms": round(first[0], 1),
            "poll_interval_ms": 20,
        }

    write_result(
        "perf_stack",
        {
            "protocol": {
                "stack": f"template.yaml as {STACK_NAME} in LocalStack on the host "
                "(project plugins: moto DynamoDB, local-process Lambda, authorizers)",
                "client": "http.client, one keep-alive connection, sequential requests",
                "submit": f"POST /api/predict/async {SKU} 30 days, worker mapping disabled",
                "localstack_port": os.environ.get("SIPREMS_LOCALSTACK_PORT", "4566"),
                "run_id": str(uuid.uuid4()),
            },
            **results,
        },
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
