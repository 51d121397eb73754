"""Domain errors: each carries one sentence an operator can act on.

Adapters translate OS, subprocess and S3 errors into these at the I/O boundary
(``raise DumpError(...) from exc``) so task logs show what went wrong and what to do,
not a stack of library internals.
"""

from __future__ import annotations


class BackupError(Exception):
    """Base class of every error backup-ops raises on purpose."""


class ConfigError(BackupError, ValueError):
    """The configuration file or a run parameter is invalid."""


class SecretError(BackupError):
    """A secret reference (variable, env, connection) could not be resolved."""


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
