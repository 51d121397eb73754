"""``python -m backup_ops verify ARCHIVE``: check a downloaded archive against its manifest and receipt."""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path

from backup_ops.core.models import human_bytes


def verify_command(archive: Path, password_env: str) -> str:
    """Verify one archive file; returns the report text, raises BackupError when it is not sound.

    The password comes from the environment variable ``password_env`` or, when it is unset and
    a terminal is attached, a prompt; a wrong or missing password names the one that was used.
    """
    from backup_ops.core.archive_read import verify_archive

    password = os.environ.get(password_env)
    source = f"the environment variable {password_env} (--password-env)"
    if password is None and sys.stdin.isatty():
        password = getpass.getpass(f"Archive password for {archive.name} (empty: none): ") or None
        source = "the password typed at the prompt" if password else f"{source}, or type it at the prompt"
    receipt_file = archive.with_name(archive.name + ".json")
    expected_sha = expected_size = None
    if receipt_file.is_file():
        receipt = json.loads(receipt_file.read_text(encoding="utf-8"))
        expected_sha, expected_size = receipt.get("sha256"), receipt.get("size")
    result = verify_archive(archive, password=password.encode() if password else None,
                            expected_sha256=expected_sha, expected_size=expected_size, password_source=source)
    manifest = result.manifest
    lines = [f"{archive}: OK — {result.members_checked} members, {human_bytes(result.bytes_checked)} checked"
             + (" (size and sha256 match the receipt)" if expected_sha else " (no receipt beside it)"),
             f"  created {manifest.created_at.isoformat()} by {manifest.run.get('dag_id', '?')} "
             f"run {manifest.run.get('run_id', '?')}, encryption {manifest.encryption}"]
    for db in manifest.databases:
        lines.append(f"  {db.member}: {db.database}, {len(db.tables)} tables, {db.total_rows} rows, "
                     f"pg_dump {db.pg_dump_version}, server {db.server_version}")
    lines.append(f"  files: {manifest.file_count} ({human_bytes(manifest.file_bytes)})")
    if manifest.skipped:
        counts: dict[str, int] = {}
        for skipped in manifest.skipped:
            counts[skipped.reason] = counts.get(skipped.reason, 0) + 1
        by_reason = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
        lines.append(f"  skipped when the backup was taken: {len(manifest.skipped)} ({by_reason})")
        shown = 10
        lines += [f"    {s.name}: {s.detail} [{s.reason}]" for s in manifest.skipped[:shown]]
        if len(manifest.skipped) > shown:
            lines.append(f"    … and {len(manifest.skipped) - shown} more (all are in manifest.json)")
    return "\n".join(lines)
