"""Lambda runtime for one function, run as a local process by the ``local-process`` executor.

It speaks LocalStack's executor-endpoint protocol (what LocalStack's own init binary does inside a
container):

- on start, import the handler and POST ``{endpoint}/status/{runtime_id}/ready`` (or ``.../error``
  with the import error);
- serve ``POST /invoke`` on 127.0.0.1:<port>; for each invocation run the handler and answer the
  request itself with ``{"payload": <result or error JSON>, "is_error": bool, "logs": <output>}``
  (LocalStack's init posts these to the gateway in separate requests instead; the executor,
  ``LocalProcessEndpoint``, reads them from this answer);
- enforce the function timeout: report ``Task timed out`` and restart the process, as Lambda
  discards a timed-out execution environment.

Standard library only: it runs on the function's interpreter (the project's virtual environment),
not LocalStack's.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
import time
import traceback
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from queue import Queue

RESTARTED_FLAG = "LOCAL_RUNTIME_RESTARTED"


class OutputCapture:
    """Captures everything written to file descriptors 1 and 2 (print, logging, child processes),
    passing it on to the original stdout (the function's log file) and keeping the part written
    during the current invocation."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer: list[str] | None = None
        self._marker_seen = threading.Event()
        self._marker: str | None = None
        read_fd, write_fd = os.pipe()
        self._passthrough = os.dup(1)
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
        threading.Thread(target=self._pump, args=(read_fd,), daemon=True).start()

    def _pump(self, read_fd: int) -> None:
        with os.fdopen(read_fd, "r", errors="replace") as source:
            for line in source:
                with self._lock:
                    if self._marker is not None and line.strip() == self._marker:
                        self._marker_seen.set()
                        continue
                    if self._buffer is not None:
                        self._buffer.append(line)
                os.write(self._passthrough, line.encode())

    def restore(self) -> None:
        """Points descriptors 1 and 2 back at the original stdout (before an exec)."""
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._passthrough, 1)
        os.dup2(self._passthrough, 2)

    def begin(self) -> None:
        with self._lock:
            self._buffer = []

    def end(self, request_id: str) -> str:
        """Returns what was written since begin(), waiting until the pipe has been drained."""
        marker = f"#end-of-invocation {request_id}"
        with self._lock:
            self._marker = marker
            self._marker_seen.clear()
        sys.stdout.flush()
        sys.stderr.flush()
        os.write(1, f"{marker}\n".encode())
        self._marker_seen.wait(timeout=2)
        with self._lock:
            text = "".join(self._buffer or [])
            self._buffer = None
            self._marker = None
        return text


class LambdaContext:
    """The context object Lambda passes to a Python handler."""

    def __init__(self, request_id: str, function_arn: str, deadline: float) -> None:
        self.aws_request_id = request_id
        self.invoked_function_arn = function_arn
        self.function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        self.function_version = os.environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.log_group_name = os.environ.get("AWS_LAMBDA_LOG_GROUP_NAME", "")
        self.log_stream_name = os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME", "")
        self.identity = None
        self.client_context = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


# The endpoint is LocalStack on the loopback interface; no proxy applies. Built once: an
# opener loads the system's CA certificates, which cost more than the invocation itself.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post(url: str, body: bytes, content_type: str = "application/json") -> None:
    request = urllib.request.Request(  # noqa: S310 (http to LocalStack)
        url, data=body, method="POST", headers={"Content-Type": content_type}
    )
    with OPENER.open(request, timeout=30) as answer:  # noqa: S310 (http to LocalStack)
        answer.read()


def error_body(exc: BaseException) -> str:
    return json.dumps(
        {
            "errorMessage": str(exc),
            "errorType": type(exc).__name__,
            "requestId": "",
            "stackTrace": traceback.format_tb(exc.__traceback__),
        }
    )


class Invocation:
    """One ``/invoke`` request: its payload, and its outcome once the handler has run (the
    request's thread waits for it and answers with it)."""

    def __init__(self, payload: dict) -> None:
        self.payload = payload
        self.outcome: dict = {}
        self.done = threading.Event()
        self.answered = threading.Event()

    def answer(self, outcome: dict) -> None:
        self.outcome = outcome
        self.done.set()


