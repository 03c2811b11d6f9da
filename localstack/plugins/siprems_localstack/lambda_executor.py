"""Lambda runtime executor that runs each execution environment as a local process.

LocalStack's community edition only runs functions in Docker containers (and downloads its init
binary first). This executor starts ``runtime_bootstrap.py`` with the function's interpreter
instead: the function's code, its layers' ``python/`` folders on ``PYTHONPATH``, the environment
LocalStack computed for it (credentials, ``AWS_ENDPOINT_URL``, the function's own variables), its
handler and timeout. Container-image functions run from their source folders, mapped by image
repository name.

Settings (environment of the LocalStack process):
- ``LOCAL_LAMBDA_PYTHON``: interpreter for the functions (default: LocalStack's own).
- ``LOCAL_LAMBDA_IMAGE_SOURCES``: JSON ``{"<repository name>": {"paths": ["<folder>", ...],
  "handler": "<module.function>"}}``; the folders are put on the path of image functions whose
  ImageUri names that repository; ``handler`` stands in for the image's CMD when the function has
  no ImageConfig command.
- ``LOCAL_LAMBDA_LOG_DIR``: where each environment's output is written (default: a ``lambda-logs``
  folder in the temporary folder).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import requests
from localstack.aws.api.lambda_ import PackageType
from localstack.services.lambda_.invocation.executor_endpoint import (
    ExecutorEndpoint,
    InvokeSendError,
)
from localstack.services.lambda_.invocation.lambda_models import (
    FunctionVersion,
    InvocationResult,
)
from localstack.services.lambda_.invocation.runtime_executor import (
    LambdaRuntimeException,
    RuntimeExecutor,
)
from urllib3.exceptions import NewConnectionError

from localstack import config

LOG = logging.getLogger(__name__)

BOOTSTRAP = Path(__file__).with_name("runtime_bootstrap.py")
LOOPBACK = "127.0.0.1"
# How long an invoke waits for the runtime's port (a timed-out runtime restarts itself).
INVOKE_CONNECT_WAIT_S = 60.0
# Lambda's longest timeout and a margin: the runtime enforces the function's own timeout.
INVOKE_RESULT_WAIT_S = 905.0


def image_repository_name(image_uri: str) -> str:
    """``123.dkr.ecr.r.amazonaws.com/team/worker:tag`` -> ``worker``."""
    without_digest = image_uri.split("@", 1)[0]
    last = without_digest.rsplit("/", 1)[-1]
    return last.split(":", 1)[0]


def image_sources() -> dict[str, dict]:
    raw = os.environ.get("LOCAL_LAMBDA_IMAGE_SOURCES") or "{}"
    return json.loads(raw)


# Ports handed to runtimes of this process (released when their executor stops).
_PORTS_IN_USE: set[int] = set()
_PORTS_LOCK = threading.Lock()
LOWEST_RUNTIME_PORT = 20000


def ephemeral_ports_start() -> int:
    """Where the kernel's range of ports for outgoing connections begins (32768 on Linux)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A port for a runtime to listen on. The runtime binds it a second or more later (its
    interpreter starts first): a port from the kernel's ephemeral range, free when probed,
    could meanwhile become the source port of any outgoing connection (under a load test one
    did: the runtime died with EADDRINUSE and its environment timed out at start). So: below
    that range, where no outgoing connection is numbered, and never one handed out to
    another runtime of this process."""
    high = ephemeral_ports_start()
    with _PORTS_LOCK:
        for _ in range(200):
            port = random.randrange(LOWEST_RUNTIME_PORT, high)  # noqa: S311 - not a secret
            if port in _PORTS_IN_USE:
                continue
            with socket.socket() as probe:
                try:
                    probe.bind((LOOPBACK, port))
                except OSError:
                    continue
            _PORTS_IN_USE.add(port)
            return port
    raise RuntimeError(f"no free port between {LOWEST_RUNTIME_PORT} and {high}")


def release_port(port: int) -> None:
    with _PORTS_LOCK:
        _PORTS_IN_USE.discard(port)


def never_connected(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the request never reached the runtime (nothing listens on its port yet): only
    then may an invocation be sent again without running it twice."""
    reason = getattr(exc.args[0] if exc.args else None, "reason", None)
    return isinstance(reason, NewConnectionError)


