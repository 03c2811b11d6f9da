"""Connection settings of the sales database: URL parsing, secrets, error translation."""

from __future__ import annotations

import dataclasses
import json
import ssl

import pytest
from pg8000.exceptions import DatabaseError, InterfaceError
from siprems.config import load_settings
from siprems.errors import DatabaseUnavailableError, InvalidInputError, TransientError
from siprems.http import error_response
from siprems.jobs.model import JobError
from siprems.sales import db


def _secret_settings(name: str):
    return dataclasses.replace(
        load_settings(),
        database_url=None,
        database_secret_name=name,  # noqa: S106 - the name of a secret, not a password
    )


def test_tcp_url_with_percent_encoded_credentials():
    params = db.parse_database_url("postgresql://app%40x:p%2Fw%3Ad@db.example:6543/sales")
    assert (params.user, params.password) == ("app@x", "p/w:d")
    assert (params.host, params.port, params.database) == ("db.example", 6543, "sales")
    assert params.unix_sock is None
    assert params.sslmode == "prefer" and params.ssl_context() is None


def test_socket_directory_in_host_parameter_names_the_socket_file():
    params = db.parse_database_url("postgresql://postgres@/siprems?host=/run/pg/")
    assert params.unix_sock == "/run/pg/.s.PGSQL.5432"
    assert params.host is None
    assert params.ssl_context() is False  # no TLS on a Unix socket

    params = db.parse_database_url("postgresql://postgres@/siprems?host=/run/pg&port=5433")
    assert params.unix_sock == "/run/pg/.s.PGSQL.5433"


def test_socket_file_in_unix_sock_parameter():
    params = db.parse_database_url("postgres://u@/d?unix_sock=/run/x/.s.PGSQL.5432")
    assert (params.unix_sock, params.user, params.database) == ("/run/x/.s.PGSQL.5432", "u", "d")


def test_defaults_and_options():
    params = db.parse_database_url("postgresql://localhost?sslmode=verify-full&connect_timeout=2.5")
    assert (params.user, params.database, params.port) == ("postgres", "siprems", 5432)
    assert params.timeout == 2.5
    assert params.ssl_context().check_hostname is True
    assert db.parse_database_url("postgresql://h/d?sslmode=require").ssl_context() is True
    assert db.parse_database_url("postgresql://h/d?sslmode=disable").ssl_context() is False


@pytest.mark.parametrize(
    "url",
    [
        "mysql://u@h/d",
        "postgresql:///d",  # neither host nor socket
        "postgresql://h:notaport/d",
        "postgresql://h/d?sslmode=sometimes",
        "postgresql://h/d?application=x",
        "postgresql://h/d?connect_timeout=soon",
    ],
)
def test_bad_urls_are_rejected_clearly(url):
    with pytest.raises(InvalidInputError):
        db.parse_database_url(url)


def test_password_never_in_repr_or_description():
    params = db.parse_database_url("postgresql://u:hunter2-secret@h/d")
    assert "hunter2-secret" not in repr(params)
    assert "hunter2-secret" not in params.describe()


def test_secret_fields_become_connection_params():
    params = db.params_from_secret(
        {"host": "rds.local", "port": "5433", "username": "app", "password": "pw", "dbname": "s"}
    )
    assert (params.host, params.port, params.user, params.password, params.database) == (
        "rds.local",
        5433,
        "app",
        "pw",
        "s",
    )
    assert db.params_from_secret({"host": "h", "username": "u", "password": "p"}).port == 5432


def test_a_secret_without_sslmode_connects_over_tls_or_not_at_all():
    """pg8000 with ``ssl_context=None`` (libpq's "prefer") goes on in plain text when the
    server answers that it has no TLS: a secret's server is across a network."""
    params = db.params_from_secret({"host": "h", "username": "u", "password": "p"})
    assert params.sslmode == "require" and params.ssl_context() is True
    full = db.params_from_secret(
        {"host": "h", "username": "u", "password": "p", "sslmode": "verify-full"}
    )
    context = full.ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_incomplete_secret_is_reported_without_its_values():
    with pytest.raises(DatabaseUnavailableError) as info:
        db.params_from_secret({"host": "h", "username": "u", "password": ""})
    assert "password" in info.value.message


