"""``load_dump`` decompresses plain dumps in process (ISA-L gzip, zstd) into psql, and commits only whole streams.

Each dump is real pg_dump output of the sample database, compressed by ``backup_ops.core.compression``
(what the dump step writes) and stored in an AES-256 zip member, as a backup archive holds it. A dump
whose compressed stream was cut short still passes the archive's own check (the cut bytes are what
was stored), so only the decompressor can catch it: nothing may be committed.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
import pyzipper

from backup_ops.adapters.postgres.load import load_dump
from backup_ops.adapters.postgres.restore import on_database
from backup_ops.adapters.postgres.target import PgTarget
from backup_ops.core.compression import compressor_for
from backup_ops.core.config.model import Compression
from backup_ops.core.errors import VerificationError
from backup_ops.core.fileio import CHUNK_SIZE
from backup_ops.core.manifest import ManifestDatabase
from devtools.pgserver import EmbeddedPostgres

PASSWORD = b"load-compressed test password"
MEMBER = "db-dumps/postgresql-app.sql"


@dataclass(frozen=True)
class Source:
    sql: bytes     # pg_dump -Fp of the sample database
    invoices: int  # its invoices table's rows


@pytest.fixture(scope="module")
def source(pg_server: EmbeddedPostgres, sample_template: str) -> Source:
    env = {"PATH": "/usr/bin:/bin", **pg_server.psql_env(sample_template)}
    with pg_server.connect(autocommit=True) as conn:  # the template refuses connections; pg_dump needs one
        conn.execute(f'ALTER DATABASE "{sample_template}" WITH ALLOW_CONNECTIONS true')
    try:
        sql = subprocess.run([str(pg_server.bin_dir / "pg_dump"), "-Fp", "--no-owner", "--no-privileges"],
                             env=env, capture_output=True, check=True).stdout
        count = invoices(pg_server, sample_template)
        assert count
        return Source(sql, count)
    finally:
        with pg_server.connect(autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{sample_template}" WITH ALLOW_CONNECTIONS false')


def compressed(compression: Compression, sql: bytes) -> bytes:
    compressor = compressor_for(compression)
    assert compressor is not None
    return b"".join(compressor.compress(sql[i:i + CHUNK_SIZE]) for i in range(0, len(sql), CHUNK_SIZE)) + \
        compressor.flush()


def archive_with(path: Path, member: str, data: bytes) -> Path:
    with pyzipper.AESZipFile(path, "w", compression=pyzipper.ZIP_STORED, encryption=pyzipper.WZ_AES) as zf:
        zf.setpassword(PASSWORD)
        zf.writestr(member, data)
    return path


def database_entry(member: str, compression: Compression) -> ManifestDatabase:
    return ManifestDatabase(member=member, conn_id="app_db", database="app", format="plain",
                            compression=str(compression), snapshot_id="s", server_version="18",
                            pg_dump_version="18", total_rows=0, tables=())


def load(pg_server: EmbeddedPostgres, tmp_path: Path, dbname: str, data: bytes, compression: Compression) -> None:
    member = MEMBER + compression.suffix
    archive = archive_with(tmp_path / f"{dbname}.zip", member, data)
    pg_server.create_database(dbname)
    target = on_database(PgTarget(host=pg_server.host, port=pg_server.port, user=pg_server.superuser,
                                  password=pg_server.password, dbname="postgres"), dbname)
    load_dump(target, "app_db", archive, database_entry(member, compression), password=PASSWORD,
              workdir=tmp_path, pg_bin_dir=pg_server.bin_dir)


def invoices(pg_server: EmbeddedPostgres, dbname: str) -> int | None:
    with pg_server.connect(dbname) as conn:
        if conn.execute("SELECT to_regclass('public.invoices')").fetchone() == (None,):
            return None
        row = conn.execute("SELECT count(*) FROM public.invoices").fetchone()
        return int(row[0]) if row else None


@pytest.mark.parametrize("compression", [Compression("gzip", 3), Compression("gzip", 9), Compression("zstd", 3)],
                         ids=str)
def test_a_compressed_plain_dump_loads(pg_server: EmbeddedPostgres, source: Source, tmp_path: Path,
                                       compression: Compression) -> None:
    dbname = f"load_{compression.method}_{compression.level}"
    try:
        load(pg_server, tmp_path, dbname, compressed(compression, source.sql), compression)
        assert invoices(pg_server, dbname) == source.invoices
    finally:
        pg_server.drop_database(dbname)


@pytest.mark.parametrize("compression", [Compression("gzip", 3), Compression("zstd", 3)], ids=str)
def test_a_cut_stream_commits_nothing(pg_server: EmbeddedPostgres, source: Source, tmp_path: Path,
                                      compression: Compression) -> None:
    data = compressed(compression, source.sql)
    dbname = f"load_cut_{compression.method}"
    try:
        with pytest.raises(VerificationError, match=r"ends in the middle of (its gzip stream|a zstd frame): it is "
                                                    r"truncated\.$"):
            load(pg_server, tmp_path, dbname, data[:len(data) * 9 // 10], compression)
        assert invoices(pg_server, dbname) is None  # the tables psql had created were rolled back
    finally:
        pg_server.drop_database(dbname)

