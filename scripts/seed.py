"""Migrate a sales database and load the Kiel bakery data into it (idempotent).

The database comes from the service settings (``DATABASE_URL``, or ``DATABASE_SECRET_NAME`` for
a Secrets Manager secret), or from ``--database-url``::

    .venv/bin/python -m scripts.seed [--database-url URL] [--data-dir data/kiel-bakery] [--no-seed]

For the local embedded server, ``python -m siprems.sales.embedded start --seed`` does the same.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The shared library lives in the layer folder; make it importable when run from a checkout.
if str(ROOT / "layers" / "common" / "python") not in sys.path:
    sys.path.insert(0, str(ROOT / "layers" / "common" / "python"))

from siprems.errors import SipremsError  # noqa: E402
from siprems.sales.db import connect, connect_url, migrate  # noqa: E402
from siprems.sales.seed import seed_kiel  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.seed", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--database-url", help="default: the service settings")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "kiel-bakery")
    parser.add_argument("--no-seed", action="store_true", help="apply migrations only")
    args = parser.parse_args(argv)
    try:
        conn = connect_url(args.database_url) if args.database_url else connect()
        try:
            applied = migrate(conn)
            print(f"migrations applied: {', '.join(applied) or 'none (up to date)'}")
            if not args.no_seed:
                print(seed_kiel(conn, args.data_dir).summary())
        finally:
            conn.close()
    except SipremsError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
