"""Loading a dump from a backup archive into an existing, empty database: streamed, one transaction, checked.

* plain (``.sql.gz`` / ``.sql`` / ``.sql.zst`` / ``.sql.lz4``): the member is streamed out of the
  archive (decrypted, then decompressed in this process: gzip through ISA-L, zstd through zstandard,
  ``backup_ops.core.compression``; lz4 by the ``lz4`` tool) straight into
  ``psql -X -v ON_ERROR_STOP=1``, never written to disk; a reader thread decrypts and decompresses
  the next chunks while psql works, through a 1 MiB pipe. The load is one transaction, exactly as
  ``psql --single-transaction`` makes it, except that ``BEGIN`` and ``COMMIT`` are sent by this
  process around the dump: ``--single-transaction`` commits whatever it read when its input ends,
  so a killed worker (its pipe closed mid-dump) would leave a half-loaded database committed. Here
  ``COMMIT`` is sent only after the last byte decompressed and the member's AES HMAC (or CRC) and
  the gzip trailer (or zstd frame end and checksum) checked out; anything else kills psql, and the
  transaction rolls back.
* custom (``.dump``): the member is extracted safely into the working directory and loaded with
  ``pg_restore -j <jobs> --exit-on-error`` (one job: ``--single-transaction``), then removed.

Credentials: psql and pg_restore get the connection through ``ClientLogin`` (the password in an
in-memory file, never in argv or on disk); their messages reach the caller redacted.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from backup_ops.adapters.postgres.client_env import ClientLogin
from backup_ops.adapters.postgres.target import APP_NAME, PgTarget, redact
from backup_ops.adapters.postgres.tools import clean_env, pg_tool, read_tail
from backup_ops.core.archive_read import DEFAULT_PASSWORD_SOURCE, open_member
from backup_ops.core.compression import IN_PROCESS_METHODS, decompress_chunks
from backup_ops.core.errors import ArchiveError, DumpError, VerificationError
from backup_ops.core.extract import safe_extract
from backup_ops.core.fileio import CHUNK_SIZE
from backup_ops.core.manifest import ManifestDatabase

_log = logging.getLogger(__name__)

_STDERR_BYTES = 64 * 1024
_STDERR_LINES = 4
_PIPE_SIZE = 1 << 20
_QUEUED_CHUNKS = 8
_F_SETPIPE_SZ = 1031
_LZ4 = ("lz4", "-dcq")  # pg_dump's own lz4 compression; no in-process decompressor for it


def load_dump(target: PgTarget, conn_id: str, archive: Path, database: ManifestDatabase, *, password: bytes | None,
              workdir: Path, pg_bin_dir: Path | None = None, jobs: int = 1,
              password_source: str = DEFAULT_PASSWORD_SOURCE, log: logging.Logger | None = None) -> float:
    """Load ``database``'s dump from ``archive`` into ``target.dbname``; returns the seconds it took.

    ``workdir`` holds the extracted file of a custom-format dump (removed afterwards). Raises
    DumpError with the tool's last lines (never a secret), VerificationError when the member
    fails its integrity check; a plain load then leaves nothing committed.
    """
    log = log or _log
    started = time.monotonic()
    who = f"{database.member} into database {target.dbname!r} on {target.host}:{target.port}"
    if database.format == "custom":
        folder = Path(tempfile.mkdtemp(prefix="dump-", dir=workdir))
        try:
            (dump_file,) = safe_extract(archive, folder, password=password, members=[database.member])
            _run_pg_restore(target, dump_file, jobs=jobs, pg_bin_dir=pg_bin_dir, who=who, roles=_has_roles(database))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    else:
        method = database.compression.split(":", 1)[0].strip().lower()
        _run_psql(target, _member_chunks(archive, database.member, method, password, password_source),
                  pg_bin_dir=pg_bin_dir, who=who, roles=_has_roles(database))
    seconds = time.monotonic() - started
    log.info("Loaded %s in %.1f s", who, seconds)
    return seconds


def _has_roles(database: ManifestDatabase) -> bool:
    return bool(database.roles_member)


def _member_chunks(archive: Path, member: str, method: str, password: bytes | None,
                   password_source: str) -> Iterator[bytes]:
    """The dump's SQL in chunks: decrypted, decompressed, every integrity check passed when it ends."""
    with open_member(archive, member, password, password_source=password_source) as stream:
        raw = iter(lambda: stream.read(CHUNK_SIZE), b"")
        if method in IN_PROCESS_METHODS or method == "":
            yield from decompress_chunks(raw, method, member)
        elif method == "lz4":
            yield from _filter(_LZ4, raw, member)
        else:
            raise ArchiveError(f"Dump {member!r} is compressed with {method!r}, which this backup-ops cannot "
                               "decompress; restore it by hand.", retryable=False)


