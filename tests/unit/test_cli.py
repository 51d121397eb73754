"""``python -m backup_ops list|verify`` against real files on a local destination."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from backup_ops.cli import main
from backup_ops.cli.list_command import age_text

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, destinations: list[dict], **backup: object) -> Path:
    config = {"backup": {"name": "app", "source": {"files": {"include": [str(tmp_path)]}},
                         "destination": {"destinations": destinations}, **backup}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


LIST_HEADER = ["Name", "Destination", "Reachable", "Healthy", "# of backups", "Newest backup", "Used storage"]


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip("|").split("|")]


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
    assert cells(header) == LIST_HEADER
    disk = next(line for line in out.splitlines() if "| disk" in line)
    assert "| yes " in disk and "| 2 " in disk and "3.00 KB" in disk
    gone = next(line for line in out.splitlines() if "| gone" in line)
    assert cells(gone)[2:] == ["no", "no", "/", "/", "/"]
    assert "does not exist" in out


def published_backups(root: Path, sizes: dict[str, int]) -> None:
    """Archives of zero bytes with the receipts backup-ops writes beside them."""
    import hashlib

    from backup_ops.adapters.destinations.base import receipt_bytes
    from backup_ops.core.models import Receipt

    (root / "app").mkdir(parents=True)
    for name, size in sizes.items():
        (root / "app" / name).write_bytes(bytes(size))
        receipt = Receipt(name, size, hashlib.sha256(bytes(size)).hexdigest(), "2026-11-26T02:00:00+00:00")
        (root / "app" / f"{name}.json").write_bytes(receipt_bytes(receipt))


def real_backups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *dates: datetime) -> tuple[Path, int]:
    """A local destination holding real encrypted backup-ops archives (with receipts); its config and bytes used."""
    from backup_ops.adapters.destinations.local import LocalDestination
    from tests.backup_archives import ARCHIVE_PASSWORD, publish_backup

    root = tmp_path / "disk"
    root.mkdir()
    destination = LocalDestination("disk", "app", root)
    keys = [publish_backup(destination, tmp_path / "work", date) for date in dates]
    monkeypatch.setenv("LIST_TEST_ARCHIVE_PASSWORD", ARCHIVE_PASSWORD)
    config = write_config(tmp_path, [{"name": "disk", "type": "local", "path": str(root)}],
                          password={"env": "LIST_TEST_ARCHIVE_PASSWORD"}, encryption="aes256")
    return config, sum((root / key).stat().st_size for key in keys)


def test_list_output_of_a_healthy_destination_is_laravel_backups_table(tmp_path, monkeypatch):
    from backup_ops.cli.list_command import destination_statuses, render_table
    from backup_ops.core.config import load_config
    from backup_ops.core.models import human_bytes

    config, used = real_backups(tmp_path, monkeypatch, datetime(2026, 11, 25, 2, tzinfo=UTC),
                                datetime(2026, 11, 26, 2, tzinfo=UTC))
    now = datetime(2026, 11, 27, 1, tzinfo=UTC)
    statuses = destination_statuses(load_config(config), now)
    assert render_table(statuses, now) == "\n".join([
        "+------+-------------+-----------+---------+--------------+---------------------+--------------+",
        "| Name | Destination | Reachable | Healthy | # of backups | Newest backup       | Used storage |",
        "+------+-------------+-----------+---------+--------------+---------------------+--------------+",
        f"| app  | disk        | yes       | yes     | 2            | 0.96 (23 hours ago) | {human_bytes(used):<12} |",
        "+------+-------------+-----------+---------+--------------+---------------------+--------------+",
        f"disk: {(tmp_path / 'disk').as_uri()}",
    ])
    assert [c.status.value for c in statuses[0].report.checks] == ["pass", "pass", "pass", "pass", "skipped"]


def test_list_names_each_failed_check_in_a_second_table_and_still_exits_0(tmp_path, capsys, monkeypatch):
    """laravel-backup's ``backup:list``: the "Unhealthy backup destinations" table, computed as the monitor does."""
    config, _ = real_backups(tmp_path, monkeypatch, datetime(2026, 11, 20, 2, tzinfo=UTC))  # days old by now
    assert main(["--config", str(config), "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert cells(next(line for line in lines if "| disk" in line))[3] == "no"
    start = lines.index("Unhealthy backup destinations")
    assert cells(lines[start + 2]) == ["Name", "Destination", "Failed check", "Description"]
    rows = [cells(line) for line in lines[start + 4:] if line.startswith("| ")]
    assert [row[:3] for row in rows] == [["app", "disk", "max_age_days"]]
    assert rows[0][3].startswith("The latest backup made on 2026-11-20 02:00:00 UTC is considered too old (")
    assert rows[0][3].endswith(" days; monitor.max_age_days is 1).")


def test_list_marks_damaged_archives_below_the_table(tmp_path, capsys):
    published_backups(tmp_path / "disk", {"2026-11-25-02-00-00.zip": 2048, "2026-11-26-02-00-00.zip": 1024})
    os.truncate(tmp_path / "disk" / "app" / "2026-11-26-02-00-00.zip", 100)  # the newest lost its tail
    config = write_config(tmp_path, [{"name": "disk", "type": "local", "path": str(tmp_path / "disk")}])

    assert main(["--config", str(config), "list"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert cells(lines[1]) == LIST_HEADER
    assert ["app", "disk", "newest_intact", "The newest backup app/2026-11-26-02-00-00.zip is damaged: size differs: "
            "100 bytes, but its receipt says 1024; it protects nothing."] in [cells(line) for line in lines]
    assert lines[-2:] == ["disk: DAMAGED app/2026-11-26-02-00-00.zip: size differs: 100 bytes, but its receipt "
                          "says 1024",
                          "disk: newest intact backup: app/2026-11-25-02-00-00.zip"]


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


def built_archive(tmp_path: Path) -> Path:
    """A small AES archive with password "pw", one file and one file recorded as skipped."""
    from backup_ops.core.archive import build_archive
    from backup_ops.core.config import FileSource
    from backup_ops.core.files import select_files
    from backup_ops.core.manifest import build_manifest

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("hello")
    os.mkfifo(src / "queue")
    target = tmp_path / "2026-11-26-02-00-00.zip"

    def manifest(members):
        return build_manifest(backup_name="app", created_at=datetime(2026, 11, 26, 2, tzinfo=UTC),
                              archive_name=target.name, run={"dag_id": "backup_daily", "run_id": "r1"},
                              dumps=[], members=members, encryption="aes256", tool_versions={})

    build_archive(target, dumps=[], files=select_files(FileSource(include=(src,), relative_path=src)),
                  password=b"pw", encryption="aes256", compression_level=6, make_manifest=manifest)
    return target


def run_verify(target: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {"PYTHONPATH": str(ROOT / "plugins"), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "backup_ops", "verify", str(target), *args], capture_output=True,
                          text=True, env={**base, **(env or {})}, stdin=subprocess.DEVNULL, check=False)


def test_verify_command_ok_and_wrong_password(tmp_path):
    target = built_archive(tmp_path)
    ok = run_verify(target, env={"BACKUP_ARCHIVE_PASSWORD": "pw"})
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout and "files: 1" in ok.stdout
    assert "skipped when the backup was taken: 1 (1 fifo)" in ok.stdout
    assert "queue: is a FIFO [fifo]" in ok.stdout
    bad = run_verify(target, env={"BACKUP_ARCHIVE_PASSWORD": "nope"})
    assert bad.returncode == 1
    assert "Wrong archive password" in bad.stderr


def test_verify_password_errors_name_the_environment_variable_actually_read(tmp_path):
    target = built_archive(tmp_path)
    wrong = run_verify(target, env={"BACKUP_ARCHIVE_PASSWORD": "nope"})
    assert wrong.stderr == (f"error: Wrong archive password for {target}: check the environment variable "
                            "BACKUP_ARCHIVE_PASSWORD (--password-env).\n")
    other = run_verify(target, "--password-env", "RESTORE_PW", env={"RESTORE_PW": "nope"})
    assert "check the environment variable RESTORE_PW (--password-env)." in other.stderr
    missing = run_verify(target)  # not set, and no terminal to ask in
    assert missing.returncode == 1
    assert missing.stderr == (f"error: Archive {target} is encrypted but no password was given: set the environment "
                              "variable BACKUP_ARCHIVE_PASSWORD (--password-env).\n")
    for result in (wrong, other, missing):
        assert "backup_archive_password variable" not in result.stderr


def test_verify_password_typed_at_the_prompt_is_named_as_such(tmp_path):
    target = built_archive(tmp_path)
    primary, replica = os.openpty()
    env = {"PYTHONPATH": str(ROOT / "plugins"), "PATH": "/usr/bin:/bin"}
    # A new session has no controlling terminal, so getpass prompts on stderr and reads the pty on stdin.
    proc = subprocess.Popen([sys.executable, "-m", "backup_ops", "verify", str(target)], stdin=replica,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    os.close(replica)
    try:
        prompt = b""
        deadline = time.monotonic() + 30
        while b"Archive password" not in prompt and time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stderr], [], [], 1)
            if ready:
                chunk = os.read(proc.stderr.fileno(), 4096)
                if not chunk:
                    break
                prompt += chunk
        assert b"Archive password" in prompt, prompt
        time.sleep(0.2)  # getpass flushes pending input when it turns echo off, right after the prompt
        os.write(primary, b"nope\n")
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
        os.close(primary)
    assert proc.returncode == 1
    assert f"error: Wrong archive password for {target}: check the password typed at the prompt." in err.decode()
