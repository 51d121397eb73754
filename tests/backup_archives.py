"""Real backup-ops archives for tests that need a destination to hold backups, without running a backup.

The archives are built by ``backup_ops.core.archive.build_archive`` with a manifest, AES-encrypted,
and published through the destination's own ``publish`` (receipt first, then the archive), so they
are exactly what ``backup_daily`` leaves on a destination, only smaller.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from backup_ops.core.models import Receipt, archive_file_name

ARCHIVE_PASSWORD = "monitor-test-password"


def build_backup(workdir: Path, created_at: datetime, *, backup_name: str, password: str | None = ARCHIVE_PASSWORD,
                 payload: int = 1024) -> tuple[Path, Receipt]:
    """An archive named for ``created_at`` holding a ``payload``-byte random file, and its receipt."""
    from backup_ops.core.archive import build_archive
    from backup_ops.core.config import FileSource
    from backup_ops.core.files import select_files
    from backup_ops.core.manifest import build_manifest

    name = archive_file_name("", created_at)
    source = workdir / f"source-{name}"
    source.mkdir(parents=True)
    (source / "uploads").mkdir()
    (source / "uploads" / "invoice.pdf").write_bytes(os.urandom(payload))  # incompressible: size ≈ payload
    (source / ".env").write_text("APP_NAME=invoicing\n")
    target = workdir / name
    encryption = "aes256" if password else "none"

    def manifest(members: Any) -> dict[str, Any]:
        return build_manifest(backup_name=backup_name, created_at=created_at, archive_name=name,
                              run={"dag_id": "backup_daily", "run_id": "test"}, dumps=[], members=members,
                              encryption=encryption, tool_versions={})

    result = build_archive(target, dumps=[], files=select_files(FileSource(include=(source,), relative_path=source)),
                           password=password.encode() if password else None, encryption=encryption,
                           compression_level=6, make_manifest=manifest)
    return target, Receipt(name, result.size, result.sha256, created_at.isoformat(), result.manifest_sha256)


def publish_backup(destination: Any, workdir: Path, created_at: datetime, **options: Any) -> str:
    """Build an archive for ``created_at`` and publish it to ``destination``; returns its key there."""
    source, receipt = build_backup(workdir, created_at, backup_name=destination.backup_name, **options)
    return str(destination.publish(source, source.name, receipt).path)
