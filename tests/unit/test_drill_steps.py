"""The drill's bookkeeping for an archive copy on a worker: when a copy is taken without a new download.

A phase of ``restore_drill`` takes the copy an earlier phase left on its worker only when the marker
beside it proves it is that file, unchanged (device, inode, size, mtime, ctime) and, once verify has
proved a sha256, that it is that sha256; everything else means fetching it again. The teardown says
on which other workers a copy stayed, from what each phase reported.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest
import pyzipper

from backup_ops.airflow.drill_steps import copies_left_elsewhere, present_copy, stored_encryption, write_marker

KEY = "app/2026-11-26-02-00-00.zip"
DATA = b"PK fake archive bytes " * 100


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    folder = tmp_path / "restore_drill__run"
    folder.mkdir()
    (folder / "archive.zip").write_bytes(DATA)
    return folder


def test_a_copy_with_its_marker_is_taken_without_reading_it(workdir: Path) -> None:
    write_marker(workdir, KEY, workdir / "archive.zip", sha256=None)
    assert present_copy(workdir, KEY, len(DATA), None) == workdir / "archive.zip"
    # A marker is believed without a read: one claiming another sha256 for these very bytes is taken as proof.
    claimed = "0" * 64
    write_marker(workdir, KEY, workdir / "archive.zip", sha256=claimed)
    assert present_copy(workdir, KEY, len(DATA), claimed) == workdir / "archive.zip"


def test_a_copy_proved_on_another_worker_is_hashed_once_here(workdir: Path) -> None:
    real = hashlib.sha256(DATA).hexdigest()
    write_marker(workdir, KEY, workdir / "archive.zip", sha256=None)  # fetched here, verified elsewhere
    assert present_copy(workdir, KEY, len(DATA), real) == workdir / "archive.zip"
    assert json.loads((workdir / "archive.zip.fetched.json").read_text())["sha256"] == real  # next time: no read
    write_marker(workdir, KEY, workdir / "archive.zip", sha256=None)
    assert present_copy(workdir, KEY, len(DATA), hashlib.sha256(b"other").hexdigest()) is None


@pytest.mark.parametrize("change", ["no marker", "another archive", "replaced", "rewritten in place",
                                    "truncated", "listed at another size", "a broken marker"])
def test_anything_but_the_marked_file_is_fetched_again(workdir: Path, change: str) -> None:
    copy = workdir / "archive.zip"
    write_marker(workdir, KEY, copy, sha256=None)
    size = len(DATA)
    if change == "no marker":
        (workdir / "archive.zip.fetched.json").unlink()
    elif change == "another archive":
        write_marker(workdir, "app/2026-11-25-02-00-00.zip", copy, sha256=None)
    elif change == "replaced":  # same bytes, same times, another file (inode)
        info = copy.stat()
        replacement = workdir / "new"
        replacement.write_bytes(DATA)
        os.utime(replacement, ns=(info.st_atime_ns, info.st_mtime_ns))
        replacement.replace(copy)
    elif change == "rewritten in place":  # same size, mtime put back: the ctime still tells
        info = copy.stat()
        with open(copy, "r+b") as out:
            out.write(b"X")
        os.utime(copy, ns=(info.st_atime_ns, info.st_mtime_ns))
    elif change == "truncated":
        os.truncate(copy, size // 2)
    elif change == "listed at another size":
        size += 1
    elif change == "a broken marker":
        (workdir / "archive.zip.fetched.json").write_text("{not json")
    assert present_copy(workdir, KEY, size, None) is None


def test_no_copy_at_all(tmp_path: Path) -> None:
    assert present_copy(tmp_path / "restore_drill__nothing", KEY, 10, None) is None


def test_the_stored_encryption_comes_from_the_zip_directory(tmp_path: Path) -> None:
    plain, encrypted, broken = tmp_path / "plain.zip", tmp_path / "aes.zip", tmp_path / "broken.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("manifest.json", b"{}")
    with pyzipper.AESZipFile(encrypted, "w", encryption=pyzipper.WZ_AES) as zf:
        zf.setpassword(b"pw")
        zf.writestr("manifest.json", b"{}")
    broken.write_bytes(b"not a zip")
    assert (stored_encryption(plain), stored_encryption(encrypted), stored_encryption(broken)) == \
        ("none", "encrypted", None)


def test_the_teardown_names_the_other_workers_whose_last_phase_kept_a_copy() -> None:
    phases = {
        "fetch": {"host": "w1", "archive_kept": True},
        "verify": {"host": "w2", "archive_kept": True},
        "extract": {"host": "w2"},  # restore_files off: it never touched the archive, w2 still has its copy
        "restore": {"host": "w3", "archive_kept": True},
        "validate": {"host": "w1", "archive_kept": True},
        "verify_files": {"host": "w1", "archive_kept": False},  # the last reader removed w1's copy
    }
    assert copies_left_elsewhere(phases, "w3") == ["w2"]
    assert copies_left_elsewhere(phases, "w4") == ["w2", "w3"]
    assert copies_left_elsewhere({}, "w1") == []
