"""File selection: laravel-backup source.files semantics, streamed."""

from __future__ import annotations

import inspect
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from backup_ops.core import files as files_module
from backup_ops.core.config import FileSource, parse_config
from backup_ops.core.errors import ConfigError, FileSelectionError
from backup_ops.core.files import SelectedEntry, select_files
from backup_ops.core.models import SkippedFile

NOBODY = 65534


def make_tree(root: Path, spec: dict[str, Any]) -> None:
    """Create files (str/bytes values) and directories (dict values, {} for empty) below root."""
    root.mkdir(parents=True, exist_ok=True)
    for name, value in spec.items():
        path = root / name
        if isinstance(value, dict):
            make_tree(path, value)
        elif isinstance(value, bytes):
            path.write_bytes(value)
        else:
            path.write_text(value)


@pytest.fixture
def app(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    make_tree(root, {
        ".env": "SECRET=1",
        "artisan": "#!/usr/bin/env php",
        "app": {"Models": {"User.php": "<?php"}, "Http": {}},
        "storage": {
            "framework": {"cache": {"a": "1"}, "sessions": {"s1": "x"}},
            "logs": {"laravel.log": "log", ".gitignore": "*"},
        },
        "vendor": {"pkg": {"x.php": "<?php"}},
        "public": {"img": {"logo.png": b"\x89PNG"}},
    })
    return root


def names(entries: list[SelectedEntry]) -> list[str]:
    return [e.member_name for e in entries]


def select(source: FileSource, **kwargs: Any) -> list[SelectedEntry]:
    return [e for e in select_files(source, **kwargs) if isinstance(e, SelectedEntry)]


def skipped(source: FileSource, **kwargs: Any) -> list[tuple[str, str, str]]:
    return [(s.name, s.reason, s.detail) for s in select_files(source, **kwargs) if isinstance(s, SkippedFile)]


class TestWalk:
    def test_relative_path_sorted_depth_first_with_dotfiles_and_empty_dirs(self, app: Path) -> None:
        entries = select(FileSource(include=(app,), relative_path=app))
        assert names(entries) == [
            ".env", "app/", "app/Http/", "app/Models/", "app/Models/User.php", "artisan",
            "public/", "public/img/", "public/img/logo.png",
            "storage/", "storage/framework/", "storage/framework/cache/", "storage/framework/cache/a",
            "storage/framework/sessions/", "storage/framework/sessions/s1",
            "storage/logs/", "storage/logs/.gitignore", "storage/logs/laravel.log",
            "vendor/", "vendor/pkg/", "vendor/pkg/x.php",
        ]

    def test_entries_carry_size_mtime_mode(self, app: Path) -> None:
        os.chmod(app / "artisan", 0o750)
        os.utime(app / "artisan", (1_600_000_000, 1_600_000_000))
        entry = next(e for e in select(FileSource(include=(app,), relative_path=app)) if e.arcname == "artisan")
        assert (entry.path, entry.is_dir, entry.size, entry.mtime, entry.mode) == (
            app / "artisan", False, len("#!/usr/bin/env php"), 1_600_000_000, 0o750)
        directory = next(e for e in select(FileSource(include=(app,), relative_path=app)) if e.arcname == "app")
        assert directory.is_dir and directory.size == 0 and directory.member_name == "app/"

    def test_entries_carry_the_identity_of_the_file_and_of_its_directory(self, app: Path, tmp_path: Path) -> None:
        (app / "storage/current.log").symlink_to(app / "storage/logs/laravel.log")
        entries = {e.arcname: e for e in select(FileSource(include=(app, tmp_path / "app/.env"), relative_path=app,
                                                            follow_links=True))}
        user, logs = app / "app/Models/User.php", app / "storage/logs"
        assert entries["app/Models/User.php"].file_id == (user.stat().st_dev, user.stat().st_ino)
        parent = (app / "app/Models").stat()
        assert entries["app/Models/User.php"].parent_id == (parent.st_dev, parent.st_ino)
        assert entries[".env"].parent_id == (app.stat().st_dev, app.stat().st_ino)
        linked = entries["storage/current.log"]
        assert linked.via_link and linked.file_id == ((logs / "laravel.log").stat().st_dev,
                                                      (logs / "laravel.log").stat().st_ino)
        assert not entries["app/Models/User.php"].via_link

    def test_entries_round_trip_through_the_listing_format(self, app: Path) -> None:
        for entry in select(FileSource(include=(app,), relative_path=app, follow_links=True)):
            assert SelectedEntry.from_dict(json.loads(json.dumps(entry.to_dict()))) == entry
        old_line = {"path": str(app / ".env"), "arcname": ".env", "is_dir": False, "size": 8, "mtime": 1.0, "mode": 420}
        assert SelectedEntry.from_dict(old_line).file_id is None  # a listing written before identities existed

    def test_without_relative_path_names_are_absolute_minus_slash(self, app: Path) -> None:
        entries = select(FileSource(include=(app / "app",)))
        root = str(app).lstrip("/")
        assert names(entries) == [f"{root}/app/", f"{root}/app/Http/", f"{root}/app/Models/",
                                  f"{root}/app/Models/User.php"]

    def test_relative_path_keeps_include_directory_name(self, app: Path) -> None:
        entries = select(FileSource(include=(app / "app",), relative_path=app))
        assert names(entries)[0] == "app/"

    def test_include_outside_relative_path_fails_before_yielding(self, app: Path, tmp_path: Path) -> None:
        other = tmp_path / "other"
        make_tree(other, {"f": "x"})
        with pytest.raises(FileSelectionError, match=r"outside source\.files\.relative_path"):
            next(select_files(FileSource(include=(app, other), relative_path=app)))

    def test_order_is_deterministic(self, app: Path) -> None:
        source = FileSource(include=(app,), relative_path=app)
        assert names(select(source)) == names(select(source))

    def test_is_a_lazy_generator(self, app: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        listed: list[str] = []
        real_scandir = os.scandir

        def counting_scandir(path: Any) -> Any:
            listed.append(str(path))
            return real_scandir(path)

        monkeypatch.setattr(files_module.os, "scandir", counting_scandir)
        stream = select_files(FileSource(include=(app,), relative_path=app))
        assert inspect.isgenerator(select_files(FileSource(include=(app,))))
        assert listed == []
        first: SelectedEntry = next(stream)
        assert first.arcname == ".env"
        assert listed == [str(app)]  # only the root listing so far: nothing is materialised ahead

    def test_overlapping_includes_yield_each_entry_once(self, app: Path) -> None:
        source = FileSource(include=(app / "storage", app, app / "storage/logs/laravel.log", app / "storage"),
                            relative_path=app)
        result = names(select(source))
        assert len(result) == len(set(result))
        assert set(result) == set(names(select(FileSource(include=(app,), relative_path=app))))

    def test_included_file_is_yielded_as_is_even_when_excluded(self, app: Path) -> None:
        env = app / ".env"
        entries = select(FileSource(include=(env,), exclude=(env,), relative_path=app))
        assert names(entries) == [".env"]

    def test_missing_include_logs_a_warning_and_continues(self, app: Path, caplog: pytest.LogCaptureFixture) -> None:
        missing = app / "nope"
        with caplog.at_level(logging.WARNING, logger="backup_ops.core.files"):
            entries = select(FileSource(include=(missing, app / "artisan"), relative_path=app))
        assert names(entries) == ["artisan"]
        assert f"Include path {missing} does not exist, skipping." in caplog.messages

    def test_name_restore_would_refuse_is_skipped_and_recorded(
        self, app: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        (app / "app" / "..\\..\\evil").write_text("x")
        (app / "app" / "back\\slash").write_text("fine on POSIX")
        source = FileSource(include=(app / "app",), relative_path=app)
        with caplog.at_level(logging.WARNING, logger="backup_ops.core.files"):
            result = names(select(source))
        assert "app/back\\slash" in result
        assert not any("evil" in n for n in result)
        assert any("evil" in m and "restore refuses" in m for m in caplog.messages)
        assert skipped(source) == [("app/..\\..\\evil", "bad_name", "has a '..' component with backslash used as "
                                    "separator (path traversal), which restore refuses")]

    def test_non_utf8_name_is_skipped_and_recorded_under_a_printable_name(
        self, app: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        with open(os.path.join(os.fsencode(app / "app"), b"bad\xff"), "w") as f:
            f.write("x")
        os.mkdir(os.path.join(os.fsencode(app / "app"), b"dir\xe9"))
        with open(os.path.join(os.fsencode(app / "app"), b"dir\xe9", b"inside"), "w") as f:
            f.write("x")
        source = FileSource(include=(app / "app",), relative_path=app)
        with caplog.at_level(logging.WARNING, logger="backup_ops.core.files"):
            result = names(select(source))
        assert result == ["app/", "app/Http/", "app/Models/", "app/Models/User.php"]
        assert any("not valid UTF-8" in m for m in caplog.messages)
        assert skipped(source) == [
            ("app/bad\\xff", "bad_name", "has a name that is not valid UTF-8, which restore refuses"),
            ("app/dir\\xe9/", "bad_name", "has a name that is not valid UTF-8, which restore refuses; nothing below "
                                         "it was backed up"),
        ]
        json.dumps([s.to_dict() for s in select_files(source) if isinstance(s, SkippedFile)]).encode("utf-8")

    def test_bad_names_fail_the_selection_when_fail_on_lists_them(self, app: Path) -> None:
        with open(os.path.join(os.fsencode(app / "app"), b"bad\xff"), "w") as f:
            f.write("x")
        stream = select_files(FileSource(include=(app / "app",), relative_path=app, fail_on=("bad_name",)))
        with pytest.raises(FileSelectionError) as info:
            list(stream)
        assert str(info.value).startswith(f"File {app}/app/bad\\xff has a name that is not valid UTF-8, which "
                                          "restore refuses, and backup.source.files.fail_on lists 'bad_name': "
                                          "rename it or exclude it")


class TestExcludes:
    def test_directory_exclude_removes_everything_below(self, app: Path) -> None:
        result = names(select(FileSource(include=(app,), exclude=(app / "vendor", app / "storage/framework"),
                                         relative_path=app)))
        assert not any(n.startswith(("vendor", "storage/framework")) for n in result)
        assert "storage/logs/laravel.log" in result and "storage/" in result

    def test_file_exclude(self, app: Path) -> None:
        result = names(select(FileSource(include=(app,), exclude=(app / ".env",), relative_path=app)))
        assert ".env" not in result and "artisan" in result

    def test_glob_exclude_matches_hidden_entries(self, app: Path) -> None:
        result = names(select(FileSource(include=(app,), exclude=(app / "storage/logs/*",), relative_path=app)))
        assert "storage/logs/" in result
        assert "storage/logs/laravel.log" not in result and "storage/logs/.gitignore" not in result

    def test_glob_exclude_across_directories(self, app: Path) -> None:
        result = names(select(FileSource(include=(app,), exclude=(app / "storage/*/cache",), relative_path=app)))
        assert "storage/framework/cache/" not in result and "storage/framework/sessions/s1" in result

    def test_exclude_is_resolved_through_links(self, app: Path, tmp_path: Path) -> None:
        alias = tmp_path / "vendor-alias"
        alias.symlink_to(app / "vendor")
        result = names(select(FileSource(include=(app,), exclude=(alias,), relative_path=app)))
        assert not any(n.startswith("vendor") for n in result)

    def test_included_directory_below_an_exclude_is_excluded(self, app: Path) -> None:
        result = names(select(FileSource(include=(app / "storage/framework/cache",),
                                         exclude=(app / "storage",), relative_path=app)))
        assert result == []

    def test_always_exclude_applies_to_walks_and_included_files(self, app: Path) -> None:
        staging = app / "storage/backup-staging"
        make_tree(staging, {"partial.zip": "zip"})
        source = FileSource(include=(app, staging / "partial.zip"), relative_path=app)
        result = names(select(source, always_exclude=[staging]))
        assert not any("backup-staging" in n for n in result)
        assert "storage/logs/laravel.log" in result

    def test_always_exclude_of_an_ancestor_excludes_the_include(self, app: Path) -> None:
        assert select(FileSource(include=(app / "storage",), relative_path=app), always_exclude=[app]) == []


class TestLinks:
    @pytest.fixture
    def linked(self, app: Path, tmp_path: Path) -> Path:
        outside = tmp_path / "shared"
        make_tree(outside, {"uploads": {"u1.jpg": b"jpg"}})
        (app / "public" / "storage").symlink_to(outside / "uploads")
        (app / "config-link").symlink_to(app / "artisan")
        (app / "broken").symlink_to(app / "does-not-exist")
        (app / "app" / "Models" / "loop").symlink_to(app / "app")
        return app

    def test_links_are_skipped_and_logged_once_each(self, linked: Path, caplog: pytest.LogCaptureFixture) -> None:
        with caplog.at_level(logging.INFO, logger="backup_ops.core.files"):
            result = names(select(FileSource(include=(linked,), relative_path=linked)))
        assert not any(n.startswith(("public/storage", "config-link", "broken", "app/Models/loop")) for n in result)
        link_messages = [m for m in caplog.messages if m.startswith("Skipping symbolic link")]
        assert len(link_messages) == 4
        assert len(set(link_messages)) == 4

    def test_follow_links_stores_targets_under_link_names_and_stops_loops(
        self, linked: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        with caplog.at_level(logging.INFO, logger="backup_ops.core.files"):
            entries = select(FileSource(include=(linked,), follow_links=True, relative_path=linked))
        result = names(entries)
        assert "public/storage/" in result and "public/storage/u1.jpg" in result
        assert "config-link" in result
        assert next(e for e in entries if e.arcname == "config-link").size == len("#!/usr/bin/env php")
        assert "app/Models/loop/" not in result  # points at an ancestor: would never end
        assert len(result) == len(set(result))
        assert any("broken symbolic link" in m for m in caplog.messages)
        assert any("link loop" in m for m in caplog.messages)

    def test_mutual_link_loop_terminates(self, tmp_path: Path) -> None:
        root = tmp_path / "root"
        make_tree(root, {"a": {"f": "1"}, "b": {"g": "2"}})
        (root / "a" / "to-b").symlink_to(root / "b")
        (root / "b" / "to-a").symlink_to(root / "a")
        result = names(select(FileSource(include=(root,), follow_links=True, relative_path=root)))
        assert result == ["a/", "a/f", "a/to-b/", "a/to-b/g", "b/", "b/g"]

    def test_include_that_is_a_link_is_followed(self, app: Path, tmp_path: Path) -> None:
        link = tmp_path / "current"
        link.symlink_to(app / "app")
        result = names(select(FileSource(include=(link,), relative_path=tmp_path)))
        assert result == ["current/", "current/Http/", "current/Models/", "current/Models/User.php"]


class TestSpecialFiles:
    @pytest.fixture
    def specials(self, tmp_path: Path) -> Iterator[tuple[Path, set[str]]]:
        root = tmp_path / "s"
        make_tree(root, {"regular": "x"})
        os.mkfifo(root / "fifo")
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(root / "sock"))
        reasons = {"fifo", "socket"}
        try:
            os.mknod(root / "null", stat.S_IFCHR | 0o600, os.makedev(1, 3))
            reasons.add("device")
        except PermissionError:
            pass  # not root or no CAP_MKNOD: FIFO and socket still cover the code path
        try:
            yield root, reasons
        finally:
            sock.close()

    def test_fifo_socket_and_device_are_skipped_recorded_and_logged(
        self, specials: tuple[Path, set[str]], caplog: pytest.LogCaptureFixture
    ) -> None:
        root, reasons = specials
        source = FileSource(include=(root,), relative_path=root)
        with caplog.at_level(logging.INFO, logger="backup_ops.core.files"):
            result = names(select(source))
        assert result == ["regular"]
        expected = {("fifo", "fifo", "is a FIFO"), ("sock", "socket", "is a socket"),
                    ("null", "device", "is a device node")}
        assert set(skipped(source)) == {e for e in expected if e[1] in reasons}
        for name in ("fifo", "sock"):
            assert any(m.startswith(f"Skipped: {root / name} is a ") for m in caplog.messages), name
        summary = next(m for m in caplog.messages if m.startswith("Selected "))
        assert "1 fifo" in summary and "1 socket" in summary

    def test_a_reason_in_fail_on_fails_after_the_walk_naming_the_files(
        self, specials: tuple[Path, set[str]]
    ) -> None:
        root, _ = specials
        os.mkfifo(root / "fifo2")
        stream = select_files(FileSource(include=(root,), relative_path=root, fail_on=("fifo",)))
        with pytest.raises(FileSelectionError) as info:
            list(stream)
        assert str(info.value) == (
            f"File {root / 'fifo'} is a FIFO (and 1 more: {root / 'fifo2'}), and backup.source.files.fail_on lists "
            "'fifo': exclude it, or remove 'fifo' from backup.source.files.fail_on to back up without it."
        )
        assert info.value.retryable is False


class TestFailOnConfig:
    @staticmethod
    def files_config(**files: Any) -> FileSource:
        return parse_config({"backup": {"name": "app", "source": {"files": {"include": ["/srv"], **files}},
                                        "destination": {"destinations": [{"name": "d", "type": "local",
                                                                          "path": "/b"}]}}}).backup.files

    def test_default_fails_on_unreadable_files_only(self) -> None:
        assert self.files_config().fail_on == ("unreadable",)
        assert FileSource().fail_on == ("unreadable",)

    def test_a_list_of_reasons_and_the_empty_list(self) -> None:
        assert self.files_config(fail_on=["unreadable", "changed", "vanished"]).fail_on == (
            "unreadable", "changed", "vanished")
        assert self.files_config(fail_on=[]).fail_on == ()

    @pytest.mark.parametrize(("value", "message"), [
        (["unreadable", "typo"], "backup.source.files.fail_on[1] must be one of"),
        ("unreadable", "backup.source.files.fail_on must be a list"),
        (["unreadable_directory"], "set by ignore_unreadable_directories"),
    ])
    def test_bad_values_are_refused_naming_the_key(self, value: Any, message: str) -> None:
        with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
            self.files_config(fail_on=value)


# ---------------------------------------------------------------------------- unreadable paths
#
# Tests run as root, and root reads anything whatever its mode. So the selection runs in a
# forked child that drops to uid/gid nobody, against a tree nobody can reach, making the
# permission errors real rather than mocked.


@contextmanager
def world_reachable_tmp() -> Iterator[Path]:
    """A temporary directory below /tmp that uid nobody can reach (pytest's tmp_path is 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="backup-ops-perm-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for dirpath, dirnames, _ in os.walk(path):
            for d in dirnames:
                os.chmod(os.path.join(dirpath, d), 0o755)
        shutil.rmtree(path)


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    with world_reachable_tmp() as path:
        yield path


def run_unprivileged(fn: Callable[[], Any]) -> dict[str, Any]:
    """Run ``fn`` in a child process as nobody; returns {"value": ...} or {"error": type, "message": ...}."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            result: dict[str, Any] = {"value": fn()}
        except BaseException as exc:
            result = {"error": type(exc).__name__, "message": str(exc)}
        try:
            os.write(write_end, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 65536):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks))  # type: ignore[no-any-return]


def selection_as_nobody(source: FileSource) -> dict[str, Any]:
    def run() -> dict[str, Any]:
        messages: list[str] = []
        log = logging.getLogger("test.unreadable")
        log.propagate = False
        log.setLevel(logging.INFO)
        handler = logging.Handler()
        handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
        log.addHandler(handler)
        stream = list(select_files(source, log=log))
        return {"names": names([e for e in stream if isinstance(e, SelectedEntry)]), "messages": messages,
                "skipped": [[e.name, e.reason, e.detail] for e in stream if isinstance(e, SkippedFile)]}

    return run_unprivileged(run)


class TestUnreadable:
    @pytest.fixture
    def tree(self, shared_tmp: Path) -> Path:
        root = shared_tmp / "app"
        make_tree(root, {"a.txt": "a", "locked": {"secret.txt": "s"}, "z.txt": "z"})
        (root / "locked").chmod(0o000)
        return root

    def test_unreadable_directory_fails_with_a_clear_error(self, tree: Path) -> None:
        result = selection_as_nobody(FileSource(include=(tree,), relative_path=tree))
        assert result.get("error") == "FileSelectionError", result
        assert f"Directory {tree / 'locked'} is not readable" in result["message"]
        assert "ignore_unreadable_directories" in result["message"]

    def test_unreadable_directory_is_skipped_when_ignored(self, tree: Path) -> None:
        result = selection_as_nobody(FileSource(include=(tree,), relative_path=tree,
                                                ignore_unreadable_directories=True))
        assert result["value"]["names"] == ["a.txt", "z.txt"]
        detail = "is a directory this process (uid 65534) cannot read; nothing below it was backed up"
        assert result["value"]["skipped"] == [["locked/", "unreadable_directory", detail]]
        assert f"Skipped: {tree / 'locked'} {detail} [unreadable_directory]." in result["value"]["messages"]

    def test_searchable_but_unlistable_directory_counts_as_unreadable(self, tree: Path) -> None:
        (tree / "locked").chmod(0o311)  # x without r: cannot list
        result = selection_as_nobody(FileSource(include=(tree,), relative_path=tree))
        assert result.get("error") == "FileSelectionError", result

    def test_unreadable_file_fails_even_when_ignoring_directories(self, tree: Path) -> None:
        (tree / "locked").chmod(0o755)
        (tree / "locked" / "secret.txt").chmod(0o000)
        result = selection_as_nobody(FileSource(include=(tree,), relative_path=tree,
                                                ignore_unreadable_directories=True))
        assert result.get("error") == "FileSelectionError", result
        assert f"File {tree / 'locked' / 'secret.txt'} is not readable" in result["message"]

    def test_unreadable_file_message_names_the_fail_on_key(self, tree: Path) -> None:
        (tree / "locked").chmod(0o755)
        (tree / "locked" / "secret.txt").chmod(0o000)
        result = selection_as_nobody(FileSource(include=(tree,), relative_path=tree))
        assert result["message"] == (
            f"File {tree / 'locked' / 'secret.txt'} is not readable by this process (uid 65534), and "
            "backup.source.files.fail_on lists 'unreadable': fix its permissions or exclude it, or remove "
            "'unreadable' from backup.source.files.fail_on to back up without it."
        )

    def test_unreadable_file_is_recorded_when_fail_on_allows_it(self, tree: Path) -> None:
        (tree / "locked").chmod(0o755)
        (tree / "locked" / "secret.txt").chmod(0o000)
        result = selection_as_nobody(FileSource(include=(tree,), relative_path=tree, fail_on=()))
        assert result["value"]["names"] == ["a.txt", "locked/", "z.txt"]
        assert result["value"]["skipped"] == [
            ["locked/secret.txt", "unreadable", "is not readable by this process (uid 65534)"]]
