"""Domain errors: each carries one sentence an operator can act on.

Adapters translate OS, subprocess and S3 errors into these at the I/O boundary
(``raise DumpError(...) from exc``) so task logs show what went wrong and what to do,
not a stack of library internals.

Each error also says whether trying again could help: a dropped connection may heal by the next
attempt, a typo in the config or a refused password will not. The Airflow side fails a task at
once, without its retries, when the error is not ``retryable``.
"""

from __future__ import annotations


class BackupError(Exception):
    """Base class of every error backup-ops raises on purpose; ``retryable=False`` marks a permanent one."""

    retryable: bool = True

    def __init__(self, *args: object, retryable: bool | None = None) -> None:
        super().__init__(*args)
        if retryable is not None:
            self.retryable = retryable


class ConfigError(BackupError, ValueError):
    """The configuration file or a run parameter is invalid."""

    retryable = False


class SecretError(BackupError):
    """A secret reference (variable, env, connection) could not be resolved."""

    retryable = False


class DumpError(BackupError):
    """pg_dump failed, produced nothing, or its output does not read back."""


class FileSelectionError(BackupError):
    """Files to back up could not be read."""


class ArchiveError(BackupError):
    """Building, reading or decrypting an archive failed."""


class UnsafeArchiveError(ArchiveError):
    """An archive member would escape the extraction target or is not a regular file."""


class VerificationError(BackupError):
    """A published or fetched backup does not match what was written."""


class DestinationError(BackupError):
    """A destination could not be reached, written, listed or deleted from."""
