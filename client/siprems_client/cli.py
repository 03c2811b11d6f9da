"""``siprems``: the command line of the SIPREMS Forecast API.

    siprems token [--role admin] [--env]       a development token for the local stack
    siprems predict SKU --days N [--async]      forecast (waits, showing progress)
    siprems status TASK_ID [--wait]             a task's status (and result)
    siprems train SKU | --all [--async]         train one product, or every product
    siprems tasks active|scheduled              running / waiting tasks, next nightly run
    siprems cancel TASK_ID                      cancel a task that has not finished
    siprems dlq list|redrive                    the dead-letter queue (admin)
    siprems chart SKU -o chart.png [--days N]   history, forecast, interval band, events
    siprems status-page                         the browser status page's address

The API URL and the token come from --api-url/--token or SIPREMS_API_URL/SIPREMS_TOKEN.
--json prints the API's JSON (one document on stdout) for scripts; progress goes to stderr.
Exit codes: 0 ok, 1 refused or job failed, 2 usage, 3 API unreachable, 4 token refused or
role missing, 5 unknown SKU or task, 6 gave up waiting.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from siprems_client import __version__
from siprems_client.api import (
    EXIT_AUTH,
    EXIT_ERROR,
    EXIT_USAGE,
    ApiError,
    Client,
)

LOCAL_SECRET = Path(".state") / "local" / "jwt-secret"
LOCAL_ENDPOINT = f"http://127.0.0.1:{os.environ.get('SIPREMS_LOCALSTACK_PORT', '4566')}"
LOCAL_STACK = "siprems-forecast"
LOCAL_STAGE = "local"
SPINNER = "|/-\\"


class Output:
    """Where results (stdout) and progress (stderr) go; progress redraws one line on a
    terminal and prints each change otherwise."""

    def __init__(self, *, as_json: bool, out: TextIO, err: TextIO) -> None:
        self.as_json = as_json
        self.out = out
        self.err = err
        self.live = err.isatty()
        self._last = ""
        self._tick = 0

    def result(self, data: Any, lines: Sequence[str] = ()) -> None:
        if self.as_json:
            json.dump(data, self.out, indent=2, default=str)
            self.out.write("\n")
        else:
            for line in lines:
                print(line, file=self.out)
        self.out.flush()

    def progress(self, text: str) -> None:
        if self.live:
            self._tick += 1
            frame = SPINNER[self._tick % len(SPINNER)]
            self.err.write(f"\r\033[K{frame} {text}")
            self.err.flush()
        elif text != self._last:
            print(text, file=self.err, flush=True)
        self._last = text

    def end_progress(self) -> None:
        if self.live and self._last:
            self.err.write("\r\033[K" + self._last + "\n")
            self.err.flush()
        self._last = ""


# --- formatting ----------------------------------------------------------------------------------
def progress_text(task: dict[str, Any], elapsed: float) -> str:
    status = task.get("status", "?")
    text = f"{elapsed:5.1f} s  {status:<8}"
    progress = task.get("progress")
    if progress and progress.get("total"):
        total, done = progress["total"], progress["done"]
        width = 20
        filled = round(width * done / total)
        text += (
            f" [{'#' * filled}{'.' * (width - filled)}] {done}/{total} products"
            f" ({progress.get('succeeded', 0)} trained, {progress.get('failed', 0)} failed,"
            f" {progress.get('revoked', 0)} cancelled)"
        )
    else:
        text += f" {task.get('message', '')}"
        if task.get("attempts", 0) > 1:
            text += f" (attempt {task['attempts']})"
    if status == "RETRY" and task.get("error"):
        text += f": {task['error'].get('message', '')}"
    return text


def task_lines(task: dict[str, Any]) -> list[str]:
    lines = [f"task {task.get('task_id')}: {task.get('status')} - {task.get('message', '')}"]
    for name in ("type", "product_sku", "created_at", "started_at", "finished_at", "parent_id"):
        if task.get(name):
            lines.append(f"  {name:<12} {task[name]}")
    if task.get("params"):
        lines.append(f"  {'params':<12} {json.dumps(task['params'])}")
    if task.get("attempts"):
        lines.append(f"  {'attempts':<12} {task['attempts']}")
    progress = task.get("progress")
    if progress:
        lines.append(
            f"  {'progress':<12} {progress['done']}/{progress['total']} done: "
            f"{progress['succeeded']} trained, {progress['failed']} failed, "
            f"{progress['revoked']} cancelled, {progress['pending']} waiting"
        )
    if task.get("error"):
        lines.append(f"  {'error':<12} {task['error'].get('type')}: {task['error'].get('message')}")
    result = task.get("result")
    if result and "chartData" in result:
        lines += forecast_lines(result)
    elif result:
        lines += training_lines(result)
    return lines


def forecast_lines(result: dict[str, Any]) -> list[str]:
    future = [r for r in result.get("chartData", []) if r.get("historical") is None]
    predicted = [r["predicted"] for r in future if r.get("predicted") is not None]
    lines = [f"forecast {result.get('product_sku')}: {len(predicted)} days"]
    if future:
        lines[0] += f" {future[0]['date']} .. {future[-1]['date']}"
    if predicted:
        lines.append(
            f"  demand       {sum(predicted):.0f} units in total, "
            f"{sum(predicted) / len(predicted):.1f} a day "
            f"(min {min(predicted):.0f}, max {max(predicted):.0f})"
        )
    events = sorted({r.get("holidayName") for r in future if r.get("isHoliday")} - {None})
    if events:
        lines.append(f"  events       {', '.join(events)}")
    metrics = (result.get("model") or {}).get("metrics") or {}
    accuracy = result.get("accuracy")
    line = f"  accuracy     {accuracy} % (hold-out backtest)" if accuracy is not None else ""
    if metrics.get("mape") is not None:
        line += f", MAPE {metrics['mape']:.3f}"
    if metrics.get("mase") is not None:
        line += f", MASE {metrics['mase']:.2f}"
    if line:
        lines.append(line)
    for rec in result.get("recommendations", []):
        lines.append(
            f"  restock      {rec.get('productName')}: stock {rec.get('currentStock')}, "
            f"demand {rec.get('predictedDemand')}, safety stock {rec.get('safetyStock')}, "
            f"order {rec.get('recommendedRestock')} (urgency {rec.get('urgency')})"
        )
    return lines


def training_lines(result: dict[str, Any]) -> list[str]:
    lines = [f"model {result.get('product_sku')}: trained {result.get('trained_at')}"]
    if result.get("accuracy") is not None:
        lines.append(f"  accuracy     {result['accuracy']} % (hold-out backtest)")
    metrics = result.get("metrics") or {}
    shown = ", ".join(
        f"{name.upper()} {metrics[name]:.3f}"
        for name in ("mae", "mape", "smape", "mase", "wape", "coverage")
        if isinstance(metrics.get(name), int | float)
    )
    if shown:
        lines.append(f"  metrics      {shown}")
    return lines


def task_table(tasks: list[dict[str, Any]]) -> list[str]:
    if not tasks:
        return ["  (none)"]
    lines = [f"  {'task_id':<36}  {'status':<8}  {'type':<9}  {'sku':<10}  created_at"]
    for task in tasks:
        lines.append(
            f"  {task.get('task_id', ''):<36}  {task.get('status', ''):<8}  "
            f"{task.get('type', ''):<9}  {task.get('product_sku') or '-':<10}  "
            f"{task.get('created_at', '')}"
        )
    return lines


# --- commands ------------------------------------------------------------------------------------
def watch(client: Client, output: Output, task_id: str, timeout: float) -> dict[str, Any]:
    started = time.monotonic()
    task: dict[str, Any] = {}
    try:
        for task in client.watch(task_id, timeout=timeout):
            output.progress(progress_text(task, time.monotonic() - started))
    finally:
        output.end_progress()
    return task


def finish(output: Output, task: dict[str, Any]) -> int:
    output.result(task, task_lines(task))
    return 0 if task.get("status") == "SUCCESS" else EXIT_ERROR


def cmd_predict(args: argparse.Namespace, client: Client, output: Output) -> int:
    submitted = client.predict_async(args.sku, args.days)
    if args.async_:
        output.result(submitted, [submitted["task_id"]])
        return 0
    output.progress(f"submitted {args.days}-day forecast for {args.sku}: {submitted['task_id']}")
    return finish(output, watch(client, output, submitted["task_id"], args.timeout))


def cmd_status(args: argparse.Namespace, client: Client, output: Output) -> int:
    task = (
        watch(client, output, args.task_id, args.timeout)
        if args.wait
        else client.task(args.task_id)
    )
    output.result(task, task_lines(task))
    return EXIT_ERROR if task.get("status") in ("FAILURE", "REVOKED") else 0


def cmd_train(args: argparse.Namespace, client: Client, output: Output) -> int:
    if args.all == bool(args.sku):
        raise ApiError("give a SKU or --all (not both)", exit_code=EXIT_USAGE, type="usage")
    submitted = client.train_all() if args.all else client.train(args.sku)
    if args.async_:
        output.result(submitted, [submitted["task_id"]])
        return 0
    what = "every product" if args.all else args.sku
    output.progress(f"training {what}: {submitted['task_id']}")
    return finish(output, watch(client, output, submitted["task_id"], args.timeout))


def cmd_tasks(args: argparse.Namespace, client: Client, output: Output) -> int:
    if args.which == "active":
        body = client.active(args.limit)
        output.result(body, [f"running tasks: {body.get('count', 0)}", *task_table(body["tasks"])])
        return 0
    body = client.scheduled(args.limit)
    nightly = body.get("nightly") or {}
    lines = [f"waiting tasks: {body.get('count', 0)}", *task_table(body["tasks"])]
    when = (
        "switched off"
        if nightly.get("enabled") is False
        else f"next run {nightly.get('next_run') or 'not computed (rate schedule)'}"
    )
    lines.append(f"nightly retraining: {nightly.get('schedule')}, {when}")
    if body.get("queue"):
        queue = body["queue"]
        lines.append(
            f"jobs queue: {queue.get('visible', 0)} waiting, {queue.get('in_flight', 0)} "
            f"being processed, {queue.get('delayed', 0)} delayed"
        )
    output.result(body, lines)
    return 0


def cmd_cancel(args: argparse.Namespace, client: Client, output: Output) -> int:
    body = client.cancel(args.task_id)
    output.result(body, [f"task {body['task_id']}: {body['status']}"])
    return 0


def cmd_dlq(args: argparse.Namespace, client: Client, output: Output) -> int:
    if args.action == "redrive":
        waiting = client.dead_letters(1)
        queue_counts = (waiting.get("queue") or {}).values()  # approximate, may lag
        if not waiting.get("count") and not any(queue_counts):
            output.result(
                {"status": "empty", "count": 0}, ["the dead-letter queue is empty: nothing to move"]
            )
            return 0
        body = client.redrive()
        output.result(
            body,
            [
                "moving the dead letters back to the jobs queue "
                f"(move task {body.get('task_handle')})"
            ],
        )
        return 0
    body = client.dead_letters(args.limit)
    queue = body.get("queue") or {}
    lines = [f"dead-letter queue: {queue.get('visible', body.get('count', 0))} message(s)"]
    for message in body.get("messages", []):
        content = message.get("body")
        train_all = message.get("train_all")
        if train_all:  # a train_all run whose every attempt failed
            content = f"train_all trigger: parent {train_all.get('parent_id')}"
            if train_all.get("scheduled_time"):
                content += f" (nightly run of {train_all['scheduled_time']})"
        elif isinstance(content, dict):
            content = ", ".join(f"{k}={v}" for k, v in content.items())
        error = message.get("error") or {}
        if error.get("message"):
            content = f"{content}  error: {error['message']}"
        sent = message.get("sent_at")
        when = (
            datetime.fromtimestamp(sent / 1000, UTC).isoformat(timespec="seconds") if sent else ""
        )
        lines.append(
            f"  {message.get('message_id')}  received {message.get('receive_count')}x  "
            f"sent {when}  {content}"
        )
    if body.get("messages"):
        lines.append("re-queue them with: siprems dlq redrive")
    output.result(body, lines)
    return 0


def cmd_chart(args: argparse.Namespace, client: Client, output: Output) -> int:
    from siprems_client.chart import draw_chart

    submitted = client.predict_async(args.sku, args.days)
    output.progress(f"submitted {args.days}-day forecast for {args.sku}: {submitted['task_id']}")
    task = watch(client, output, submitted["task_id"], args.timeout)
    if task.get("status") != "SUCCESS":
        return finish(output, task)
    path = draw_chart(task["result"], args.output)
    output.result(
        {"task_id": task["task_id"], "chart": str(path), "product_sku": args.sku},
        [*forecast_lines(task["result"]), f"chart: {path}"],
    )
    return 0


def cmd_status_page(args: argparse.Namespace, client: Client, output: Output) -> int:
    url = f"{client.base_url}/api/status"
    shown = f"{url}#token={client.token}" if client.token and args.with_token else url
    if client.token and args.with_token and _claims(client.token).get("role") != "admin":
        print("siprems: the page shows its data to an admin token only", file=output.err)
    output.result({"url": shown}, [shown])
    return 0


# --- token (the local stack's key) ---------------------------------------------------------------
def find_secret_file(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    candidates = [Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parents[2]]
    for folder in candidates:
        if (folder / LOCAL_SECRET).is_file():
            return folder / LOCAL_SECRET
    raise ApiError(
        "no local signing key found (.state/local/jwt-secret): start the local stack with "
        "`make up` in the project folder, or pass --secret-file",
        exit_code=EXIT_AUTH,
        type="no_signing_key",
    )


def local_api_url() -> str | None:
    """The local stack's invoke URL, from its CloudFormation outputs (None if not up)."""
    try:
        import boto3
        from botocore.config import Config

        cloudformation = boto3.client(
            "cloudformation",
            endpoint_url=LOCAL_ENDPOINT,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",  # noqa: S106 - LocalStack's documented dummy key
            config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
        )
        stack = cloudformation.describe_stacks(StackName=LOCAL_STACK)["Stacks"][0]
    except Exception:  # noqa: BLE001 - not running, or no such stack: no URL to offer
        return None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    if "ApiId" not in outputs:
        return None
    return f"{LOCAL_ENDPOINT}/_aws/execute-api/{outputs['ApiId']}/{LOCAL_STAGE}"


