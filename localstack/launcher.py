#!/usr/bin/env python3
"""Runs LocalStack's runtime on this host, without Docker, for the local stack.

    python3 localstack/launcher.py install   # create .venv-localstack (idempotent)
    python3 localstack/launcher.py start     # install if needed, start, wait until healthy
    python3 localstack/launcher.py status
    python3 localstack/launcher.py stop      # stop it and every function process it started

LocalStack listens on 127.0.0.1:4566 only (``SIPREMS_LOCALSTACK_PORT`` picks another port).
Its state, temporary files (unzipped function code),
function outputs and its log live under ``.state/localstack/``. The project's plugins
(``localstack/plugins``) supply what the community edition lacks offline: DynamoDB (moto),
Lambda execution (local processes using the project's ``.venv``) and REST API Lambda authorizers.

Standard library only, so any Python 3 can run it; LocalStack itself needs Python 3.13.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
VENV = ROOT / ".venv-localstack"
STAMP = VENV / ".installed"
STATE = ROOT / ".state" / "localstack"
PID_FILE = STATE / "localstack.pid"
LOG_FILE = STATE / "localstack.log"
# SIPREMS_LOCALSTACK_PORT lets two checkouts run their own LocalStack side by side.
HOST, PORT = "127.0.0.1", int(os.environ.get("SIPREMS_LOCALSTACK_PORT", "4566"))
ENDPOINT = f"http://{HOST}:{PORT}"
HEALTH_URL = f"{ENDPOINT}/_localstack/health"
INSTALL_INPUTS = [
    HERE / "requirements.txt",
    HERE / "constraints.txt",
    HERE / "plugins/pyproject.toml",
]
IMAGE_SOURCES = HERE / "image-sources.json"


def say(message: str) -> None:
    print(f"[localstack] {message}", flush=True)


# -- install -----------------------------------------------------------------------------------
def find_python313() -> str:
    """LocalStack 2026.3.0 needs Python 3.13."""
    candidates = [os.environ.get("LOCALSTACK_PYTHON"), shutil.which("python3.13")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.13*/bin/python3.13")))
    candidates += sorted(glob.glob("/root/.pyenv/versions/3.13*/bin/python3.13"))
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and is_python313(candidate):
            return candidate
    sys.exit("Python 3.13 not found: install it or set LOCALSTACK_PYTHON")


def is_python313(candidate: str) -> bool:
    """A pyenv shim exists for every installed version but only runs the selected ones."""
    probe = subprocess.run(  # noqa: S603
        [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 13))"],
        capture_output=True,
        text=True,
    )
    return probe.returncode == 0 and probe.stdout.strip() == "True"


def install_fingerprint() -> str:
    digest = hashlib.sha256()
    for path in INSTALL_INPUTS:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def install() -> None:
    fingerprint = install_fingerprint()
    if STAMP.exists() and STAMP.read_text().strip() == fingerprint:
        return
    started = time.monotonic()
    if not (VENV / "bin" / "python").exists():
        say(f"creating {VENV.name}")
        subprocess.run([find_python313(), "-m", "venv", str(VENV)], check=True)  # noqa: S603
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
    constraints = ["-c", str(HERE / "constraints.txt")]
    say("installing localstack-core (pinned, with its lock file as constraints)")
    subprocess.run([*pip, "-r", str(HERE / "requirements.txt"), *constraints], check=True)  # noqa: S603
    subprocess.run([*pip, "-e", str(HERE / "plugins"), *constraints], check=True)  # noqa: S603
    STAMP.write_text(fingerprint + "\n")
    say(f"installed in {time.monotonic() - started:.0f} s")


# -- processes ---------------------------------------------------------------------------------
def read_pid() -> int | None:
    try:
        pid = int(PID_FILE.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    return pid


def healthy() -> bool:
    try:
        with urllib.request.urlopen(HEALTH_URL, timeout=2) as answer:  # noqa: S310 (loopback)
            return answer.status == 200
    except (urllib.error.URLError, OSError):
        return False


def descendants(pid: int) -> list[int]:
    """All processes below ``pid`` (function runtimes run in their own process groups)."""
    children: dict[int, list[int]] = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = Path(stat).read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def runtime_env(project_python: str) -> dict[str, str]:
    tmp = STATE / "tmp"
    image_sources = {}
    if IMAGE_SOURCES.exists():
        for name, source in json.loads(IMAGE_SOURCES.read_text()).items():
            paths = [str((ROOT / p).resolve()) for p in source["paths"]]
            image_sources[name] = {**source, "paths": paths}
    env = dict(os.environ)
    env.update(
        {
            "GATEWAY_LISTEN": f"{HOST}:{PORT}",
            "GATEWAY_SERVER": "twisted",  # bound to HOST by the project's plugin, not 0.0.0.0
            "LOCALSTACK_HOST": f"{HOST}:{PORT}",  # URLs it returns must resolve offline
            "SQS_ENDPOINT_STRATEGY": "path",
            "DNS_ADDRESS": "0",  # no DNS server (it would bind port 53 on every interface)
            "OVERRIDE_IN_DOCKER": "0",
            "FILESYSTEM_ROOT": str(STATE / "fs"),
            "TMPDIR": str(tmp),  # LocalStack unzips function code under the temporary folder
            "SKIP_SSL_CERT_DOWNLOAD": "1",
            "DISABLE_EVENTS": "1",
            # LocalStack writes each SQS message's CloudWatch metrics (sent, size, received,
            # deleted) to SQLite with a connection and a commit apiece: three quarters of its
            # CPU while sending batches. Off; queue depths stay readable through SQS itself.
            "SQS_DISABLE_CLOUDWATCH_METRICS": "1",
            # SQS event source mappings: LocalStack waits 1 s after each batch and up to 10 s
            # after an empty poll; Lambda's pollers long-poll, so a queued job starts at once.
            "LAMBDA_EVENT_SOURCE_MAPPING_POLL_INTERVAL_SEC": "0",
            "LAMBDA_EVENT_SOURCE_MAPPING_MAX_BACKOFF_ON_EMPTY_POLL_SEC": "0.2",
            # A failed asynchronous invocation is retried after 1x then 2x this many seconds
            # (60 by default, as Lambda waits about a minute then two): the retry count and
            # the dead-lettering after it are the template's, only the waits are shorter.
            "LAMBDA_RETRY_BASE_DELAY": "2",
            # LocalStack's own calls between services (API Gateway invoking a function or an
            # authorizer, event source mappings polling SQS, function logs to CloudWatch)
            # dispatched in the process instead of over HTTP to itself: its HTTP server layer
            # (hypercorn, the ASGI/WSGI bridge) costs more CPU than most handlers.
            "IN_MEMORY_CLIENT": "1",
            "PROVIDER_OVERRIDE_DYNAMODB": "moto",
            "LAMBDA_RUNTIME_EXECUTOR": "local-process",
            "LAMBDA_RUNTIME_ENVIRONMENT_TIMEOUT": "120",
            "LOCAL_LAMBDA_PYTHON": project_python,
            "LOCAL_LAMBDA_IMAGE_SOURCES": json.dumps(image_sources),
            "LOCAL_LAMBDA_LOG_DIR": str(STATE / "functions"),
        }
    )
    # Credentials of the caller's shell are not LocalStack's business.
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN"):
        env.pop(key, None)
    return env


def start(timeout_s: float) -> None:
    install()
    if (pid := read_pid()) and healthy():
        say(f"already running (pid {pid}) at {ENDPOINT}")
        return
    if pid:
        stop()
    project_python = str(ROOT / ".venv" / "bin" / "python")
    if not os.access(project_python, os.X_OK):
        sys.exit(f"{project_python} missing: run scripts/bootstrap.sh first")
    # Nothing persists between LocalStack runs: the function code it unzipped under tmp last
    # time (a copy per function and layer version, ~10 MB each) belongs to no function now.
    shutil.rmtree(STATE / "tmp", ignore_errors=True)
    for folder in ("fs", "tmp", "functions"):
        (STATE / folder).mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(LOG_FILE, "ab") as log:
        process = subprocess.Popen(  # noqa: S603 (our own venv)
            [str(VENV / "bin" / "python"), "-m", "localstack.runtime.main"],
            cwd=STATE,
            env=runtime_env(project_python),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    PID_FILE.write_text(f"{process.pid}\n")
    while not healthy():
        if process.poll() is not None:
            PID_FILE.unlink(missing_ok=True)
            sys.exit(f"LocalStack exited with {process.returncode}; see {LOG_FILE}")
        if time.monotonic() - started > timeout_s:
            stop()
            sys.exit(f"LocalStack not healthy after {timeout_s:.0f} s; see {LOG_FILE}")
        time.sleep(0.25)
    elapsed = time.monotonic() - started
    say(f"ready at {ENDPOINT} in {elapsed:.1f} s (pid {process.pid}, log {LOG_FILE})")


def stop() -> None:
    pid = read_pid()
    if not pid:
        PID_FILE.unlink(missing_ok=True)
        say("not running")
        return
    below = descendants(pid)
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.killpg(pid, signal.SIGKILL)
    leftovers = 0
    for child in below:  # function runtimes LocalStack did not stop itself
        try:
            os.killpg(child, signal.SIGKILL)
            leftovers += 1
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(child, signal.SIGKILL)
                leftovers += 1
            except ProcessLookupError:
                pass
    PID_FILE.unlink(missing_ok=True)
    say(f"stopped (pid {pid}{f', {leftovers} leftover function processes' if leftovers else ''})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["install", "start", "stop", "status", "endpoint"])
    parser.add_argument("--timeout", type=float, default=90, help="seconds to wait for health")
    args = parser.parse_args()
    if args.command == "install":
        install()
    elif args.command == "start":
        start(args.timeout)
    elif args.command == "stop":
        stop()
    elif args.command == "endpoint":
        print(ENDPOINT)
    else:
        pid = read_pid()
        state = "healthy" if pid and healthy() else "not running" if not pid else "unhealthy"
        say(f"{state}{f' (pid {pid})' if pid else ''}")
        sys.exit(0 if state == "healthy" else 1)


if __name__ == "__main__":
    main()
