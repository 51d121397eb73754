"""LocalDestination on real files: exclusive receipts, name clashes, failed copies, integrity, leftovers."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from backup_ops.adapters.destinations.base import ArchiveNameClash, receipt_bytes
from backup_ops.adapters.destinations.local import LocalDestination
from backup_ops.core.errors import DestinationError, VerificationError
from backup_ops.core.models import Integrity, Receipt

ROOT = Path(__file__).resolve().parents[2]
APP = "app"
NAME = "2026-11-26-02-00-00.zip"


def staged(tmp_path: Path, content: bytes, name: str = NAME) -> tuple[Path, Receipt]:
    """A staged archive with the receipt the backup task writes for it."""
    folder = tmp_path / f"staging-{hashlib.sha256(content).hexdigest()[:8]}"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    return path, Receipt(archive=name, size=len(content), sha256=hashlib.sha256(content).hexdigest(),
                         created_at="2026-11-26T02:00:00+00:00")


def files_below(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def dest(tmp_path: Path) -> LocalDestination:
    root = tmp_path / "backups"
    root.mkdir()
    return LocalDestination("usb", APP, root)


class TestNameClash:
    def test_another_runs_receipt_is_never_overwritten(self, dest: LocalDestination, tmp_path: Path) -> None:
        # Run A picked the same second and is copying: its receipt is there, its archive not yet.
        _, theirs = staged(tmp_path, b"run A's archive")
        (dest.root / APP).mkdir()
        (dest.root / APP / f"{NAME}.json").write_bytes(receipt_bytes(theirs))
        before = files_below(dest.root)
        source, ours = staged(tmp_path, b"run B's archive, other bytes")

        assert dest.name_taken(NAME)
        with pytest.raises(ArchiveNameClash) as caught:
            dest.publish(source, NAME, ours)

        assert caught.value.retryable is False
        assert str(caught.value).startswith(
            f"Destination usb: name clash: {dest.location(f'{APP}/{NAME}.json')} already exists with different "
            "content (another run's receipt, not this run's archive of 28 bytes with sha256 ")
        assert "nothing was written" in str(caught.value)
        assert files_below(dest.root) == before  # A's receipt intact, no archive, no partial file

    def test_another_runs_archive_is_a_clash_and_the_same_bytes_a_no_op(self, dest: LocalDestination,
                                                                      tmp_path: Path) -> None:
        source, receipt = staged(tmp_path, b"the first run's archive")
        first = dest.publish(source, NAME, receipt)
        after_first = files_below(dest.root)

        again = dest.publish(source, NAME, receipt)  # a task retry
        assert (first.already_present, again.already_present) == (False, True)
        assert files_below(dest.root) == after_first

        other, other_receipt = staged(tmp_path, b"a second run in the same second")
        with pytest.raises(ArchiveNameClash, match="another run's archive.*nothing was written"):
            dest.publish(other, NAME, other_receipt)
        assert files_below(dest.root) == after_first

    def test_a_retry_after_a_killed_copy_reuses_its_own_receipt(self, dest: LocalDestination, tmp_path: Path) -> None:
        source, receipt = staged(tmp_path, b"archive bytes")
        (dest.root / APP).mkdir()
        (dest.root / APP / f"{NAME}.json").write_bytes(receipt_bytes(receipt))  # the killed attempt's receipt

        published = dest.publish(source, NAME, receipt)

        assert not published.already_present
        assert files_below(dest.root) == {f"{APP}/{NAME}": b"archive bytes",
                                          f"{APP}/{NAME}.json": receipt_bytes(receipt)}

    def test_a_missing_receipt_beside_our_archive_is_put_back(self, dest: LocalDestination, tmp_path: Path) -> None:
        source, receipt = staged(tmp_path, b"archive bytes")
        dest.publish(source, NAME, receipt)
        (dest.root / APP / f"{NAME}.json").unlink()
        assert dest.publish(source, NAME, receipt).already_present
        assert dest.read_receipt(f"{APP}/{NAME}") == receipt

    def test_name_taken(self, dest: LocalDestination, tmp_path: Path) -> None:
        assert not dest.name_taken(NAME)
        source, receipt = staged(tmp_path, b"x")
        dest.publish(source, NAME, receipt)
        assert dest.name_taken(NAME)
        (dest.root / APP / NAME).unlink()
        assert dest.name_taken(NAME)  # the receipt alone holds the name
        assert not dest.name_taken("2026-11-26-02-00-01.zip")


@pytest.fixture
def other_file_system(tmp_path: Path) -> Iterator[Path]:
    """A folder on another file system than tmp_path (/dev/shm), where a hard link cannot reach: publish copies."""
    folder = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="backup-ops-staging-"))
    assert os.stat(folder).st_dev != os.stat(tmp_path).st_dev, "/dev/shm must be its own file system"
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


class TestPublishByLinkOrCopy:
    def test_on_stagings_file_system_the_verified_file_is_hard_linked(self, dest: LocalDestination,
                                                                     tmp_path: Path) -> None:
        source, receipt = staged(tmp_path, os.urandom(1 << 16))
        published = dest.publish(source, NAME, receipt)
        final = dest.root / published.path
        assert os.stat(final).st_ino == os.stat(source).st_ino and published.linked_from == str(source)
        assert (published.sha256, published.size) == (receipt.sha256, receipt.size)
        dest.verify_published(published)
        assert sorted(files_below(dest.root)) == [f"{APP}/{NAME}", f"{APP}/{NAME}.json"]
        source.unlink()  # the run's teardown removes staging: the published archive stays
        assert dest.check_integrity(published.path).state is Integrity.INTACT

    def test_a_linked_archive_replaced_before_its_check_fails_it(self, dest: LocalDestination, tmp_path: Path) -> None:
        source, receipt = staged(tmp_path, b"verified bytes")
        published = dest.publish(source, NAME, receipt)
        final = dest.root / published.path
        final.unlink()
        final.write_bytes(b"verified bytes")  # same bytes, but not the file that was verified
        with pytest.raises(VerificationError, match=r"is not the verified staged archive"):
            dest.verify_published(published)

    def test_on_another_file_system_it_is_copied_and_read_back(self, dest: LocalDestination,
                                                               other_file_system: Path) -> None:
        source, receipt = staged(other_file_system, os.urandom(1 << 16))
        published = dest.publish(source, NAME, receipt)
        final = dest.root / published.path
        assert published.linked_from is None and os.stat(final).st_ino != os.stat(source).st_ino
        assert final.read_bytes() == source.read_bytes()
        dest.verify_published(published)
        final.write_bytes(b"x" * receipt.size)
        with pytest.raises(VerificationError, match=r"read-back of .* does not match what was written"):
            dest.verify_published(published)

    def test_a_staged_archive_that_changed_size_is_not_linked(self, dest: LocalDestination, tmp_path: Path) -> None:
        source, receipt = staged(tmp_path, b"0123456789")
        source.write_bytes(b"0123")
        with pytest.raises(VerificationError, match=r"is 4 bytes, but 10 were built and verified"):
            dest.publish(source, NAME, receipt)
        assert not (dest.root / APP / NAME).exists()


class TestFailedPublish:
    def test_a_copy_that_fails_midway_leaves_neither_archive_nor_receipt(self, dest: LocalDestination,
                                                                         other_file_system: Path) -> None:
        # The receipt (small) is written, then the archive copy hits the file size limit (EFBIG):
        # the same path as a disk filling up mid-copy. Run in a child so the limit binds only there.
        # The staged archive is on another file system, so publish copies instead of linking.
        source, receipt = staged(other_file_system, os.urandom(1 << 20))
        script = (
            "import json, resource, signal, sys\n"
            "from pathlib import Path\n"
            "from backup_ops.adapters.destinations.local import LocalDestination\n"
            "from backup_ops.core.models import Receipt\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))\n"
            "receipt = Receipt(**json.loads(sys.argv[3]))\n"
            "dest = LocalDestination('usb', 'app', Path(sys.argv[1]))\n"
            "try:\n"
            "    dest.publish(Path(sys.argv[2]), receipt.archive, receipt)\n"
            "except Exception as exc:\n"
            "    print(f'{type(exc).__name__}: {exc}')\n"
            "    sys.exit(3)\n"
        )
        child = subprocess.run([sys.executable, "-c", script, str(dest.root), str(source), json.dumps(asdict(receipt))],
                               capture_output=True, text=True, env={"PYTHONPATH": str(ROOT / "plugins")}, check=False)

        assert child.returncode == 3, child.stdout + child.stderr
        assert child.stdout.startswith(f"DestinationError: Destination usb: writing {dest.root / APP / NAME} failed: "
                                       "File too large")
        assert files_below(dest.root) == {}
        assert not dest.name_taken(NAME)


class TestIntegrity:
    def publish(self, dest: LocalDestination, tmp_path: Path, content: bytes) -> str:
        source, receipt = staged(tmp_path, content)
        return dest.publish(source, NAME, receipt).path

    def test_intact(self, dest: LocalDestination, tmp_path: Path) -> None:
        check = dest.check_integrity(self.publish(dest, tmp_path, b"good bytes"))
        assert (check.state, check.detail) == (Integrity.INTACT, "size and SHA-256 (hashed from the file) match "
                                                                 "the receipt")

    def test_truncated(self, dest: LocalDestination, tmp_path: Path) -> None:
        path = self.publish(dest, tmp_path, b"0123456789")
        os.truncate(dest.root / path, 4)
        check = dest.check_integrity(path)
        assert check.damaged and check.detail == "size differs: 4 bytes, but its receipt says 10"

    def test_same_size_other_bytes(self, dest: LocalDestination, tmp_path: Path) -> None:
        path = self.publish(dest, tmp_path, b"0123456789")
        (dest.root / path).write_bytes(b"9876543210")
        check = dest.check_integrity(path)
        assert check.damaged and check.detail.startswith("sha256 differs: hashed from the file ")

    def test_without_a_usable_receipt_it_is_unverified(self, dest: LocalDestination, tmp_path: Path) -> None:
        path = self.publish(dest, tmp_path, b"laravel-backup era")
        receipt = dest.root / f"{path}.json"
        receipt.write_text("{not json")
        assert dest.check_integrity(path).state is Integrity.UNVERIFIED
        receipt.unlink()
        check = dest.check_integrity(path)
        assert check.state is Integrity.UNVERIFIED and check.detail.startswith("no receipt beside it")


class TestLeftovers:
    def test_old_orphan_receipts_and_partial_copies_are_found_and_removed(self, dest: LocalDestination,
                                                                          tmp_path: Path) -> None:
        folder = dest.root / APP
        folder.mkdir()
        old = (datetime.now(UTC) - timedelta(days=2)).timestamp()
        files = {
            "2026-11-20-02-00-00.zip.json": old,            # orphan, old: removed
            "2026-11-21-02-00-00.zip.json": None,           # orphan, fresh (a publish in flight): kept
            "2026-11-22-02-00-00.zip": old,                 # an archive ...
            "2026-11-22-02-00-00.zip.json": old,            # ... and its receipt: kept
            ".2026-11-23-02-00-00.zip.0badc0de.partial": old,  # a killed copy: removed
            "notes.json": old,                              # not a receipt: never touched
        }
        for name, mtime in files.items():
            (folder / name).write_bytes(b"x")
            if mtime is not None:
                os.utime(folder / name, (mtime, mtime))
        cutoff = datetime.now(UTC) - timedelta(days=1)

        found = dest.find_leftovers(cutoff)

        assert sorted((lo.kind, lo.path) for lo in found) == [
            ("orphan receipt", f"{APP}/2026-11-20-02-00-00.zip.json"),
            ("partial copy", f"{APP}/.2026-11-23-02-00-00.zip.0badc0de.partial"),
        ]
        (folder / "2026-11-20-02-00-00.zip").write_bytes(b"published meanwhile")  # its archive arrives after all
        for leftover in found:
            dest.remove_leftover(leftover)
        assert sorted(p.name for p in folder.iterdir()) == sorted(
            [*(n for n in files if not n.endswith(".partial")), "2026-11-20-02-00-00.zip"])


class TestPermanentErrors:
    def test_a_missing_directory_is_not_retryable(self, tmp_path: Path) -> None:
        with pytest.raises(DestinationError, match="does not exist") as caught:
            LocalDestination("usb", APP, tmp_path / "not-mounted").check_reachable()
        assert caught.value.retryable is False
