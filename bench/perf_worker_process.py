"""One worker process, as a Lambda container runs it: import functions/worker/app.py, hand it
SQS events one after another, report timings and peak memory as JSON on stdout.

    python bench/perf_worker_process.py EVENTS.json [THREADS[,THREADS...]]

THREADS sets how many records of a batch the worker's processor runs at once (default: the
handler's own setting; 1 = one after another, as before the concurrent processor); several
alternate batch by batch (the first batch, which warms the process, takes the first).

Started by ``bench.perf_worker`` in a fresh interpreter (the environment points it at a moto
server and the sales database); not meant to be run by hand.
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "layers" / "common" / "python"))


class LambdaContext:
    """The fields of Lambda's context that Powertools and the handler read."""

    function_name = "siprems-worker-perf"
    function_version = "$LATEST"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:siprems-worker-perf"
    aws_request_id = "00000000-0000-4000-8000-000000000000"
    log_group_name = "/aws/lambda/siprems-worker-perf"
    log_stream_name = "perf"

    def get_remaining_time_in_millis(self) -> int:
        return 120_000


def peak_rss_kib() -> int:
    """This process's own peak RSS (VmHWM). Not ``ru_maxrss``: on Linux that keeps the parent's
    RSS at fork through exec, so a worker spawned by a big benchmark process reported the
    benchmark's memory."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> int:
    # Lambda's runtime tells the function its memory size; a training reads it to decide
    # whether its two fits may run at once (above 1,769 MB: more than one vCPU). Without it
    # the worker would see this machine's CPUs, which the benchmark's workers share.
    os.environ.setdefault("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", str(LambdaContext.memory_limit_in_mb))
    events = json.loads(Path(sys.argv[1]).read_text())
    started = time.perf_counter()
    spec = importlib.util.spec_from_file_location("worker_app", ROOT / "functions/worker/app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import_ms = (time.perf_counter() - started) * 1000
    threads = [int(t) for t in sys.argv[2].split(",")] if len(sys.argv) > 2 else []
    batches = []
    first_result_epoch = None
    first_result_cpu_ms = None
    for i, event in enumerate(events):
        if threads:
            module.processor.max_threads = threads[max(i - 1, 0) % len(threads)]
        t0, cpu0 = time.perf_counter(), time.process_time()
        response = module.lambda_handler(event, LambdaContext())
        batches.append(
            {
                "ms": (time.perf_counter() - t0) * 1000,
                # this process's CPU: what the batch costs whatever else shares the machine
                "cpu_ms": (time.process_time() - cpu0) * 1000,
                "records": len(event["Records"]),
                "threads": module.processor.max_threads,
                "failures": len(response.get("batchItemFailures", [])),
            }
        )
        if first_result_epoch is None:
            first_result_epoch = time.time()
            first_result_cpu_ms = time.process_time() * 1000  # since the process started
    print(
        json.dumps(
            {
                "handler_import_ms": import_ms,
                "cpu_ms_to_first_result": first_result_cpu_ms,
                "batches": batches,
                "first_result_epoch": first_result_epoch,
                "peak_rss_kib": peak_rss_kib(),
                "record_threads": module.processor.max_threads,
                # AWS clients the worker built (the others are built on first use)
                "clients_built": {
                    name: client.built
                    for name, client in (
                        ("s3", module.get_services().models._s3),
                        ("sqs", module.get_services().queue._sqs),
                    )
                },
                # CPU of this process and its finished children (cmdstan runs as one).
                "cpu_seconds": cpu_seconds(),
                "modules_loaded": {
                    name: name in sys.modules
                    for name in ("prophet", "matplotlib", "pandas", "cmdstanpy", "plotly")
                },
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