def _filter(argv: Sequence[str], chunks: Iterator[bytes], member: str) -> Iterator[bytes]:
    """Pipe ``chunks`` through a decompressor tool (lz4); its failure is the member's failure."""
    tool = shutil.which(argv[0])
    if tool is None:
        raise ArchiveError(f"Dump {member!r} is compressed with {argv[0]}, which is not installed on this worker; "
                           f"install {argv[0]}.", retryable=False)
    with tempfile.TemporaryFile() as stderr_file:
        proc = subprocess.Popen([tool, *argv[1:]], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=stderr_file, env=clean_env(), start_new_session=True)
        feed_error: list[BaseException] = []

        def feed() -> None:
            try:
                assert proc.stdin is not None
                for chunk in chunks:
                    proc.stdin.write(chunk)
                proc.stdin.close()
            except BaseException as exc:
                feed_error.append(exc)
                _kill_group(proc.pid)

        feeder = threading.Thread(target=feed, name=f"feed {argv[0]}", daemon=True)
        feeder.start()
        finished = False
        try:
            assert proc.stdout is not None
            while data := proc.stdout.read(CHUNK_SIZE):
                yield data
            finished = True
        finally:
            if not finished:  # the consumer stopped early: nobody reads the tool's output any more
                _kill_group(proc.pid)
            feeder.join()
            returncode = proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        if feed_error and not isinstance(feed_error[0], BrokenPipeError):
            raise feed_error[0]
        if returncode != 0:
            tail = read_tail(stderr_file, 2000).strip().splitlines()
            raise VerificationError(f"Dump {member!r} does not decompress with {argv[0]} (exit {returncode}: "
                                    f"{tail[-1] if tail else 'no message'}): the archive is damaged.")


def _run_psql(target: PgTarget, chunks: Iterator[bytes], *, pg_bin_dir: Path | None, who: str, roles: bool) -> None:
    """Stream SQL into psql in one transaction, committed only when every chunk arrived intact."""
    psql = pg_tool("psql", pg_bin_dir)
    argv = [str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "--no-password"]
    with ClientLogin(target, f"{APP_NAME} restore", who) as login, tempfile.TemporaryFile() as stderr_file:
        proc = _start(argv, login, stderr_file, stdin=subprocess.PIPE)
        committed = False
        try:
            assert proc.stdin is not None
            _grow_pipe(proc.stdin)
            try:
                proc.stdin.write(b"BEGIN;\n")
                _pump(chunks, proc.stdin)
                proc.stdin.write(b"\nCOMMIT;\n")
                proc.stdin.close()
                committed = True
            except BrokenPipeError:
                pass  # psql stopped reading: it failed, its exit code and stderr say why
            returncode = proc.wait()
        finally:
            if not committed:
                _kill_group(proc.pid)  # no COMMIT ever reaches psql: the transaction rolls back
            proc.wait()
            if proc.stdin is not None and not proc.stdin.closed:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        stderr = read_tail(stderr_file, _STDERR_BYTES)
    if returncode != 0 or not committed:
        raise _tool_error("psql", returncode, stderr, target, who, roles,
                          "nothing was committed (one transaction)")


