"""The demo of ``make up``: one forecast through the deployed API, by the ``siprems`` command a
user would run (``siprems chart``).

Mints an access token with the stack's JWT key, then submits an async forecast, shows its
progress while polling the task, prints the forecast summary and the restock recommendation,
and draws the chart (history, forecast, interval band, events) to a PNG.

    .venv/bin/python -m scripts.local_demo --api-base URL --secret-file .state/local/jwt-secret
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from siprems.auth import mint_token
from siprems_client.cli import main as siprems


def main() -> int:
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
    return siprems(
        [
            "--api-url",
            args.api_base,
            "--token",
            token,
            "--timeout",
            str(args.timeout),
            "chart",
            args.sku,
            "--days",
            str(args.days),
            "--output",
            str(args.chart),
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