def cmd_token(args: argparse.Namespace, output: Output) -> int:
    from siprems.auth import mint_token

    secret = find_secret_file(args.secret_file).read_text().strip()
    ttl = timedelta(minutes=args.ttl_minutes)
    now = datetime.now(UTC)
    token = mint_token(
        secret, user_id=args.user_id, email=args.email, role=args.role, ttl=ttl, now=now
    )
    data: dict[str, Any] = {
        "token": token,
        "role": args.role or "user",
        "expires_at": (now + ttl).isoformat(timespec="seconds"),
    }
    if args.env:
        data["api_url"] = local_api_url()
        lines = [f"export SIPREMS_TOKEN={token}"]
        if data["api_url"]:
            lines.append(f"export SIPREMS_API_URL={data['api_url']}")
        else:
            print(
                "siprems: no local stack is running (make up): SIPREMS_API_URL is not set",
                file=output.err,
            )
        output.result(data, lines)
    else:
        output.result(data, [token])
    return 0


# --- parser --------------------------------------------------------------------------------------
def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 1:  # NaN too
        raise argparse.ArgumentTypeError(f"a number of seconds, at least 1 (got {text!r})")
    return value


def _claims(token: str) -> dict[str, Any]:
    """The token's claims, unverified (only to say what it will be refused for)."""
    import jwt

    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--api-url",
        default=argparse.SUPPRESS,
        help="base URL of the API (env SIPREMS_API_URL), e.g. https://ID.execute-api.REGION"
        ".amazonaws.com/prod",
    )
    common.add_argument(
        "--token", default=argparse.SUPPRESS, help="access token (env SIPREMS_TOKEN)"
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts"
    )
    common.add_argument(
        "--timeout",
        type=_seconds,
        default=argparse.SUPPRESS,
        help="seconds to wait for a task (default 300)",
    )

    top = argparse.ArgumentParser(
        prog="siprems",
        description="The command line of the SIPREMS Forecast API.",
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    top.add_argument("--version", action="version", version=f"siprems {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    token = sub.add_parser("token", parents=[common], help="a development token (local stack)")
    token.add_argument("--role", choices=["admin"], default=None, help="admin for admin routes")
    token.add_argument("--secret-file", default=None, help="the HS256 key file")
    token.add_argument("--user-id", default="1")
    token.add_argument("--email", default="dev@siprems.local")
    token.add_argument("--ttl-minutes", type=int, default=60)
    token.add_argument(
        "--env", action="store_true", help="print export lines (token and the local API URL)"
    )

    predict = sub.add_parser("predict", parents=[common], help="forecast a product")
    predict.add_argument("sku")
    predict.add_argument("--days", type=int, default=7, help="days to forecast (1..365)")
    predict.add_argument("--async", dest="async_", action="store_true", help="print the id only")

    status = sub.add_parser("status", parents=[common], help="a task's status")
    status.add_argument("task_id")
    status.add_argument("--wait", action="store_true", help="wait until it finishes")

    train = sub.add_parser("train", parents=[common], help="train one product or all")
    train.add_argument("sku", nargs="?")
    train.add_argument("--all", action="store_true", help="every product (admin)")
    train.add_argument("--async", dest="async_", action="store_true", help="print the id only")

    tasks = sub.add_parser("tasks", parents=[common], help="running or waiting tasks")
    tasks.add_argument("which", choices=["active", "scheduled"])
    tasks.add_argument("--limit", type=int, default=50)

    cancel = sub.add_parser("cancel", parents=[common], help="cancel a task")
    cancel.add_argument("task_id")

    dlq = sub.add_parser("dlq", parents=[common], help="dead-letter queue (admin)")
    dlq.add_argument("action", choices=["list", "redrive"])
    dlq.add_argument("--limit", type=int, default=10)

    chart = sub.add_parser("chart", parents=[common], help="forecast chart as a PNG")
    chart.add_argument("sku")
    chart.add_argument("-o", "--output", type=Path, required=True, help="PNG file to write")
    chart.add_argument("--days", type=int, default=30)

    page = sub.add_parser("status-page", parents=[common], help="the status page's address")
    page.add_argument(
        "--with-token", action="store_true", help="append the token (#token=...) to sign in"
    )
    return top


COMMANDS = {
    "predict": cmd_predict,
    "status": cmd_status,
    "train": cmd_train,
    "tasks": cmd_tasks,
    "cancel": cmd_cancel,
    "dlq": cmd_dlq,
    "chart": cmd_chart,
    "status-page": cmd_status_page,
}


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    environ: dict[str, str] | None = None,
) -> int:
    environ = os.environ if environ is None else environ
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        args = parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return int(exc.code or 0)
    output = Output(as_json=getattr(args, "json", False), out=out, err=err)
    try:
        if args.command == "token":
            return cmd_token(args, output)
        client = Client(
            getattr(args, "api_url", None) or environ.get("SIPREMS_API_URL", ""),
            getattr(args, "token", None) or environ.get("SIPREMS_TOKEN") or None,
        )
        args.timeout = getattr(args, "timeout", 300.0)
        return COMMANDS[args.command](args, client, output)
    except ApiError as exc:
        output.end_progress()
        if output.as_json:
            output.result(exc.to_dict())
        print(f"siprems: {exc.message}", file=err)
        return exc.exit_code
    except KeyboardInterrupt:
        output.end_progress()
        print("siprems: interrupted (the task keeps running; see `siprems status ID`)", file=err)
        return 130
    except OSError as exc:
        print(f"siprems: {exc}", file=err)
        return EXIT_ERROR


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