def _run_pg_restore(target: PgTarget, dump_file: Path, *, jobs: int, pg_bin_dir: Path | None, who: str,
                    roles: bool) -> None:
    pg_restore = pg_tool("pg_restore", pg_bin_dir)
    mode = [f"--jobs={jobs}"] if jobs > 1 else ["--single-transaction"]
    argv = [str(pg_restore), "--no-password", "--exit-on-error", *mode, "--dbname", _conninfo_dbname(target.dbname),
            str(dump_file)]
    with ClientLogin(target, f"{APP_NAME} restore", who) as login, tempfile.TemporaryFile() as stderr_file:
        proc = _start(argv, login, stderr_file, stdin=subprocess.DEVNULL)
        try:
            returncode = proc.wait()
        except BaseException:
            _kill_group(proc.pid)
            proc.wait()
            raise
        stderr = read_tail(stderr_file, _STDERR_BYTES)
    if returncode != 0:
        partial = "nothing was committed (one transaction)" if jobs == 1 else \
            f"the database is partly loaded (pg_restore -j {jobs} is not one transaction); drop it"
        raise _tool_error("pg_restore", returncode, stderr, target, who, roles, partial)


def _conninfo_dbname(name: str) -> str:
    """``dbname='…'``: a database name pg_restore cannot read as a connection string or an option."""
    return "dbname='" + name.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _start(argv: list[str], login: ClientLogin, stderr_file: IO[bytes], *, stdin: Any) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(argv, stdin=stdin, stdout=subprocess.DEVNULL, stderr=stderr_file, env=login.env,
                                pass_fds=login.pass_fds, start_new_session=True)
    except OSError as exc:
        raise DumpError(f"Could not start {argv[0]}: {exc.strerror}; check backup.source.pg_bin_dir.",
                        retryable=False) from exc


def _pump(chunks: Iterator[bytes], sink: IO[bytes]) -> None:
    """Write ``chunks`` to ``sink`` while a thread produces the next ones (decrypting and decompressing overlap
    psql's work); the producer's exception is raised here, after the bytes before it were written."""
    items: queue.Queue[Any] = queue.Queue(maxsize=_QUEUED_CHUNKS)
    stop = threading.Event()
    done = object()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        close = getattr(chunks, "close", None)  # a generator: closing it closes the archive member it reads
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
            put(done)
        except BaseException as exc:
            put(_Failed(exc))
        finally:
            if close is not None:
                close()

    producer = threading.Thread(target=produce, name="restore reader", daemon=True)
    producer.start()
    try:
        while True:
            item = items.get()
            if item is done:
                return
            if isinstance(item, _Failed):
                raise item.error
            sink.write(item)
    finally:
        stop.set()
        producer.join()


@dataclass(frozen=True)
class _Failed:
    error: BaseException


def _grow_pipe(stream: IO[bytes]) -> None:
    """A 1 MiB pipe (Linux), so psql has work queued while the next chunk is decrypted; best effort."""
    with contextlib.suppress(OSError, ValueError):
        fcntl.fcntl(stream.fileno(), _F_SETPIPE_SZ, _PIPE_SIZE)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _tool_error(tool: str, returncode: int, stderr: str, target: PgTarget, who: str, roles: bool,
                outcome: str) -> DumpError:
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    tail = redact(" | ".join(lines[-_STDERR_LINES:]), *target.secrets) or "(no message)"
    missing_role = next((line for line in lines if "role" in line and "does not exist" in line), None)
    if missing_role is not None:
        hint = ("the archive's roles were applied, but not this one" if roles else
                "the archive carries no roles (it was made before backup-ops captured them), so create the roles "
                "the dump refers to on the target first")
        return DumpError(f"{tool} failed restoring {who}: {redact(missing_role, *target.secrets)}; {hint}; "
                         f"{outcome}.", retryable=False)
    if returncode < 0:
        return DumpError(f"{tool} was killed by signal {-returncode} while restoring {who}; {outcome}.")
    return DumpError(f"{tool} failed restoring {who} (exit {returncode}): {tail}; {outcome}.",
                     retryable=returncode not in (1, 3))
