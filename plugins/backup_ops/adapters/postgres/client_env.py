"""How pg_dump logs in: the connection as ``PG*`` variables, the password in a file that exists only in memory.

pg_dump gets the same libpq parameters as the psycopg sessions (``PgTarget.libpq_params``), each in
libpq's own environment variable (``host`` → ``PGHOST``, ``options`` → ``PGOPTIONS``,
``sslrootcert`` → ``PGSSLROOTCERT``, ``target_session_attrs`` → ``PGTARGETSESSIONATTRS``, …; the
names come from libpq's table). Parameters that have no variable (``keepalives*``,
``tcp_user_timeout``, ``sslpassword``, …) go into a service file (``PGSERVICEFILE`` +
``PGSERVICE``).

Nothing secret is on disk, in argv, in the environment or in messages. The password goes in a
pgpass file, and both files are anonymous in-memory files (``memfd_create``, mode 0600) that pg_dump
inherits as open descriptors and libpq opens as ``/proc/self/fd/<n>``. They have no name in any
directory: they vanish when the last process holding them exits, even when the worker is killed,
so no password is ever left behind. A wrapper around pg_dump must keep inherited descriptors open
(``exec`` does; Python's ``subprocess`` needs ``close_fds=False``). The worker's own ``PG*``
variables are not inherited, except TLS/GSS settings (see ``tools.clean_env``).
"""

from __future__ import annotations

import os
from types import TracebackType

from backup_ops.adapters.postgres.target import PgTarget, libpq_keywords
from backup_ops.adapters.postgres.tools import clean_env
from backup_ops.core.errors import DumpError

_SERVICE = "backup-ops"


class ClientLogin:
    """The environment and inherited descriptors of one pg_dump run; the in-memory files close on exit."""

    def __init__(self, target: PgTarget, application_name: str, who: str) -> None:
        self._target = target
        self._application_name = application_name
        self._who = who
        self._fds: list[int] = []
        self.env: dict[str, str] = {}

    @property
    def pass_fds(self) -> tuple[int, ...]:
        """The descriptors pg_dump must inherit (``subprocess.Popen(pass_fds=…)``)."""
        return tuple(self._fds)

    def __enter__(self) -> ClientLogin:
        try:
            self.env = self._build_env()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the in-memory files (their contents are freed once pg_dump has exited too)."""
        while self._fds:
            os.close(self._fds.pop())

    def _build_env(self) -> dict[str, str]:
        keywords = libpq_keywords()
        env = clean_env()
        without_variable: dict[str, str] = {}
        for key, value in self._target.libpq_params(self._application_name).items():
            variable = keywords[key].envvar if key in keywords else None
            if variable and variable != "PGPASSWORD":
                env[variable] = value
            else:
                without_variable[key] = value
        if without_variable:
            if "service" in self._target.params:
                raise DumpError(
                    f"The Airflow connection of {self._who} sets service together with "
                    f"{', '.join(sorted(without_variable))}, which pg_dump can only get through a service file of "
                    "its own; move those parameters into the service definition.", retryable=False)
            lines = "".join(f"{key}={value}\n" for key, value in without_variable.items())
            env["PGSERVICEFILE"] = self._memory_file("backup-ops-pg-service", f"[{_SERVICE}]\n{lines}")
            env["PGSERVICE"] = _SERVICE
        if self._target.password:
            env["PGPASSFILE"] = self._memory_file("backup-ops-pgpass", self._pgpass_line())
        return env

    def _pgpass_line(self) -> str:
        user, password = self._target.user, self._target.password
        if any(ch in password or ch in user for ch in "\r\n"):
            raise DumpError(f"The login or password of {self._who} contains a line break, which a pgpass file "
                            "cannot hold; change the password.", retryable=False)

        def escape(value: str) -> str:
            return value.replace("\\", "\\\\").replace(":", "\\:")

        # Wildcards for host/port/db: the file serves exactly one pg_dump run against this target, and
        # libpq's host matching has corner cases (sockets, host aliases) that must not lose the password.
        return f"*:*:*:{escape(user)}:{escape(password)}\n"

    def _memory_file(self, name: str, text: str) -> str:
        """An anonymous 0600 in-memory file holding ``text``; returns the path pg_dump opens it by."""
        try:
            fd = os.memfd_create(name, os.MFD_CLOEXEC)  # CLOEXEC: only pg_dump inherits it (pass_fds)
        except (AttributeError, OSError) as exc:
            raise DumpError(f"Cannot create an in-memory file for the login of {self._who} ({exc}); backup-ops "
                            "needs Linux (memfd_create) to give pg_dump its password without writing it to disk.",
                            retryable=False) from None
        self._fds.append(fd)
        # libpq ignores a pgpass file that is group- or world-accessible; a memfd starts out 0777.
        os.fchmod(fd, 0o600)
        data = text.encode("utf-8")
        while data:
            data = data[os.write(fd, data):]
        path = f"/proc/self/fd/{fd}"
        if not os.path.exists(path):
            raise DumpError(f"{path} does not exist, so pg_dump could not open the login of {self._who}; backup-ops "
                            "needs /proc mounted on the worker.", retryable=False)
        return path
