"""The PostgreSQL client tools (pg_dump, pg_restore, psql): where they are, which version, how they run.

pg_dump must be the server's major version or newer. The tools run with the worker's environment
minus the libpq variables that could point them at another server or log them in differently,
and minus Airflow's connections and variables (``AIRFLOW_CONN_*``, ``AIRFLOW_VAR_*``). A missing
or broken tool, or a pg_dump older than the server, is not retryable: the next attempt would find
the same binaries.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import IO

from backup_ops.core.errors import DumpError

# libpq variables a worker may legitimately set for TLS/GSS, and where service files are (inert
# unless the connection names a service); every other PG* variable is dropped from pg_dump's
# environment so it cannot redirect the dump or supply a different password.
_INHERITED_PG_VARS = frozenset({
    "PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY", "PGSSLCRL", "PGSSLCRLDIR", "PGSSLSNI",
    "PGSSLCERTMODE", "PGSSLNEGOTIATION", "PGSSLMINPROTOCOLVERSION", "PGSSLMAXPROTOCOLVERSION",
    "PGREQUIRESSL", "PGGSSENCMODE", "PGGSSLIB", "PGKRBSRVNAME", "PGCHANNELBINDING", "PGREQUIREAUTH",
    "PGREQUIREPEER", "PGSERVICEFILE", "PGSYSCONFDIR",
})
_AIRFLOW_SECRET_VARS = ("AIRFLOW_CONN_", "AIRFLOW_VAR_")


def pg_tool(name: str, pg_bin_dir: Path | None) -> Path:
    """Resolve a PostgreSQL client tool (pg_dump, pg_restore, psql) in ``pg_bin_dir`` or on PATH."""
    if pg_bin_dir is not None:
        path = Path(pg_bin_dir) / name
        if path.is_file() and os.access(path, os.X_OK):
            return path
        raise DumpError(
            f"{name} was not found or is not executable in {pg_bin_dir} (backup.source.pg_bin_dir); point "
            "pg_bin_dir at the bin directory of a PostgreSQL client, e.g. /usr/lib/postgresql/17/bin.",
            retryable=False,
        )
    found = shutil.which(name)
    if found is None:
        raise DumpError(
            f"{name} is not on PATH; install the PostgreSQL client tools (major version at least the "
            "server's) or set backup.source.pg_bin_dir to their bin directory.",
            retryable=False,
        )
    return Path(found)


def tool_version(tool: Path) -> tuple[str, int]:
    """``("18.6", 18)`` from ``pg_dump --version`` (``pg_dump (PostgreSQL) 18.6``)."""
    try:
        proc = subprocess.run([str(tool), "--version"], capture_output=True, text=True, timeout=30, check=False,
                              env=clean_env())
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DumpError(f"Could not run {tool} --version ({exc}); check that it is a working PostgreSQL client.",
                        retryable=isinstance(exc, subprocess.TimeoutExpired)) from exc
    first_line = proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else ""
    match = re.search(r"\(PostgreSQL\)\s+((\d+)\S*(?:\s.*)?)$", first_line)
    if proc.returncode != 0 or match is None:
        raise DumpError(f"{tool} --version printed {proc.stdout.strip()[:200]!r} (exit {proc.returncode}); "
                        "it does not look like PostgreSQL's pg_dump. Check backup.source.pg_bin_dir.", retryable=False)
    return match.group(1).strip(), int(match.group(2))


def check_versions(server_num: int, server: str, major: int, version: str, who: str) -> None:
    """Raise DumpError when pg_dump (``major``) is older than the server's major version."""
    server_major = server_num // 10000
    if server_major > major:
        raise DumpError(
            f"pg_dump {version} cannot dump {who}, which runs PostgreSQL {server}: pg_dump must be the server's "
            f"major version or newer; set backup.source.pg_bin_dir to a PostgreSQL {server_major} (or newer) client.",
            retryable=False,
        )


def clean_env() -> dict[str, str]:
    """The worker's environment without libpq variables that could redirect or authenticate pg_dump.

    Airflow connections and variables given as environment variables (``AIRFLOW_CONN_*``,
    ``AIRFLOW_VAR_*``) hold other secrets that the client tools never need; they are dropped too.
    """
    return {k: v for k, v in os.environ.items()
            if (not k.startswith("PG") or k in _INHERITED_PG_VARS) and not k.startswith(_AIRFLOW_SECRET_VARS)}


def read_tail(handle: IO[bytes], limit: int) -> str:
    """The last ``limit`` bytes a tool wrote to ``handle`` (a captured stderr file), decoded for messages."""
    handle.seek(0, os.SEEK_END)
    handle.seek(max(0, handle.tell() - limit))
    return handle.read().decode("utf-8", errors="replace")
