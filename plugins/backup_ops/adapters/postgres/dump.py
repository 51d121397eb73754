"""Dump one PostgreSQL database with pg_dump: consistent, verified, streamed, stoppable, secrets off disk.

The steps: ``tools`` finds pg_dump and checks it against the server, ``snapshot`` exports the
snapshot (and reads the catalog in it), ``client_env`` gives pg_dump the connection, this module
streams pg_dump's output into the staged file, and ``readback`` proves the file complete.

Row counts. The server is read once, by pg_dump. Each table's rows are counted in pg_dump's own
output (``core.copy_rows``): for plain dumps on the stream as it is written, for custom-format
dumps in ``pg_restore --data-only``'s output when the file is read back. So the tables in the
manifest are exactly the tables whose data the dump holds, whatever ``include_tables``,
``exclude_tables`` and ``extra_args`` selected (pg_dump applies its own pattern rules; nothing
here re-implements them), and their counts are the rows it holds. Each table's full column list
comes from the catalog in the dump's snapshot (a COPY header leaves out generated columns).

Credentials. pg_dump gets the connection's libpq parameters as ``PG*`` variables and the password
through an in-memory pgpass file (see ``client_env``): nothing secret is on disk, in argv, in log
lines or in error messages, and an unrelated ``PGPASSWORD`` in the worker's environment is not
inherited.

Output (``staging_dir/db-dumps/``, mode 0600, sha256 and size computed while writing; the member
name is ``core.dump_member``'s):

* plain + gzip: ``postgresql-<db>.sql.gz``. pg_dump writes SQL to a pipe and this process gzips it
  as it streams (1 MiB chunks, mtime 0; the engine per level is ``core.compression``'s), so
  compression runs in parallel with pg_dump as ``pg_dump | gzip`` would.
* plain + zstd: ``postgresql-<db>.sql.zst``, a standard zstd frame compressed here the same way
  (zstandard, multi-threaded), so it does not depend on how pg_dump was built.
* plain + none: ``postgresql-<db>.sql``.
* plain + lz4: ``postgresql-<db>.sql.lz4``, compressed by pg_dump itself (``--compress=lz4:N``),
  which needs pg_dump 16 or later built with that library.
* custom: ``postgresql-<db>.dump`` with ``--format=custom --compress=<method>:<level>``.

Sealed: with ``seal`` (the archive's password and key size, when the archive is encrypted), a dump
that streams through this process (plain, gzip/zstd/none) is encrypted as it is written, as the
archive member will hold it (``core.sealed_member``), staged as ``<name>.aes``; the size and sha256
recorded are still those of the compressed dump.

Beside the dump, what it needs on an empty server (see ``globals_capture``), read in the same
snapshot before pg_dump starts: ``postgresql-<db>.roles.sql`` (the roles it refers to, for psql)
and ``postgresql-<db>.database.json`` (those roles as data, and the database's owner, settings,
privileges and comment). What the login may not read is named in ``DumpResult.globals_notes``
and logged as a warning; it never fails the dump.

Stopping. pg_dump runs in a process group of its own, which a killed task would leave running.
``DumpJob.cancel()`` (an operator's ``on_kill``) kills that group at once; ``run()`` then deletes
the partial file and raises DumpError.

No false success. A non-zero exit, a ``pg_dump: error:`` line, empty output, a timeout, a signal
(named with what usually sends it), COPY data that cannot be counted, or output that is not complete (see
``readback``) raises DumpError, and the partial file is deleted. Failures a retry cannot fix (a
refused login, a missing database, an old or missing pg_dump, an unsupported compression, refused
options or patterns) are raised with ``retryable=False``.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO

from backup_ops.adapters.postgres.client_env import ClientLogin
from backup_ops.adapters.postgres.globals import DatabaseGlobals
from backup_ops.adapters.postgres.globals_capture import capture_globals, stage_globals, staged_paths
from backup_ops.adapters.postgres.readback import TAIL_BYTES, CheckKind, unreadable, verify_readback
from backup_ops.adapters.postgres.snapshot import SnapshotSession
from backup_ops.adapters.postgres.target import APP_NAME, PgTarget, connect, redact
from backup_ops.adapters.postgres.tools import check_versions, pg_tool, read_tail, tool_version
from backup_ops.core.compression import compressor_for, engine
from backup_ops.core.config import Compression, DatabaseSource
from backup_ops.core.copy_rows import CopyBlock, CopyRowCounter, CopyStreamError
from backup_ops.core.dump_member import DUMP_DIR, dump_file_name
from backup_ops.core.errors import DumpError
from backup_ops.core.fileio import CHUNK_SIZE
from backup_ops.core.models import DumpResult, StagedMember, TableStat
from backup_ops.core.pg_dump_args import extra_args_problem
from backup_ops.core.sealed_member import SEALED_SUFFIX, MemberSealer, Sealing

__all__ = ["DUMP_DIR", "DumpJob", "check_target", "dump_database"]

_log = logging.getLogger(__name__)

_STDERR_BYTES = 64 * 1024
_STDERR_TAIL_LINES = 6


def check_target(target: PgTarget, source: DatabaseSource, *, pg_bin_dir: Path | None = None) -> str:
    """Preflight before any work: pg_dump exists, the login works, pg_dump is new enough for the server.

    Returns a one-line description for the task log; raises DumpError with the reason.
    """
    who = _who(target, source)
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
    return DumpJob(target, source, staging_dir, pg_bin_dir=pg_bin_dir, log=log).run()


class DumpJob:
    """One database dump that another thread or a signal handler can stop: ``run()`` it, ``cancel()`` it."""

    def __init__(self, target: PgTarget, source: DatabaseSource, staging_dir: Path, *,
                 pg_bin_dir: Path | None = None, log: logging.Logger | None = None,
                 seal: Sealing | None = None) -> None:
        self.target = target
        self.seal = seal
        self.source = source
        self.staging_dir = Path(staging_dir)
        self.pg_bin_dir = pg_bin_dir
        self.log = log or _log
        # Plain attributes, not locks or Events: cancel() may run in a signal handler that interrupted
        # run() in the same thread, where waiting for a lock run() holds would never return.
        self._cancelled = False
        self._pgid: int | None = None

    @property
    def cancelled(self) -> bool:
        """Whether ``cancel()`` was called."""
        return self._cancelled

    def cancel(self) -> None:
        """Stop the dump now: SIGKILL pg_dump's process group; ``run()`` then deletes the partial file and raises.

        Safe from another thread and in a signal handler (an operator's ``on_kill``): it sets a flag
        and sends one signal, takes no lock, and returns at once. Before pg_dump starts, ``run()``
        sees the flag and does not start it; after ``run()`` returned, it does nothing.
        """
        self._cancelled = True
        pgid = self._pgid
        if pgid is not None:
            _kill_group(pgid)

    def run(self) -> DumpResult:
        """Dump the database into ``staging_dir/db-dumps/`` and prove it reads back; raises DumpError."""
        target, source, log = self.target, self.source, self.log
        who = _who(target, source)
        problem = extra_args_problem(source.extra_args)
        if problem is not None:
            raise DumpError(f"extra_args of {who} must not contain {problem}.", retryable=False)
        pg_dump = pg_tool("pg_dump", self.pg_bin_dir)
        # Resolve pg_restore before dumping, so a missing tool fails fast rather than after the dump.
        pg_restore = pg_tool("pg_restore", self.pg_bin_dir) if source.format == "custom" else None
        pg_dump_version, pg_dump_major = tool_version(pg_dump)
        plan = _plan_output(source, target.dbname, pg_dump_major, pg_dump_version, who)
        settings = _Settings(who=who, secrets=target.secrets, timeout=source.timeout, plan=plan, log=log)

        out_dir = self.staging_dir / DUMP_DIR
        try:
            out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise DumpError(f"Cannot create the staging directory {out_dir} for {who}: {exc.strerror}; "
                            "check backup.staging_directory and its permissions.") from exc
        # Only a stream that passes through this process can be encrypted on its way; pg_dump writes the
        # others (custom, lz4) and pg_restore or lz4 read them back from the file.
        seal = self.seal if plan.check == "stream" else None
        out_path = out_dir / (plan.file_name + SEALED_SUFFIX if seal else plan.file_name)
        # The dump member's stem (core.dump_member's naming), which the roles and settings files share.
        stem = dump_file_name(target.dbname, replace(source, format="custom")).removesuffix(".dump")
        staged = [out_dir / plan.file_name, out_dir / (plan.file_name + SEALED_SUFFIX), *staged_paths(out_dir, stem)]
        for path in staged:
            path.unlink(missing_ok=True)  # a leftover from a killed attempt
        began = time.monotonic()
        try:
            self._stop_if_cancelled(who)
            with SnapshotSession(target, source.conn_id, who) as session:
                check_versions(session.server_version_num, session.server_version, pg_dump_major, pg_dump_version,
                               who)
                columns = session.table_columns()
                captured, notes = capture_globals(session.connection, login=target.user, log=log)
                argv = [str(pg_dump), f"--snapshot={session.snapshot_id}", "--no-password", *plan.pg_dump_args,
                        *_table_args(source, pg_dump_major), *source.extra_args]
                with ClientLogin(target, f"{APP_NAME} pg_dump", who) as login:
                    written = self._run_pg_dump(settings, argv, login, out_path, seal)
            dumped = time.monotonic()
            blocks = verify_readback(out_path, plan.check, pg_restore, written.tail, who=who, log=log)
            stats = _table_stats(_streamed_blocks(written, who) if blocks is None else blocks, columns)
            extras = self._stage_globals(captured, out_dir, stem, f"{DUMP_DIR}/{plan.file_name}", who)
            self._stop_if_cancelled(who)
        except BaseException:
            for path in staged:
                path.unlink(missing_ok=True)
            raise
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
            staged_encryption=f"aes{seal.nbits}" if seal else "none",
            duration_s=round(duration, 3),
            snapshot_id=session.snapshot_id,
            server_version=session.server_version,
            pg_dump_version=pg_dump_version,
            tables=tuple(stats),
            extra_members=extras,
            globals_notes=notes,
        )
        if notes:
            log.warning("Roles and settings of %s were captured in part; a restore on an empty server needs the rest "
                        "by hand: %s", who, " ".join(notes))
        log.info(
            "Dumped %s: %d tables, %d rows, %d bytes (%s) in %.1f s (%.1f MB/s of output; read-back check %.1f s) "
            "as %s%s", who, len(stats), result.total_rows, written.size,
            engine(source.compression) if plan.compress is not None else f"{result.compression} by pg_dump", dump_s,
            written.size / 1e6 / max(dump_s, 1e-6), finished - dumped, result.member_name,
            f", beside it the {len(captured.roles)} role{'' if len(captured.roles) == 1 else 's'} it refers to and the "
            "database's settings, for an empty server" if captured is not None else "",
        )
        return result

    @staticmethod
    def _stage_globals(captured: DatabaseGlobals | None, out_dir: Path, stem: str, dump_member: str,
                       who: str) -> tuple[StagedMember, ...]:
        if captured is None:
            return ()
        try:
            return stage_globals(captured, out_dir, stem, dump_file=dump_member)
        except OSError as exc:
            raise DumpError(f"Writing the roles and settings of {who} to {out_dir} failed: {exc.strerror}; free "
                            "space in or move backup.staging_directory.") from exc

    def _stop_if_cancelled(self, who: str) -> None:
        if self._cancelled:
            raise DumpError(f"The dump of {who} was stopped before it finished (the task was killed or cancelled); "
                            "pg_dump and its process group were killed and the partial dump was deleted.")

    def _run_pg_dump(self, settings: _Settings, argv: list[str], login: ClientLogin, out_path: Path,
                     seal: Sealing | None) -> _Written:
        """Stream pg_dump into the staged file, counting rows as they pass; raise DumpError on any failure."""
        who, timeout = settings.who, settings.timeout
        timed_out = threading.Event()
        self._stop_if_cancelled(who)
        # stderr goes to a temporary file: a pipe nobody reads could fill up and block pg_dump.
        with tempfile.TemporaryFile() as stderr_file:
            try:
                # A process group of its own, so a kill also reaches anything pg_dump (or a wrapper
                # script in pg_bin_dir) started, which would otherwise keep the pipe open.
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr_file,
                                        env=login.env, pass_fds=login.pass_fds, cwd=out_path.parent,
                                        start_new_session=True)
            except OSError as exc:
                not_a_tool = exc.errno in (errno.ENOENT, errno.EACCES, errno.ENOEXEC)  # the next try finds the same
                raise DumpError(f"Could not start {argv[0]} for {who}: {exc.strerror}; check backup.source.pg_bin_dir.",
                                retryable=not not_a_tool) from exc
            self._pgid = proc.pid
            if self._cancelled:  # cancel() ran between Popen and the line above
                _kill_group(proc.pid)

            def kill_on_timeout() -> None:
                timed_out.set()
                _kill_group(proc.pid)

            timer = threading.Timer(timeout, kill_on_timeout) if timeout else None
            if timer is not None:
                timer.daemon = True
                timer.start()
            written: _Written | None = None
            write_error: OSError | None = None
            count_error: CopyStreamError | None = None
            try:
                stdout = proc.stdout
                if stdout is None:  # cannot happen with stdout=PIPE; keeps the type checker honest
                    raise DumpError(f"pg_dump for {who} has no output pipe; this is a bug in backup-ops.")
                try:
                    written = _write_stream(stdout, out_path, settings.plan.compress,
                                            count=settings.plan.check == "stream", seal=seal)
                except OSError as exc:
                    write_error = exc
                except CopyStreamError as exc:
                    count_error = exc
                if write_error is not None or count_error is not None:
                    _kill_group(proc.pid)  # nobody reads the pipe any more: pg_dump would block on it forever
                returncode = proc.wait()
            finally:
                if proc.poll() is None:
                    _kill_group(proc.pid)
                    proc.wait()
                self._pgid = None
                if proc.stdout is not None:
                    proc.stdout.close()
                if timer is not None:
                    timer.cancel()
            stderr = read_tail(stderr_file, _STDERR_BYTES)

        stderr_tail = _stderr_tail(stderr, settings.secrets)
        self._stop_if_cancelled(who)
        if timed_out.is_set():
            raise DumpError(f"pg_dump of {who} did not finish within source.timeout = {timeout} s and was killed; "
                            "raise the timeout for this database or look for locks or slow I/O on the server.")
        if write_error is not None:
            raise DumpError(f"Writing the dump of {who} to {out_path} failed: {write_error.strerror}; free space in or "
                            "move backup.staging_directory.") from write_error
        if count_error is not None:  # pg_dump was killed for it: its exit status says nothing more
            raise DumpError(f"The rows in the dump of {who} could not be counted: {count_error}. Check that "
                            "backup.source.pg_bin_dir holds a real pg_dump.", retryable=False)
        if returncode < 0:
            raise _killed_by_signal(who, -returncode, stderr_tail)
        if returncode != 0:
            hint, retryable = _hint(stderr)
            raise DumpError(f"pg_dump failed for {who} with exit code {returncode}: {stderr_tail}. {hint}",
                            retryable=retryable)
        if "pg_dump: error:" in stderr:
            hint, retryable = _hint(stderr)
            raise DumpError(f"pg_dump reported an error for {who} although it exited 0: {stderr_tail}. {hint}",
                            retryable=retryable)
        if written is None or written.input_bytes == 0:
            raise DumpError(f"pg_dump produced no output for {who} (exit 0, stderr: {stderr_tail}); check that "
                            f"{argv[0]} is a working pg_dump.")
        if stderr.strip():
            settings.log.warning("pg_dump for %s wrote to stderr: %s", who, stderr_tail)
        return written


def _who(target: PgTarget, source: DatabaseSource) -> str:
    return f"database {target.dbname!r} (Airflow connection {source.conn_id!r})"


def _table_args(source: DatabaseSource, pg_dump_major: int) -> list[str]:
    """pg_dump options for include_tables / exclude_tables: with pg_dump 16+, a table's partitions come along."""
    children = "-and-children" if pg_dump_major >= 16 else ""
    return [*(f"--table{children}={pattern}" for pattern in source.include_tables),
            *(f"--exclude-table{children}={pattern}" for pattern in source.exclude_tables)]


def _streamed_blocks(written: _Written, who: str) -> list[CopyBlock]:
    """The COPY blocks counted as the plain output streamed; a stream that stopped inside one does not read back."""
    if written.counter is None:
        raise DumpError(f"The rows of {who} were not counted as the dump streamed; this is a bug in backup-ops.")
    try:
        return written.counter.finish()
    except CopyStreamError as exc:
        raise unreadable(who, str(exc)) from None


def _table_stats(blocks: list[CopyBlock], columns: dict[tuple[str, str], tuple[str, ...]]) -> list[TableStat]:
    """One entry per table whose data the dump holds, in the dump's order; blocks of one table add up.

    Columns come from the snapshot's catalog (all of them, generated ones too); the COPY header's
    list stands in only for a table the catalog did not list under the same name (a name in a
    client encoding other than UTF-8).
    """
    rows: dict[tuple[str, str], int] = {}
    copied: dict[tuple[str, str], tuple[str, ...]] = {}
    for block in blocks:
        key = (block.schema, block.name)
        rows[key] = rows.get(key, 0) + block.rows
        copied.setdefault(key, block.columns)
    return [TableStat(schema, name, count, columns.get((schema, name), copied[(schema, name)]))
            for (schema, name), count in rows.items()]


# ---------------------------------------------------------------------------- output plan


@dataclass(frozen=True)
class _Settings:
    """What the steps of one dump share: names for messages, the secrets to redact, limits, plan, logger."""

    who: str
    secrets: tuple[str, ...] = field(repr=False)
    timeout: int | None
    plan: _OutputPlan
    log: logging.Logger


@dataclass(frozen=True)
class _OutputPlan:
    """File name, pg_dump format/compression flags, and how the result is compressed and checked."""

    file_name: str
    pg_dump_args: tuple[str, ...]
    compress: Compression | None  # compressed in this process (gzip, zstd); None: pg_dump's bytes as they come
    check: CheckKind


def _plan_output(source: DatabaseSource, dbname: str, major: int, version: str, who: str) -> _OutputPlan:
    compression = source.compression
    file_name = dump_file_name(dbname, source)
    spec = "none" if compression.method == "none" else f"{compression.method}:{compression.level}"
    in_process = source.format == "plain" and compression.method in ("gzip", "zstd")
    if compression.method in ("zstd", "lz4") and major < 16 and not in_process:
        raise DumpError(
            f"Compression {spec} for {who} needs pg_dump 16 or later, but pg_dump is {version}; "
            "use gzip, or set backup.source.pg_bin_dir to a newer PostgreSQL client.", retryable=False,
        )
    if source.format == "custom":
        # pg_dump before 16 only knows gzip levels: -Z 0 means uncompressed.
        legacy = "0" if compression.method == "none" else str(compression.level)
        return _OutputPlan(file_name, ("--format=custom", f"--compress={spec if major >= 16 else legacy}"),
                           None, "custom")
    if in_process:
        # Plain SQL streams through this process: compressed here, and checked and counted on the stream.
        return _OutputPlan(file_name, ("--format=plain",), compression, "stream")
    if compression.method == "none":
        return _OutputPlan(file_name, ("--format=plain",), None, "stream")
    return _OutputPlan(file_name, ("--format=plain", f"--compress={spec}"), None, "lz4")


# ---------------------------------------------------------------------------- running pg_dump


@dataclass(frozen=True)
class _Written:
    size: int
    sha256: str
    input_bytes: int  # bytes pg_dump wrote, before our compression
    tail: bytes  # the last bytes pg_dump wrote, before our compression (for the completion check)
    counter: CopyRowCounter | None  # what the plain output's COPY blocks held, as it streamed past


def _kill_group(pgid: int) -> None:
    """SIGKILL pg_dump's process group (pg_dump and anything it started); no lock, safe in a signal handler."""
    # ProcessLookupError: already gone; PermissionError: a reused id in another session is not ours to signal.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _write_stream(stream: IO[bytes], out_path: Path, compress: Compression | None, *, count: bool,
                  seal: Sealing | None = None) -> _Written:
    """Copy ``stream`` to a new 0600 file in 1 MiB chunks, compressing, hashing, encrypting (``seal``) and
    (``count``) counting rows.

    One thread does it all. A writer thread, and a compressing thread (ISA-L releases the GIL), were
    measured: pg_dump, its server backend and this thread already keep both cores busy, and each
    hand-over only added waiting; the dump got slower, not faster.
    """
    digest = hashlib.sha256()
    size = 0
    input_bytes = 0
    # gzip: mtime 0 and no file name in the header, so equal input gives equal bytes (core.compression).
    compressor = compressor_for(compress) if compress is not None else None
    sealer = MemberSealer(seal.password, seal.nbits) if seal else None
    fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(fd, "wb") as out:
        def emit(data: bytes) -> None:
            nonlocal size
            if data:
                digest.update(data)
                size += len(data)
                out.write(sealer.seal(data) if sealer is not None else data)

        if sealer is not None:
            out.write(sealer.header)
        tail = b""
        counter = CopyRowCounter() if count else None
        while chunk := stream.read(CHUNK_SIZE):
            input_bytes += len(chunk)
            tail = (tail + chunk)[-TAIL_BYTES:] if len(chunk) < TAIL_BYTES else chunk[-TAIL_BYTES:]
            if counter is not None:
                counter.feed(chunk)
            emit(compressor.compress(chunk) if compressor is not None else chunk)
        if compressor is not None and input_bytes:
            emit(compressor.flush())
        if sealer is not None:
            out.write(sealer.trailer())
    return _Written(size, digest.hexdigest(), input_bytes, tail, counter)


