"""The local embedded PostgreSQL: CLI lifecycle, TCP, reuse of a running server, and a
connection through a Secrets Manager secret (moto) as on AWS."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from siprems.config import load_settings
from siprems.errors import DatabaseUnavailableError, TransientError
from siprems.http import error_response
from siprems.jobs.model import JobError
from siprems.sales import db
from siprems.sales.embedded import EmbeddedPostgres, EmbeddedPostgresError
from siprems.sales.repository import SalesRepository

ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "layers" / "common" / "python")}
    return subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-m", "siprems.sales.embedded", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def state_dir() -> Iterator[Path]:
    """A state folder outside pytest's base temp: as root the server runs as another user, and
    every pytest start makes /tmp/pytest-of-root private again (0700), which would lock it out."""
    path = Path(tempfile.mkdtemp(prefix="siprems-test-pg-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_cli_lifecycle_over_tcp_and_a_secret(state_dir, aws):
    import boto3
    from aws_lambda_powertools.utilities import parameters

    state = str(state_dir / "pg")
    port = _free_port()
    started = _cli("start", "--state-dir", state, "--port", str(port), "--seed")
    try:
        assert started.returncode == 0, started.stderr
        assert started.stdout.strip() == f"postgresql://postgres@127.0.0.1:{port}/siprems"
        assert "6 products, 9334 transactions, 72 events" in started.stderr

        # a second start reuses the running server; so does the library without a port
        again = _cli("start", "--state-dir", state, "--port", str(port))
        assert (again.returncode, again.stdout) == (0, started.stdout)
        server = EmbeddedPostgres(state)
        assert server.start() == started.stdout.strip()
        assert server.socket_url.startswith("postgresql://postgres@/siprems?host=")
        with pytest.raises(EmbeddedPostgresError, match="stop it first"):
            EmbeddedPostgres(state, port=port + 1).start()
        status = _cli("status", "--state-dir", state)
        assert status.returncode == 0 and f"127.0.0.1:{port}" in status.stdout

        # the AWS path: connection settings from a Secrets Manager secret
        parameters.clear_caches()
        secret = {
            "host": "127.0.0.1",
            "port": port,
            "username": "postgres",
            "password": "pw-never-shown",
            "dbname": "siprems",
            "sslmode": "disable",
        }
        boto3.client("secretsmanager").create_secret(
            Name="siprems/local-db", SecretString=json.dumps(secret)
        )
        settings = dataclasses.replace(
            load_settings(),
            database_url=None,
            database_secret_name="siprems/local-db",  # noqa: S106 - a secret's name
        )
        conn = db.connect(settings)
        try:
            assert len(SalesRepository(conn).daily_sales("SEA-001")) == 292
        finally:
            conn.close()
        unix_conn = db.connect_url(server.socket_url)  # the socket works beside TCP
        assert unix_conn.run("SELECT count(*) FROM products") == [[6]]
        unix_conn.close()

        stopped = _cli("stop", "--state-dir", state)
        assert stopped.returncode == 0 and "stopped" in stopped.stderr
        assert _cli("status", "--state-dir", state).returncode == 3
        assert server.stop() is False  # nothing left to stop
        with pytest.raises(EmbeddedPostgresError, match="no server is running"):
            _ = server.url

        # the database is down: a clear, transient error without the password
        with pytest.raises(DatabaseUnavailableError) as info:
            db.connect(settings)
        logged = info.value.message
        public = (
            json.dumps(error_response(info.value).body) + JobError.of(info.value).model_dump_json()
        )
        assert f"127.0.0.1:{port}" in logged and "pw-never-shown" not in logged
        assert "127.0.0.1" not in public and "database_unavailable" in public
        assert isinstance(info.value, TransientError)

        # a restart keeps the data
        restarted = _cli("start", "--state-dir", state)
        assert restarted.returncode == 0, restarted.stderr
        conn = db.connect_url(restarted.stdout.strip())
        try:
            assert conn.run("SELECT count(*) FROM transactions") == [[9334]]
        finally:
            conn.close()
    finally:
        parameters.clear_caches()
        _cli("stop", "--state-dir", state)


def test_socket_of_a_stopped_server_is_unavailable_database(postgres_url, tmp_path):
    # A URL naming a socket directory where no server runs (as after `stop`).
    with pytest.raises(DatabaseUnavailableError, match="cannot connect"):
        db.connect_url(f"postgresql://postgres@/siprems?host={tmp_path}")
