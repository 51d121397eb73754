"""``python -m backup_ops list|verify`` against real files on a local destination."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from backup_ops.cli import age_text, main

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, destinations: list[dict]) -> Path:
    config = {"backup": {"name": "app", "source": {"files": {"include": [str(tmp_path)]}},
                         "destination": {"destinations": destinations}}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_list_shows_one_row_per_destination(tmp_path, capsys):
    good = tmp_path / "good"
    (good / "app").mkdir(parents=True)
    (good / "app" / "2026-11-25-02-00-00.zip").write_bytes(b"x" * 2048)
    (good / "app" / "2026-11-26-02-00-00.zip").write_bytes(b"x" * 1024)
    (good / "app" / "notes.txt").write_text("not a backup")
    config = write_config(tmp_path, [{"name": "disk", "type": "local", "path": str(good)},
                                     {"name": "gone", "type": "local", "path": str(tmp_path / "missing")}])
    assert main(["--config", str(config), "list"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "Destination" in line)
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "Name", "Destination", "Reachable", "# of backups", "Newest backup", "Used storage"]
    disk = next(line for line in out.splitlines() if "| disk" in line)
    assert "| yes " in disk and "| 2 " in disk and "3.00 KB" in disk
    gone = next(line for line in out.splitlines() if "| gone" in line)
    assert "| no " in gone and "/" in gone
    assert "does not exist" in out


def test_age_text_matches_laravel_format():
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert age_text(now - timedelta(days=1, hours=1), now) == "1.04 (1 day ago)"
    assert age_text(now - timedelta(minutes=5), now) == "0.00 (5 minutes ago)"


def test_bad_config_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("backup: {name: 'a b'}\n")
    assert main(["--config", str(bad), "list"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: backup.name must be") and err.count("\n") == 1


def test_verify_command_ok_and_wrong_password(tmp_path):
    from backup_ops.core.archive import build_archive
    from backup_ops.core.config import FileSource
    from backup_ops.core.files import select_files
    from backup_ops.core.manifest import build_manifest

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    target = tmp_path / "2026-11-26-02-00-00.zip"

    def manifest(members):
        return build_manifest(backup_name="app", created_at=datetime(2026, 11, 26, 2, tzinfo=UTC),
                              archive_name=target.name, run={"dag_id": "backup_daily", "run_id": "r1"},
                              dumps=[], members=members, encryption="aes256", tool_versions={})

    build_archive(target, dumps=[], files=select_files(FileSource(include=(src,), relative_path=src)),
                  password=b"pw", encryption="aes256", compression_level=6, make_manifest=manifest)
    env = {"PYTHONPATH": str(ROOT / "plugins"), "PATH": "/usr/bin:/bin"}
    ok = subprocess.run([sys.executable, "-m", "backup_ops", "verify", str(target)], capture_output=True,
                        text=True, env={**env, "BACKUP_ARCHIVE_PASSWORD": "pw"}, stdin=subprocess.DEVNULL, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout and "files: 1" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "backup_ops", "verify", str(target)], capture_output=True,
                         text=True, env={**env, "BACKUP_ARCHIVE_PASSWORD": "nope"}, stdin=subprocess.DEVNULL,
                         check=False)
    assert bad.returncode == 1
    assert "Wrong archive password" in bad.stderr
