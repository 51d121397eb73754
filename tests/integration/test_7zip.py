"""Archives built by backup-ops open with 7-Zip, the tool an operator reaches for in an emergency."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from backup_ops.core.archive import build_archive
from backup_ops.core.config import FileSource
from backup_ops.core.files import select_files
from backup_ops.core.manifest import MANIFEST_NAME, build_manifest
from backup_ops.core.models import DumpResult

PASSWORD = "s3cr3t-Zm9vYmFyYmF6cXV4IGhpZ2gtZW50cm9weQ"


def find_7zip() -> str:
    """The 7-Zip binary; its absence fails the test (a skip would hide that restores are unproven)."""
    found = shutil.which("7zz") or shutil.which("7z")
    if found is None:
        pytest.fail("7-Zip (7zz or 7z) is not on PATH: run `make test`, which installs the 7zip package.")
    return found


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path, DumpResult]:
    source = tmp_path / "app"
    (source / "storage/logs").mkdir(parents=True)
    (source / "empty").mkdir()
    (source / ".env").write_bytes(b"APP_ENV=production\n")
    (source / "storage/logs/laravel.log").write_bytes(b"[2026-03-01] local.INFO: hello\n" * 5000)
    (source / "storage/photo.jpg").write_bytes(os.urandom(50_000))
    (source / "ünïcode name.txt").write_bytes(b"ok\n")
    staging = tmp_path / "staging"
    staging.mkdir()
    dump_bytes = b"\x1f\x8b" + os.urandom(200_000)
    dump_path = staging / "postgresql-app.sql.gz"
    dump_path.write_bytes(dump_bytes)
    dump = DumpResult(
        conn_id="app_db", database="app", member_name="db-dumps/postgresql-app.sql.gz", staged_path=str(dump_path),
        format="plain", compression="gzip:6", size=len(dump_bytes), sha256=hashlib.sha256(dump_bytes).hexdigest(),
        duration_s=0.1, snapshot_id="s", server_version="16.4", pg_dump_version="16.4",
    )
    target = staging / "2026-03-01-02-00-00.zip"
    entries = select_files(FileSource(include=(source,), relative_path=tmp_path), always_exclude=[staging])
    build_archive(
        target, dumps=[dump], files=entries, password=PASSWORD.encode(), encryption="aes256", compression_level=6,
        make_manifest=lambda members: build_manifest(
            backup_name="my-app", created_at=datetime.now(UTC), archive_name=target.name, run=None, dumps=[dump],
            members=members, encryption="aes256", tool_versions={}),
    )
    return target, source, dump


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def test_7zip_tests_lists_and_extracts_an_aes256_archive(built: tuple[Path, Path, DumpResult], tmp_path: Path) -> None:
    seven_zip = find_7zip()
    target, source, dump = built

    tested = run(seven_zip, "t", f"-p{PASSWORD}", str(target))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "Everything is Ok" in tested.stdout

    listing = run(seven_zip, "l", "-slt", f"-p{PASSWORD}", str(target)).stdout
    assert "Method = AES-256 Store" in listing  # the dump: encrypted, not deflated twice
    assert "Method = AES-256 Deflate" in listing  # the log

    out = tmp_path / "extracted"
    extracted = run(seven_zip, "x", f"-p{PASSWORD}", f"-o{out}", "-y", str(target))
    assert extracted.returncode == 0, extracted.stdout + extracted.stderr
    assert (out / dump.member_name).read_bytes() == Path(dump.staged_path).read_bytes()
    assert (out / MANIFEST_NAME).is_file()
    for path in source.rglob("*"):
        copy = out / "app" / path.relative_to(source)
        if path.is_dir():
            assert copy.is_dir(), copy
        else:
            assert copy.read_bytes() == path.read_bytes(), copy
    assert (out / "app/empty").is_dir() and not any((out / "app/empty").iterdir())


def test_7zip_rejects_a_wrong_password(built: tuple[Path, Path, DumpResult]) -> None:
    seven_zip = find_7zip()
    target, _, _ = built
    tested = run(seven_zip, "t", "-pwrong-password", str(target))
    assert tested.returncode != 0
    assert "Wrong password" in tested.stdout + tested.stderr


def test_7zip_opens_an_archive_whose_dump_was_encrypted_as_it_was_dumped(tmp_path: Path) -> None:
    """A sealed dump (core.sealed_member) is copied into its member as is: 7-Zip must decrypt it all the same."""
    from backup_ops.core.archive_read import verify_archive
    from backup_ops.core.sealed_member import MemberSealer

    seven_zip = find_7zip()
    dump_bytes = b"\x1f\x8b" + os.urandom(300_001)
    sealer = MemberSealer(PASSWORD.encode(), 256)
    sealed = tmp_path / "postgresql-app.sql.gz.aes"
    sealed.write_bytes(sealer.header + sealer.seal(dump_bytes[:70_000]) + sealer.seal(dump_bytes[70_000:])
                       + sealer.trailer())
    dump = DumpResult(
        conn_id="app_db", database="app", member_name="db-dumps/postgresql-app.sql.gz", staged_path=str(sealed),
        format="plain", compression="gzip:3", size=len(dump_bytes), sha256=hashlib.sha256(dump_bytes).hexdigest(),
        duration_s=0.1, snapshot_id="s", server_version="18.1", pg_dump_version="18.1", staged_encryption="aes256",
    )
    target = tmp_path / "2026-03-01-02-00-00.zip"
    result = build_archive(
        target, dumps=[dump], files=[], password=PASSWORD.encode(), encryption="aes256", compression_level=6,
        make_manifest=lambda members: build_manifest(
            backup_name="my-app", created_at=datetime.now(UTC), archive_name=target.name, run=None, dumps=[dump],
            members=members, encryption="aes256", tool_versions={}),
    )
    verify_archive(target, password=PASSWORD.encode(), expected_sha256=result.sha256, expected_size=result.size)

    tested = run(seven_zip, "t", f"-p{PASSWORD}", str(target))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "Method = AES-256 Store" in run(seven_zip, "l", "-slt", f"-p{PASSWORD}", str(target)).stdout
    out = tmp_path / "extracted"
    extracted = run(seven_zip, "x", f"-p{PASSWORD}", f"-o{out}", "-y", str(target))
    assert extracted.returncode == 0, extracted.stdout + extracted.stderr
    assert (out / dump.member_name).read_bytes() == dump_bytes