def _stderr_tail(stderr: str, secrets: tuple[str, ...]) -> str:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    return redact(" | ".join(lines[-_STDERR_TAIL_LINES:]), *secrets) or "(no stderr)"


def _killed_by_signal(who: str, signum: int, stderr_tail: str) -> DumpError:
    """What a signal that ended pg_dump most likely means (our own timeout and cancel are handled before)."""
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"signal {signum}"
    if signum == signal.SIGKILL:
        cause = ("something outside backup-ops killed it: most likely the kernel's out-of-memory killer (look for "
                 "'Out of memory: Killed process' in `dmesg` or `journalctl -k` on the worker, and check the memory "
                 "limit of its container or cgroup), or an operator's kill -9")
    elif signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        cause = ("it was stopped from outside: by an operator, or by Airflow (the task was cleared or marked failed, "
                 "or the worker is shutting down)")
    else:
        cause = ("it crashed: check the PostgreSQL client in backup.source.pg_bin_dir (a broken build or library) "
                 "and the worker's kernel log (`dmesg`)")
    return DumpError(f"pg_dump failed for {who} with signal {name}: {cause}; its stderr: {stderr_tail}. "
                     "Run the backup again once the cause is dealt with.")


def _hint(stderr: str) -> tuple[str, bool]:
    """What to do about pg_dump's error, and whether a retry could help."""
    low = stderr.lower()
    if "does not support compression" in low:
        return ("This pg_dump was built without that compression library: use gzip, or set backup.source.pg_bin_dir "
                "to a pg_dump built with it.", False)
    if "server version mismatch" in low:
        return "Set backup.source.pg_bin_dir to a pg_dump of the server's major version or newer.", False
    if "no matching tables" in low or "no matching schemas" in low:
        return "Check include_tables / extra_args patterns against the database's tables.", False
    if "permission denied" in low:
        return "Grant the backup login SELECT on every table it dumps (or exclude the table).", False
    if "unrecognized option" in low or "invalid option" in low or "ambiguous" in low or "requires an argument" in low:
        return "Correct extra_args for this pg_dump (see pg_dump --help).", False
    return "Fix the cause above and run the backup again.", True
