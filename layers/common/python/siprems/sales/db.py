"""Connections to the sales database (pg8000) and the versioned schema migrations.

Where the connection settings come from (``Settings``):

- ``database_secret_name`` set (AWS): a Secrets Manager secret, JSON
  ``{"host", "port", "username", "password", "dbname"}`` (the shape of an RDS secret; optional
  ``"sslmode"``), fetched with Powertools parameters (cached for ``SECRET_MAX_AGE`` seconds).
- else ``database_url`` (local), one of::

      postgresql://user:password@host:5432/dbname          TCP
      postgresql://user@/dbname?host=/run/postgresql       Unix socket: directory (libpq style);
                                                           the file is .s.PGSQL.<port, 5432>
      postgresql://user@/dbname?unix_sock=/dir/.s.PGSQL.5432   Unix socket: the file itself

  Optional query parameters: ``sslmode`` (``disable``, ``prefer`` = default: TLS if the server
  offers it, ``require``: TLS without certificate checks, ``verify-full``: TLS with system CA and
  host name checks) and ``connect_timeout`` (seconds, default 10; pg8000 applies it to every
  socket operation, not only to connecting). User name and password are percent-decoded.

Every failure to reach the database, and every query failure caused by a lost connection,
raises ``DatabaseUnavailableError`` (transient: jobs retry). Messages name host and database,
never the password.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import re
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pg8000.native
from pg8000 import converters
from pg8000.exceptions import DatabaseError, InterfaceError

from siprems.config import Settings, load_settings
from siprems.errors import DatabaseUnavailableError, InvalidInputError, SchemaMigrationError

DEFAULT_PORT = 5432
DEFAULT_DATABASE = "siprems"
DEFAULT_CONNECT_TIMEOUT = 10.0
SECRET_MAX_AGE = 300  # seconds a fetched secret is reused (rotation reaches warm functions)
DATE_OID = 1082
SSL_MODES = ("disable", "prefer", "require", "verify-full")

# SQLSTATEs that mean "the server or the connection went away", not "the query is wrong":
# class 08 (connection exception), 57P01..57P03 (admin/crash shutdown, cannot connect now),
# 53300 (too many connections).
_UNAVAILABLE_SQLSTATE = re.compile(r"^(08...|57P0[123]|53300)$")

# Key of the advisory lock that serialises migrations (any constant; "siprems" in ASCII).
MIGRATION_LOCK_KEY = 0x7369707265_6D73


NETWORK_SSLMODE = "require"  # TLS or nothing


@dataclass(frozen=True)
class ConnectionParams:
    """Everything pg8000 needs; ``password`` is kept out of ``repr`` (logs, tracebacks)."""

    user: str
    database: str
    host: str | None = None
    port: int = DEFAULT_PORT
    unix_sock: str | None = None
    password: str | None = field(default=None, repr=False)
    sslmode: str = "prefer"
    timeout: float = DEFAULT_CONNECT_TIMEOUT

    def describe(self) -> str:
        """Where it connects, for messages: no password."""
        where = self.unix_sock if self.unix_sock else f"{self.host}:{self.port}"
        return f"database {self.database!r} at {where} as {self.user!r}"

    def ssl_context(self) -> ssl.SSLContext | bool | None:
        # pg8000: False = no TLS, None = TLS if offered, True = TLS without verification.
        if self.sslmode == "disable" or self.unix_sock:
            return False
        if self.sslmode == "prefer":
            return None
        if self.sslmode == "require":
            return True
        return ssl.create_default_context()


def parse_database_url(url: str) -> ConnectionParams:
    """Parses a ``postgresql://`` URL (see the module docstring) into ``ConnectionParams``."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgresql", "postgres"):
        raise InvalidInputError("database URL must start with postgresql://")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    unknown = set(query) - {"host", "port", "unix_sock", "sslmode", "connect_timeout"}
    if unknown:
        raise InvalidInputError(f"unsupported database URL parameters: {sorted(unknown)}")
    try:
        port = int(query.get("port") or parts.port or DEFAULT_PORT)
        timeout = float(query.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT))
    except ValueError as exc:
        raise InvalidInputError("database URL has an invalid port or connect_timeout") from exc
    sslmode = query.get("sslmode", "prefer")
    if sslmode not in SSL_MODES:
        raise InvalidInputError(f"sslmode must be one of {SSL_MODES}")

    host = parts.hostname or None
    unix_sock = query.get("unix_sock")
    query_host = query.get("host")
    if query_host and query_host.startswith("/"):
        unix_sock = f"{query_host.rstrip('/')}/.s.PGSQL.{port}"
    elif query_host:
        host = query_host
    if not host and not unix_sock:
        raise InvalidInputError("database URL names neither a host nor a Unix socket")

    return ConnectionParams(
        user=unquote(parts.username) if parts.username else "postgres",
        password=unquote(parts.password) if parts.password else None,
        database=unquote(parts.path.lstrip("/")) or DEFAULT_DATABASE,
        host=None if unix_sock else host,
        port=port,
        unix_sock=unix_sock,
        sslmode=sslmode,
        timeout=timeout,
    )


