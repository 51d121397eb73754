"""Dump one PostgreSQL database with pg_dump: consistent, verified, streamed, secrets out of argv.

The steps: ``tools`` finds pg_dump and checks it against the server, ``selection`` works out which
tables' rows it dumps, ``snapshot`` exports the snapshot and counts those rows, this module streams
pg_dump's output into the staged file, and ``readback`` proves the file complete.

Credentials. The password reaches pg_dump only through a 0600 pgpass file in the staging directory
(``PGPASSFILE``), deleted afterwards; host, port, user and database go in ``PG*`` environment
variables. Nothing secret is in argv, in log lines or in error messages, and an unrelated
``PGPASSWORD`` in the worker's environment is not inherited.

Output (``staging_dir/db-dumps/``, mode 0600, sha256 and size computed while writing):

* plain + gzip: ``postgresql-<db>.sql.gz``. pg_dump writes SQL to a pipe and this process gzips it
  (zlib at the configured level, mtime 0, 1 MiB chunks), so compression runs in parallel with
  pg_dump as ``pg_dump | gzip`` would.
* plain + none: ``postgresql-<db>.sql``.
* plain + zstd / lz4: ``postgresql-<db>.sql.zst`` / ``.sql.lz4``, compressed by pg_dump itself
  (``--compress=zstd:N``), which needs pg_dump 16 or later built with that library.
* custom: ``postgresql-<db>.dump`` with ``--format=custom --compress=<method>:<level>``.

No false success. A non-zero exit, a ``pg_dump: error:`` line, empty output, a timeout, a failed
row count, or output that is not complete (see ``readback``) raises DumpError, and the partial
file is deleted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from backup_ops.adapters.postgres.readback import TAIL_BYTES, CheckKind, verify_readback
from backup_ops.adapters.postgres.selection import TableSelection
from backup_ops.adapters.postgres.snapshot import SnapshotSession, Table
from backup_ops.adapters.postgres.target import APP_NAME, PgTarget, connect, redact
from backup_ops.adapters.postgres.tools import check_versions, clean_env, pg_tool, read_tail, tool_version
from backup_ops.core.config import DatabaseSource
from backup_ops.core.errors import DumpError
from backup_ops.core.fileio import CHUNK_SIZE
from backup_ops.core.models import DumpResult, TableStat

_log = logging.getLogger(__name__)

DUMP_DIR = "db-dumps"
_STDERR_BYTES = 64 * 1024
_STDERR_TAIL_LINES = 6


def check_target(target: PgTarget, source: DatabaseSource, *, pg_bin_dir: Path | None = None) -> str:
    """Preflight before any work: pg_dump exists, the login works, pg_dump is new enough for the server.

    Returns a one-line description for the task log; raises DumpError with the reason.
    """
    who = f"database {target.dbname!r} (Airflow connection {source.conn_id!r})"
    pg_dump_version, pg_dump_major = tool_version(pg_tool("pg_dump", pg_bin_dir))
    if source.format == "custom":
        pg_tool("pg_restore", pg_bin_dir)
    _plan_output(source, target.dbname, pg_dump_major, pg_dump_version, who)
    with connect(target, source.conn_id, "preflight") as conn:
        server_version = conn.info.parameter_status("server_version") or str(conn.info.server_version)
        server_num = conn.info.server_version
    check_versions(server_num, server_version, pg_dump_major, pg_dump_version, who)
    return f"{target.user}@{target.address}: PostgreSQL {server_version}, pg_dump {pg_dump_version}, login ok"


def dump_database(
    target: PgTarget,
    source: DatabaseSource,
    staging_dir: Path,
    *,
    pg_bin_dir: Path | None = None,
    log: logging.Logger | None = None,
) -> DumpResult:
    """Dump one database into ``staging_dir/db-dumps/`` and prove it reads back; raises DumpError."""
    log = log or _log
    who = f"database {target.dbname!r} (Airflow connection {source.conn_id!r})"
    pg_dump = pg_tool("pg_dump", pg_bin_dir)
    # Resolve pg_restore before dumping, so a missing tool fails fast rather than after the dump.
    pg_restore = pg_tool("pg_restore", pg_bin_dir) if source.format == "custom" else None
    pg_dump_version, pg_dump_major = tool_version(pg_dump)
    plan = _plan_output(source, target.dbname, pg_dump_major, pg_dump_version, who)
    job = _Job(who=who, password=target.password, timeout=source.timeout, plan=plan, log=log)
    selection = TableSelection.from_source(source, with_children=pg_dump_major >= 16)

    out_dir = Path(staging_dir) / DUMP_DIR
    try:
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise DumpError(f"Cannot create the staging directory {out_dir} for {who}: {exc.strerror}; "
                        "check backup.staging_directory and its permissions.") from exc
    out_path = out_dir / plan.file_name
    out_path.unlink(missing_ok=True)  # a leftover from a killed attempt
    began = time.monotonic()
    # Beside db-dumps/, not in it: that directory holds only what goes into the archive.
    passfile = _write_pgpass(Path(staging_dir), target, who)
    try:
        with SnapshotSession(target, source.conn_id, who) as session:
            check_versions(session.server_version_num, session.server_version, pg_dump_major, pg_dump_version, who)
            tables = [t for t in session.list_tables() if selection.dumps_data(t)]
            argv = [str(pg_dump), f"--snapshot={session.snapshot_id}", "--no-password", *plan.pg_dump_args,
                    *selection.pg_dump_args(), *source.extra_args]
            env = _subprocess_env(target, passfile)
            written, stats = _run_pg_dump(job, argv, env, out_path, session, tables)
        dumped = time.monotonic()
        verify_readback(out_path, plan.check, stats, pg_restore, written.tail, who=who, log=log)
    except BaseException:
        out_path.unlink(missing_ok=True)
        raise
    finally:
        passfile.unlink(missing_ok=True)
    finished = time.monotonic()
    duration, dump_s = finished - began, dumped - began

    result = DumpResult(
        conn_id=source.conn_id,
        database=target.dbname,
        member_name=f"{DUMP_DIR}/{plan.file_name}",
        staged_path=str(out_path.resolve()),
        format=source.format,
        compression=str(source.compression),
        size=written.size,
        sha256=written.sha256,
        duration_s=round(duration, 3),
        snapshot_id=session.snapshot_id,
        server_version=session.server_version,
        pg_dump_version=pg_dump_version,
        tables=tuple(stats),
    )
    log.info(
        "Dumped %s: %d tables, %d rows, %d bytes (%s) in %.1f s (%.1f MB/s of output; read-back check %.1f s) as %s",
        who, len(stats), result.total_rows, written.size, result.compression, dump_s,
        written.size / 1e6 / max(dump_s, 1e-6), finished - dumped, result.member_name,
    )
    return result


# ---------------------------------------------------------------------------- output plan


@dataclass(frozen=True)
class _Job:
    """What the steps of one dump share: names for messages, the secret to redact, limits, plan, logger."""

    who: str
    password: str = field(repr=False)
    timeout: int | None
    plan: _OutputPlan
    log: logging.Logger


@dataclass(frozen=True)
class _OutputPlan:
    """File name, pg_dump format/compression flags, and how the result is compressed and checked."""

    file_name: str
    pg_dump_args: tuple[str, ...]
    gzip_level: int | None  # compress in this process with zlib; None: write pg_dump's bytes as they come
    check: CheckKind


def _plan_output(source: DatabaseSource, dbname: str, major: int, version: str, who: str) -> _OutputPlan:
    compression = source.compression
    # Keep database names that are valid file names unchanged (laravel-backup's member names);
    # anything that could leave the directory or confuse an unzip tool becomes '_'.
    stem = "postgresql-" + re.sub(r"[^A-Za-z0-9._-]", "_", dbname)
    spec = "none" if compression.method == "none" else f"{compression.method}:{compression.level}"
    if compression.method in ("zstd", "lz4") and major < 16:
        raise DumpError(
            f"Compression {spec} for {who} needs pg_dump 16 or later, but pg_dump is {version}; "
            "use gzip, or set backup.source.pg_bin_dir to a newer PostgreSQL client."
        )
    if source.format == "custom":
        # pg_dump before 16 only knows gzip levels: -Z 0 means uncompressed.
        legacy = "0" if compression.method == "none" else str(compression.level)
        return _OutputPlan(f"{stem}.dump", ("--format=custom", f"--compress={spec if major >= 16 else legacy}"),
                           None, "custom")
    if compression.method == "gzip":
        return _OutputPlan(f"{stem}.sql.gz", ("--format=plain",), compression.level, "gzip")
    if compression.method == "none":
        return _OutputPlan(f"{stem}.sql", ("--format=plain",), None, "sql")
    return _OutputPlan(f"{stem}.sql{compression.suffix}", ("--format=plain", f"--compress={spec}"), None,
                       compression.method)


# ---------------------------------------------------------------------------- credentials


def _write_pgpass(directory: Path, target: PgTarget, who: str) -> Path:
    """A 0600 pgpass file holding only this login; the caller deletes it."""
    if any(ch in target.password for ch in "\r\n") or any(ch in target.user for ch in "\r\n"):
        raise DumpError(f"The login or password of {who} contains a line break, which a pgpass file cannot hold; "
                        "change the password.")

    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace(":", "\\:")

    # Wildcards for host/port/db: the file serves exactly one pg_dump run against this target, and
    # libpq's host matching has corner cases (sockets, host aliases) that must not lose the password.
    try:
        fd, name = tempfile.mkstemp(prefix=".pgpass-", dir=directory)  # mkstemp creates it 0600
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(f"*:*:*:{escape(target.user)}:{escape(target.password)}\n")
    except OSError as exc:
        raise DumpError(f"Cannot write the credentials file for {who} in {directory}: {exc.strerror}; check "
                        "backup.staging_directory (free space, permissions).") from exc
    return Path(name)



def _subprocess_env(target: PgTarget, passfile: Path) -> dict[str, str]:
    env = clean_env()
    env.update(
        PGHOST=target.host,
        PGPORT=str(target.port),
        PGUSER=target.user,
        PGDATABASE=target.dbname,
        PGPASSFILE=str(passfile),
        PGCONNECT_TIMEOUT=str(target.connect_timeout),
        PGAPPNAME=f"{APP_NAME} pg_dump",
    )
    if target.sslmode:
        env["PGSSLMODE"] = target.sslmode
    return env


# ---------------------------------------------------------------------------- running pg_dump


@dataclass(frozen=True)
class _Written:
    size: int
    sha256: str
    input_bytes: int  # bytes pg_dump wrote, before our compression
    tail: bytes  # the last bytes pg_dump wrote, before our compression (for the completion check)


def _run_pg_dump(
    job: _Job, argv: list[str], env: dict[str, str], out_path: Path, session: SnapshotSession, tables: list[Table]
) -> tuple[_Written, list[TableStat]]:
    """Stream pg_dump into the staged file while the session counts rows; raise DumpError on any failure."""
    who, timeout = job.who, job.timeout
    timed_out = threading.Event()
    # stderr goes to a temporary file: a pipe nobody reads could fill up and block pg_dump.
    with tempfile.TemporaryFile() as stderr_file:
        try:
            # A process group of its own, so a kill also reaches anything pg_dump (or a wrapper
            # script in pg_bin_dir) started, which would otherwise keep the pipe open.
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr_file,
                                    env=env, cwd=out_path.parent, start_new_session=True)
        except OSError as exc:
            raise DumpError(f"Could not start {argv[0]} for {who}: {exc.strerror}; check backup.source.pg_bin_dir.") \
                from exc

        def kill_on_timeout() -> None:
            timed_out.set()
            _kill_group(proc)
            session.cancel()

        timer = threading.Timer(timeout, kill_on_timeout) if timeout else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        written: _Written | None = None
        stats: list[TableStat] = []
        write_error: OSError | None = None
        try:
            session.start_counting(tables)
            stdout = proc.stdout
            if stdout is None:  # cannot happen with stdout=PIPE; keeps the type checker honest
                raise DumpError(f"pg_dump for {who} has no output pipe; this is a bug in backup-ops.")
            try:
                written = _write_stream(stdout, out_path, job.plan.gzip_level)
            except OSError as exc:
                write_error = exc
                _kill_group(proc)  # nobody reads the pipe any more: pg_dump would block on it forever
            returncode = proc.wait()
            if write_error is None and returncode == 0 and not timed_out.is_set():
                stats = session.finish_counting()
        finally:
            if proc.poll() is None:
                _kill_group(proc)
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
            session.cancel()
            if timer is not None:
                timer.cancel()
        stderr = read_tail(stderr_file, _STDERR_BYTES)

    stderr_tail = _stderr_tail(stderr, job.password)
    if timed_out.is_set():
        raise DumpError(f"pg_dump of {who} did not finish within source.timeout = {timeout} s and was killed; raise "
                        "the timeout for this database or look for locks or slow I/O on the server.")
    if write_error is not None:
        raise DumpError(f"Writing the dump of {who} to {out_path} failed: {write_error.strerror}; free space in or "
                        "move backup.staging_directory.") from write_error
    if returncode != 0:
        raise DumpError(f"pg_dump failed for {who} with {_describe_exit(returncode)}: {stderr_tail}. "
                        f"{_hint(stderr)}")
    if "pg_dump: error:" in stderr:
        raise DumpError(f"pg_dump reported an error for {who} although it exited 0: {stderr_tail}. {_hint(stderr)}")
    if written is None or written.input_bytes == 0:
        raise DumpError(f"pg_dump produced no output for {who} (exit 0, stderr: {stderr_tail}); check that {argv[0]} "
                        "is a working pg_dump.")
    if stderr.strip():
        job.log.warning("pg_dump for %s wrote to stderr: %s", who, stderr_tail)
    # Counting errors are raised here, after pg_dump's: a failed pg_dump explains more.
    stats = stats or session.finish_counting()
    return written, stats


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL pg_dump's process group (pg_dump and anything it started)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass  # already gone
    except PermissionError:
        proc.kill()


def _write_stream(stream: IO[bytes], out_path: Path, gzip_level: int | None) -> _Written:
    """Copy ``stream`` to a new 0600 file in 1 MiB chunks, gzipping and hashing as it goes."""
    digest = hashlib.sha256()
    size = 0
    input_bytes = 0
    # wbits=31: a gzip container; zlib writes mtime 0 and no file name, so equal input gives equal bytes.
    compressor = zlib.compressobj(gzip_level, zlib.DEFLATED, 31) if gzip_level is not None else None
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(fd, "wb") as out:
        def emit(data: bytes) -> None:
            nonlocal size
            if data:
                out.write(data)
                digest.update(data)
                size += len(data)

        tail = b""
        while chunk := stream.read(CHUNK_SIZE):
            input_bytes += len(chunk)
            tail = (tail + chunk)[-TAIL_BYTES:] if len(chunk) < TAIL_BYTES else chunk[-TAIL_BYTES:]
            emit(compressor.compress(chunk) if compressor is not None else chunk)
        if compressor is not None and input_bytes:
            emit(compressor.flush())
    return _Written(size, digest.hexdigest(), input_bytes, tail)


def _stderr_tail(stderr: str, password: str) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    return redact(" | ".join(lines[-_STDERR_TAIL_LINES:]), password) or "(no stderr)"


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name} (killed)"
        except ValueError:
            return f"signal {-returncode} (killed)"
    return f"exit code {returncode}"


def _hint(stderr: str) -> str:
    low = stderr.lower()
    if "does not support compression" in low:
        return ("This pg_dump was built without that compression library: use gzip, or set backup.source.pg_bin_dir "
                "to a pg_dump built with it.")
    if "server version mismatch" in low:
        return "Set backup.source.pg_bin_dir to a pg_dump of the server's major version or newer."
    if "no matching tables" in low or "no matching schemas" in low:
        return "Check include_tables / extra_args patterns against the database's tables."
    if "permission denied" in low:
        return "Grant the backup login SELECT on every table it dumps (or exclude the table)."
    return "Fix the cause above and run the backup again."