def test_settings_without_database_are_a_clear_error():
    settings = dataclasses.replace(load_settings(), database_url=None, database_secret_name=None)
    with pytest.raises(DatabaseUnavailableError, match="DATABASE_URL"):
        db.connection_params(settings)


def test_secret_is_read_from_secrets_manager(aws):
    import boto3
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()
    secret = {"host": "db.internal", "port": 5432, "username": "app", "password": "pw-123"}
    boto3.client("secretsmanager").create_secret(
        Name="siprems/test-db", SecretString=json.dumps(secret)
    )
    settings = _secret_settings("siprems/test-db")
    params = db.connection_params(settings)
    assert (params.host, params.user, params.password) == ("db.internal", "app", "pw-123")
    parameters.clear_caches()


def test_a_cold_workers_threads_read_the_secret_from_secrets_manager_once(aws, monkeypatch):
    """The records of a cold worker's batch all need the secret at once: one request to
    Secrets Manager, the others read Powertools' cache."""
    import threading

    import boto3
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()
    secret = {"host": "db.internal", "username": "app", "password": "pw-123"}
    client = boto3.client("secretsmanager")
    client.create_secret(Name="siprems/test-db", SecretString=json.dumps(secret))
    calls = []
    real = parameters.SecretsProvider._get

    def counted(self, *args, **kwargs):
        calls.append(args)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(parameters.SecretsProvider, "_get", counted)
    settings = _secret_settings("siprems/test-db")
    start = threading.Barrier(8)
    hosts = []

    def connect():
        start.wait()
        hosts.append(db.connection_params(settings).host)

    threads = [threading.Thread(target=connect) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert hosts == ["db.internal"] * 8 and len(calls) == 1
    parameters.clear_caches()


def test_missing_secret_is_unavailable_database(aws):
    from aws_lambda_powertools.utilities import parameters

    parameters.clear_caches()
    settings = _secret_settings("siprems/absent")
    with pytest.raises(DatabaseUnavailableError, match="siprems/absent") as info:
        db.connection_params(settings)
    assert isinstance(info.value, TransientError)


def test_refused_connection_is_unavailable_and_hides_the_password():
    # Port 1 on the loopback address: nothing listens, the connection is refused at once.
    with pytest.raises(DatabaseUnavailableError) as info:
        db.connect_url("postgresql://app:pw-do-not-log@127.0.0.1:1/siprems?connect_timeout=2")
    logged = info.value.message
    answer = error_response(info.value)
    recorded = JobError.of(info.value)
    assert "pw-do-not-log" not in logged + json.dumps(answer.body) + recorded.model_dump_json()
    assert "127.0.0.1:1" in logged and answer.status_code == 503


def test_server_error_reason_is_redacted():
    params = db.parse_database_url("postgresql://app:s3cr3t@h/d")
    error = DatabaseError({"C": "28P01", "M": "password s3cr3t rejected"})
    assert "s3cr3t" not in db._reason(error, params)
    assert "28P01" in db._reason(error, params)


@pytest.mark.parametrize(
    ("error", "lost"),
    [
        (InterfaceError("network error"), True),
        (DatabaseError({"C": "57P01", "M": "terminating connection"}), True),
        (DatabaseError({"C": "08006", "M": "connection failure"}), True),
        (DatabaseError({"C": "53300", "M": "too many connections"}), True),
        (DatabaseError({"C": "42P01", "M": "relation does not exist"}), False),
        (DatabaseError({"C": "23505", "M": "duplicate key"}), False),
    ],
)
def test_only_connection_failures_become_unavailable(error, lost):
    assert db.is_connection_failure(error) is lost
    expected = DatabaseUnavailableError if lost else type(error)
    with pytest.raises(expected):
        with db.unavailable_on_lost_connection():
            raise error


def test_shipped_migrations_are_ordered_and_versioned():
    migrations = db.available_migrations()
    assert [m.name for m in migrations][0] == "0001_schema.sql"
    assert [m.version for m in migrations] == sorted(m.version for m in migrations)
    assert "CREATE TABLE products" in migrations[0].sql