def params_from_secret(secret: dict[str, Any]) -> ConnectionParams:
    """Connection parameters from an RDS-style secret (host, port, username, password, dbname,
    optional sslmode). A secret names a server across a network: without ``sslmode`` the
    connection is TLS or nothing (``require``; libpq's ``prefer`` would fall back to plain
    text, password included, if the server or someone between said no TLS)."""
    missing = [key for key in ("host", "username", "password") if not secret.get(key)]
    if missing:
        raise DatabaseUnavailableError(f"the database secret lacks {missing}")
    sslmode = secret.get("sslmode", NETWORK_SSLMODE)
    if sslmode not in SSL_MODES:
        raise DatabaseUnavailableError(f"the database secret's sslmode must be one of {SSL_MODES}")
    return ConnectionParams(
        user=str(secret["username"]),
        password=str(secret["password"]),
        host=str(secret["host"]),
        port=int(secret.get("port") or DEFAULT_PORT),
        database=str(secret.get("dbname") or DEFAULT_DATABASE),
        sslmode=sslmode,
    )


@lru_cache(maxsize=4)
def _secrets_provider(endpoint_url: str) -> Any:
    """One provider per endpoint (LocalStack), so its cache lives as long as the process."""
    import boto3
    from aws_lambda_powertools.utilities import parameters

    return parameters.SecretsProvider(
        boto3_client=boto3.client("secretsmanager", endpoint_url=endpoint_url)
    )


# A cold worker's records (threads) all need the secret at once: one fetches it, the others
# then read Powertools' cache (without this, each built a client and called Secrets Manager).
_SECRET_FETCH = threading.Lock()


def _fetch_secret(name: str, endpoint_url: str | None) -> dict[str, Any]:
    with _SECRET_FETCH:
        return _fetch_secret_once(name, endpoint_url)


def _fetch_secret_once(name: str, endpoint_url: str | None) -> dict[str, Any]:
    from aws_lambda_powertools.utilities import parameters

    try:
        if endpoint_url:
            value = _secrets_provider(endpoint_url).get(
                name, transform="json", max_age=SECRET_MAX_AGE
            )
        else:
            value = parameters.get_secret(name, transform="json", max_age=SECRET_MAX_AGE)
    except Exception as exc:  # boto3, transform and network errors all mean "no credentials"
        raise DatabaseUnavailableError(
            f"cannot read the database secret {name!r}: {type(exc).__name__}"
        ) from None  # the cause may quote the secret's text
    if not isinstance(value, dict):
        raise DatabaseUnavailableError(f"the database secret {name!r} is not a JSON object")
    return value


def connection_params(settings: Settings | None = None) -> ConnectionParams:
    settings = settings or load_settings()
    if settings.database_secret_name:
        return params_from_secret(
            _fetch_secret(settings.database_secret_name, settings.aws_endpoint_url)
        )
    if settings.database_url:
        return parse_database_url(settings.database_url)
    raise DatabaseUnavailableError(
        "no database configured: set DATABASE_URL or DATABASE_SECRET_NAME"
    )


def _date_in(text: str) -> date | str:
    """pg8000's date parser, 40x faster: ``date.fromisoformat`` (the server's ISO DateStyle)."""
    try:
        return date.fromisoformat(text)
    except ValueError:  # infinity, or years beyond Python's range: pg8000's own handling
        return converters.date_in(text)


def open_connection(params: ConnectionParams) -> pg8000.native.Connection:
    try:
        conn = pg8000.native.Connection(
            params.user,
            host=params.host or "localhost",
            port=params.port,
            database=params.database,
            password=params.password,
            unix_sock=params.unix_sock,
            ssl_context=params.ssl_context(),
            timeout=params.timeout,
            application_name="siprems-forecast",
        )
    except (InterfaceError, DatabaseError, OSError) as exc:
        raise DatabaseUnavailableError(
            f"cannot connect to {params.describe()}: {_reason(exc, params)}"
        ) from None  # the chained pg8000 error is already summarised in the message
    conn.register_in_adapter(DATE_OID, _date_in)  # a daily series decodes thousands of dates
    return conn


