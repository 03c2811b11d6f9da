"""The demo of ``make up``: one forecast through the deployed API, as a client would make it.

Mints an access token with the stack's JWT key, submits an async forecast, shows its progress
while polling the task, prints the forecast summary and the restock recommendation, and draws the
chart (history, forecast, interval band, events) to a PNG.

    .venv/bin/python -m scripts.local_demo --api-base URL --secret-file .state/local/jwt-secret
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from siprems.auth import mint_token
from siprems_client.chart import draw_chart

TERMINAL = {"SUCCESS", "FAILURE", "REVOKED"}


@dataclass
class Answer:
    status: int
    body: dict


def call(method: str, url: str, token: str, body: dict | None = None) -> Answer:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(  # noqa: S310 (the local API Gateway URL)
        url,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310
            return Answer(answer.status, json.loads(answer.read() or b"{}"))
    except urllib.error.HTTPError as error:
        return Answer(error.code, json.loads(error.read() or b"{}"))


def submit_and_wait(api_base: str, token: str, sku: str, days: int, timeout_s: float) -> dict:
    started = time.monotonic()
    submitted = call(
        "POST", f"{api_base}/api/predict/async", token, {"product_sku": sku, "days": days}
    )
    if submitted.status != 202:
        sys.exit(f"submit failed: HTTP {submitted.status} {submitted.body}")
    task_id = submitted.body["task_id"]
    print(f"submitted {days}-day forecast for {sku}: task {task_id}", flush=True)
    last = None
    while time.monotonic() - started < timeout_s:
        task = call("GET", f"{api_base}/api/tasks/{task_id}", token)
        state = (task.body.get("status"), task.body.get("message"))
        if state != last:
            print(
                f"  {time.monotonic() - started:6.1f} s  {state[0]:<8} {state[1] or ''}", flush=True
            )
            last = state
        if state[0] in TERMINAL:
            return task.body
        time.sleep(0.5)
    sys.exit(f"task {task_id} not finished after {timeout_s:.0f} s")


def summarise(result: dict) -> None:
    today_rows = [row for row in result["chartData"] if row.get("historical") is None]
    predicted = [row["predicted"] for row in today_rows if row.get("predicted") is not None]
    metrics = (result.get("model") or {}).get("metrics") or {}
    print(
        f"\nforecast {result['product_sku']}: {len(predicted)} days "
        f"{today_rows[0]['date']} .. {today_rows[-1]['date']}"
        if today_rows
        else ""
    )
    if predicted:
        total, per_day = sum(predicted), sum(predicted) / len(predicted)
        print(
            f"  demand: {total:.0f} units in total, {per_day:.1f} a day "
            f"(min {min(predicted):.0f}, max {max(predicted):.0f})"
        )
    print(
        f"  accuracy (hold-out backtest): {result.get('accuracy')} %"
        + (f"  MAPE {metrics['mape']:.3f}  MASE {metrics['mase']:.2f}" if metrics else "")
    )
    for rec in result.get("recommendations", []):
        print(
            f"  restock {rec['productName']}: stock {rec['currentStock']}, demand "
            f"{rec['predictedDemand']}, safety stock {rec.get('safetyStock')}, "
            f"order {rec['recommendedRestock']} (urgency {rec['urgency']})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api-base", required=True)
    parser.add_argument("--secret-file", type=Path, required=True)
    parser.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="where to keep the minted token (0600) for the curl hint",
    )
    parser.add_argument("--sku", default="BRD-001")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--chart", type=Path, default=Path(".state/local/forecast.png"))
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    token = mint_token(args.secret_file.read_text().strip(), user_id=1, email="demo@siprems.local")
    if args.token_file:
        args.token_file.touch(mode=0o600)
        args.token_file.write_text(token)
    task = submit_and_wait(args.api_base, token, args.sku, args.days, args.timeout)
    if task["status"] != "SUCCESS":
        sys.exit(f"forecast ended {task['status']}: {task.get('error')}")
    summarise(task["result"])
    draw_chart(task["result"], args.chart)
    print(f"  chart: {args.chart}")


if __name__ == "__main__":
    main()