def load_handler(spec: str):
    module_name, _, function_name = spec.rpartition(".")
    if not module_name:
        raise ValueError(f"Bad handler '{spec}': expected module.function")
    module = importlib.import_module(module_name.replace("/", "."))
    return getattr(module, function_name)


def main() -> None:
    endpoint = os.environ["LOCALSTACK_RUNTIME_ENDPOINT"]
    runtime_id = os.environ["LOCALSTACK_RUNTIME_ID"]
    port = int(os.environ["LOCAL_RUNTIME_PORT"])
    handler_spec = os.environ["LOCAL_RUNTIME_HANDLER"]
    timeout_s = float(os.environ.get("AWS_LAMBDA_FUNCTION_TIMEOUT", "3"))
    capture = OutputCapture()
    restarted = os.environ.pop(RESTARTED_FLAG, None) == "1"

    invocations: Queue[Invocation] = Queue()

    class InvokeHandler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # the executor keeps its connection between invocations
        # headers and body go out as two writes: without this, on a kept connection the body
        # waits for the client's delayed ACK of the headers (40 ms)
        disable_nagle_algorithm = True

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length") or 0)
            payload = json.loads(self.rfile.read(length) or b"{}")
            if self.path != "/invoke":
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            invocation = Invocation(payload)
            invocations.put(invocation)
            invocation.done.wait()
            try:
                body = json.dumps(invocation.outcome).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                self.wfile.flush()
            finally:
                invocation.answered.set()

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            pass  # keep the function's log free of the runtime's own access log

    server = ThreadingHTTPServer(("127.0.0.1", port), InvokeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    try:
        handler = load_handler(handler_spec)
    except Exception as exc:  # noqa: BLE001 (any import failure is the function's init error)
        traceback.print_exc()
        if not restarted:
            post(f"{endpoint}/status/{runtime_id}/error", error_body(exc).encode())
        sys.exit(1)
    if not restarted:
        post(f"{endpoint}/status/{runtime_id}/ready", b"{}")

    while True:
        invocation = invocations.get()
        payload = invocation.payload
        request_id = payload["invoke-id"]
        started = time.monotonic()
        deadline = started + timeout_s
        context = LambdaContext(request_id, payload.get("invoked-function-arn", ""), deadline)
        os.environ["_X_AMZN_TRACE_ID"] = payload.get("trace-id") or ""
        capture.begin()
        print(f"START RequestId: {request_id} Version: {context.function_version}", flush=True)
        outcome: dict = {}

        def run(payload=payload, context=context, outcome=outcome) -> None:
            try:
                event = json.loads(payload.get("payload") or "null")
                outcome["result"] = json.dumps(handler(event, context))
            except Exception as exc:  # noqa: BLE001 (reported to the caller as Lambda does)
                traceback.print_exc()
                outcome["error"] = error_body(exc)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(timeout=timeout_s)
        timed_out = worker.is_alive()
        if timed_out:
            outcome = {
                "error": json.dumps(
                    {
                        "errorMessage": (
                            f"{request_id} Task timed out after {timeout_s:.2f} seconds"
                        ),
                        "errorType": "Sandbox.Timedout",
                    }
                )
            }
            print(f"{request_id} Task timed out after {timeout_s:.2f} seconds", flush=True)
        elapsed_ms = (time.monotonic() - started) * 1000
        print(f"END RequestId: {request_id}", flush=True)
        print(
            f"REPORT RequestId: {request_id}\tDuration: {elapsed_ms:.2f} ms\t"
            f"Memory Size: {context.memory_limit_in_mb} MB",
            flush=True,
        )
        is_error = "error" in outcome
        invocation.answer(
            {
                "payload": outcome["error"] if is_error else outcome["result"],
                "is_error": is_error,
                "logs": capture.end(request_id),
            }
        )
        if timed_out:
            # The handler thread cannot be stopped: start a fresh process, as Lambda does
            # (once the answer is out: the exec closes the connection).
            invocation.answered.wait(timeout=5)
            server.server_close()
            os.environ[RESTARTED_FLAG] = "1"
            capture.restore()
            os.execv(sys.executable, [sys.executable, *sys.argv])  # noqa: S606


if __name__ == "__main__":
    main()