def connect(settings: Settings | None = None) -> pg8000.native.Connection:
    """A new connection from the settings (secret on AWS, ``DATABASE_URL`` locally)."""
    return open_connection(connection_params(settings))


def connect_url(url: str) -> pg8000.native.Connection:
    """A new connection to a ``postgresql://`` URL (tools and tests)."""
    return open_connection(parse_database_url(url))


def _reason(exc: BaseException, params: ConnectionParams) -> str:
    """A short cause for messages, stripped of anything that could carry the password."""
    if isinstance(exc, DatabaseError):
        detail = exc.args[0] if exc.args else {}
        if isinstance(detail, dict):
            reason = f"{detail.get('M', 'server error')} (SQLSTATE {detail.get('C', '?')})"
        else:
            reason = str(detail)
    else:
        cause = exc.__cause__ or exc
        reason = f"{type(cause).__name__}: {cause}"
    if params.password:
        reason = reason.replace(params.password, "***")
    return reason


def sqlstate(exc: BaseException) -> str | None:
    detail = exc.args[0] if isinstance(exc, DatabaseError) and exc.args else None
    return detail.get("C") if isinstance(detail, dict) else None


def is_connection_failure(exc: BaseException) -> bool:
    """True when a query failed because the connection or server went away."""
    if isinstance(exc, (InterfaceError, OSError)):
        return True
    state = sqlstate(exc)
    return state is not None and bool(_UNAVAILABLE_SQLSTATE.match(state))


@contextmanager
def unavailable_on_lost_connection() -> Iterator[None]:
    """Turns a lost connection during queries into ``DatabaseUnavailableError``.

    Other database errors (a wrong query, a constraint) are bugs or bad data: they pass through.
    """
    try:
        yield
    except (InterfaceError, DatabaseError, OSError) as exc:
        if is_connection_failure(exc):
            raise DatabaseUnavailableError(
                f"lost the database connection: {type(exc).__name__}"
            ) from exc
        raise


# --- migrations ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Migration:
    version: str  # "0001"
    name: str  # "0001_schema.sql"
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    """The ``NNNN_*.sql`` files shipped in ``siprems/sales/migrations``, in version order."""
    folder = importlib.resources.files("siprems.sales") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = re.fullmatch(r"(\d{4})_[a-z0-9_]+\.sql", entry.name)
        if match:
            found.append(Migration(match.group(1), entry.name, entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise SchemaMigrationError(f"two migrations share a version: {versions}")
    return found


def migrate(conn: pg8000.native.Connection, migrations: list[Migration] | None = None) -> list[str]:
    """Applies each migration not yet recorded in ``schema_migrations``; returns their names.

    Safe to run twice and concurrently: a session advisory lock serialises runners, and each
    migration commits together with its ``schema_migrations`` row. An applied migration whose
    file changed since is an error (migrations are append-only).
    """
    migrations = available_migrations() if migrations is None else migrations
    applied_now: list[str] = []
    with unavailable_on_lost_connection():
        conn.run("SELECT pg_advisory_lock(:key)", key=MIGRATION_LOCK_KEY)
        try:
            conn.run(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version text PRIMARY KEY,"
                " name text NOT NULL,"
                " checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            applied = {
                version: (name, checksum)
                for version, name, checksum in conn.run(
                    "SELECT version, name, checksum FROM schema_migrations"
                )
            }
            for migration in migrations:
                if migration.version in applied:
                    name, checksum = applied[migration.version]
                    if checksum != migration.checksum:
                        raise SchemaMigrationError(
                            f"migration {name} was applied but its file has changed since"
                        )
                    continue
                conn.run("START TRANSACTION")
                try:
                    conn.run(migration.sql)  # no parameters: simple protocol, many statements
                    conn.run(
                        "INSERT INTO schema_migrations (version, name, checksum)"
                        " VALUES (:v, :n, :c)",
                        v=migration.version,
                        n=migration.name,
                        c=migration.checksum,
                    )
                    conn.run("COMMIT")
                except BaseException:
                    _run_quietly(conn, "ROLLBACK")
                    raise
                applied_now.append(migration.name)
        finally:
            # A lost session has released its lock already; do not mask the original error.
            _run_quietly(conn, f"SELECT pg_advisory_unlock({MIGRATION_LOCK_KEY})")
    return applied_now


def _run_quietly(conn: pg8000.native.Connection, sql: str) -> None:
    try:
        conn.run(sql)
    except (InterfaceError, DatabaseError, OSError):
        pass