class LocalProcessEndpoint(ExecutorEndpoint):
    """The executor endpoint, with the invocation's outcome (result or error, and its logs)
    answered on the ``/invoke`` request itself: LocalStack's own init answers through three
    more HTTP requests to LocalStack's gateway (logs, then response or error), each a pass
    through its whole HTTP layer (docs/PERFORMANCE.md, "Through the local stack")."""

    @functools.cached_property
    def session(self) -> requests.Session:
        """One connection to the runtime, kept between invocations."""
        return requests.Session()

    def _perform_invoke(
        self, invocation_url: str, proxies: dict, payload: dict
    ) -> requests.Response:
        """Waits longer for the runtime's port than the default backoff (a timed-out runtime
        restarts itself), and never sends an invocation twice."""
        deadline = time.monotonic() + INVOKE_CONNECT_WAIT_S
        while True:
            try:
                return self.session.post(url=invocation_url, json=payload, proxies=proxies)  # noqa: S113
            except requests.exceptions.ConnectionError as exc:
                if not never_connected(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def invoke(self, payload: dict[str, str]) -> InvocationResult:
        self.invocation_future = Future()
        self.logs = None
        url = f"http://{self.container_address}:{self.container_port}/invoke"
        try:
            answer = self._perform_invoke(url, {"http": "", "https": ""}, payload)
        except requests.exceptions.ConnectionError as exc:
            if never_connected(exc):
                raise
            # The process ended while running it: the executor's watcher fails the invocation
            # (Runtime.ExitError) and starts a fresh process.
            answer = None
        if answer is not None:
            if not answer.ok:
                raise InvokeSendError(f"Invocation not accepted by {url}: {answer.status_code}")
            outcome = answer.json()
            if not self.invocation_future.done():
                self.invocation_future.set_result(
                    InvocationResult(
                        payload.get("invoke-id", ""),
                        outcome["payload"].encode(),
                        is_error=outcome["is_error"],
                        logs=outcome["logs"],
                    )
                )
        return self.invocation_future.result(timeout=INVOKE_RESULT_WAIT_S)


class LocalProcessRuntimeExecutor(RuntimeExecutor):
    def __init__(self, id: str, function_version: FunctionVersion) -> None:  # noqa: A002
        super().__init__(id=id, function_version=function_version)
        self.port = free_port()
        self.executor_endpoint = LocalProcessEndpoint(
            self.id, container_address=LOOPBACK, container_port=self.port
        )
        self.process: subprocess.Popen | None = None
        self.tmp_dir: Path | None = None
        self.log_path: Path | None = None
        self._stopping = False
        self._request_id = ""  # of the invocation running now

    # -- where the code is -------------------------------------------------------------------
    def _code_paths(self) -> tuple[list[str], str]:
        """The folders to put on the path, and the handler."""
        cfg = self.function_version.config
        layer_paths = []
        for layer in cfg.layers or []:
            if layer.code:
                root = Path(layer.code.get_unzipped_code_location())
                python_dir = root / "python"
                layer_paths.append(str(python_dir if python_dir.is_dir() else root))
        if cfg.package_type == PackageType.Image:
            repository = image_repository_name(cfg.image.image_uri if cfg.image else "")
            source = image_sources().get(repository)
            if not source:
                raise LambdaRuntimeException(
                    f"No local source folders for image repository '{repository}' "
                    "(set LOCAL_LAMBDA_IMAGE_SOURCES)"
                )
            command = cfg.image_config.command if cfg.image_config else None
            handler = (command or [source.get("handler")])[0]
            if not handler:
                raise LambdaRuntimeException(
                    f"Image function {self.function_version.id.function_name} has no "
                    "ImageConfig command (the handler)"
                )
            return [*source["paths"], *layer_paths], handler
        code_dir = str(cfg.code.get_unzipped_code_location())
        return [code_dir, *layer_paths], cfg.handler

    # -- RuntimeExecutor ---------------------------------------------------------------------
    def start(self, env_vars: dict[str, str]) -> None:
        self.executor_endpoint.start()
        paths, handler = self._code_paths()
        function_name = self.function_version.id.function_name
        self.tmp_dir = Path(tempfile.mkdtemp(prefix=f"lambda-{function_name[:40]}-"))
        log_dir = Path(
            os.environ.get("LOCAL_LAMBDA_LOG_DIR") or Path(tempfile.gettempdir()) / "lambda-logs"
        )
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{function_name}-{self.id}.log"
        env = {key: str(value) for key, value in env_vars.items() if value is not None}
        # Lambda's /tmp belongs to one execution environment: so does this folder.
        for key, value in env.items():
            if value == "/tmp" or value.startswith("/tmp/"):  # noqa: S108
                env[key] = str(self.tmp_dir) + value.removeprefix("/tmp")  # noqa: S108
        env.update(
            {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(self.tmp_dir),
                "TMPDIR": str(self.tmp_dir),
                "LANG": "C.UTF-8",
                "PYTHONPATH": os.pathsep.join(paths),
                "PYTHONUNBUFFERED": "1",
                "LAMBDA_TASK_ROOT": paths[0],
                "LOCAL_RUNTIME_PORT": str(self.port),
                "LOCAL_RUNTIME_HANDLER": handler,
            }
        )
        LOG.debug("Starting %s (%s) as a local process: %s", function_name, handler, self.log_path)
        self._spawn(env, cwd=paths[0])
        self.executor_endpoint.wait_for_startup()
        threading.Thread(target=self._watch, args=(env, paths[0]), daemon=True).start()

    def _spawn(self, env: dict[str, str], cwd: str) -> None:
        python = os.environ.get("LOCAL_LAMBDA_PYTHON") or shutil.which("python3") or "python3"
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and script)
                [python, str(BOOTSTRAP)],
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: stop() ends its children too
            )

    def _watch(self, env: dict[str, str], cwd: str) -> None:
        """A runtime process that dies (killed, out of memory) fails its running invocation as
        Lambda reports it (``Runtime.ExitError``) and is replaced by a fresh one, as Lambda
        replaces a crashed sandbox; without this LocalStack would wait 15 minutes for an answer
        that never comes, holding the event source mapping's batch."""
        while not self._stopping:
            process = self.process
            if process is None:
                return
            spawned = time.monotonic()
            code = process.wait()
            if self._stopping:
                return
            reason = f"signal: {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            LOG.warning("Runtime of %s exited (%s): restarting it", self.id, reason)
            future = self.executor_endpoint.invocation_future
            if future is not None and not future.done():
                error = {
                    "errorType": "Runtime.ExitError",
                    "errorMessage": f"Runtime exited with error: {reason}",
                }
                future.set_result(
                    InvocationResult(
                        self._request_id,
                        json.dumps(error).encode(),
                        is_error=True,
                        logs=self.get_logs()[-4096:],
                    )
                )
            if time.monotonic() - spawned < 2:
                LOG.error("Runtime of %s keeps exiting at start: not restarted", self.id)
                return
            # The fresh process must not announce itself ready again (LocalStack already has
            # this environment): the flag the timeout restart uses too.
            self._spawn({**env, "LOCAL_RUNTIME_RESTARTED": "1"}, cwd)

    def stop(self) -> None:
        self._stopping = True
        if self.process and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.tmp_dir:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
        release_port(self.port)
        try:
            self.executor_endpoint.shutdown()
        except Exception as exc:  # noqa: BLE001 (already unregistered)
            LOG.debug("Executor endpoint of %s already shut down: %s", self.id, exc)

    def get_address(self) -> str:
        return LOOPBACK

    def get_endpoint_from_executor(self) -> str:
        return LOOPBACK

    def get_runtime_endpoint(self) -> str:
        port = config.GATEWAY_LISTEN[0].port
        return f"http://{LOOPBACK}:{port}{self.executor_endpoint.get_endpoint_prefix()}"

    def invoke(self, payload: dict[str, str]):
        self._request_id = payload.get("invoke-id", "")
        return self.executor_endpoint.invoke(payload)

    def get_logs(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")
        return ""

    @classmethod
    def prepare_version(cls, function_version: FunctionVersion) -> None:
        cfg = function_version.config
        if cfg.code:
            cfg.code.prepare_for_execution()
        for layer in cfg.layers or []:
            if layer.code:
                layer.code.prepare_for_execution()

    @classmethod
    def cleanup_version(cls, function_version: FunctionVersion) -> None:
        pass

    @classmethod
    def validate_environment(cls) -> bool:
        return True
