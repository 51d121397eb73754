"""Benchmark: every dump compression engine and level on one realistic plain SQL stream, and decompression.

Run with ``.venv/bin/python bench/compression_levels.py`` from the repository root. It starts a
throwaway PostgreSQL (``devtools.pgserver``), fills one database with the invoicing sample data
(``devtools.sample_data``, ``--db-mb`` of database), dumps it once with ``pg_dump -Fp`` to a file
(timed: the speed compression has to keep up with), and reads that SQL into memory in 1 MiB chunks,
as the dump step receives it from pg_dump's pipe. Then, in this process, through
``backup_ops.core.compression`` (the code the dump and restore steps run):

* compression with ``compressor_for`` for gzip 1–9 (ISA-L for 1–3, zlib for 4–9) and zstd 1, 3, 6, 9,
  19 (zstandard, ``zstd_threads(level)`` workers): MB/s of SQL in, output size, its ratio to zlib level 6's
  (within 0.3 % of what ``gzip -6`` writes), CPU seconds (all threads), and the peak
  memory the compressor adds (measured in a fresh interpreter over the first 24 MiB);
* GNU ``gzip -6`` on the same file, for reference;
* decompression of the gzip:3, gzip:6 and zstd:3 outputs with ``decompress_chunks`` (ISA-L, zstandard)
  and of the gzip ones with zlib's ``decompressobj`` too (what restores used before), in MB/s of SQL out.

The best of ``--repeat`` runs counts for each row (one run for rows slower than 20 s). The report is a
Markdown table for docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

_REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_REPO), str(_REPO / "plugins")]

from backup_ops.core.compression import compressor_for, decompress_chunks, engine  # noqa: E402
from backup_ops.core.config.model import Compression  # noqa: E402
from backup_ops.core.fileio import CHUNK_SIZE  # noqa: E402

MB = 1_000_000
T = TypeVar("T")
SLOW_S = 20.0
LEVELS = [Compression("gzip", level) for level in range(1, 10)] + \
         [Compression("zstd", level) for level in (1, 3, 6, 9, 19)]
DECOMPRESSED = (Compression("gzip", 3), Compression("gzip", 6), Compression("zstd", 3))


@dataclass(frozen=True)
class Timed:
    wall_s: float
    cpu_s: float


@dataclass(frozen=True)
class Row:
    label: str
    timed: Timed
    output_bytes: int
    memory_mb: float | None = None  # the compressor's own peak memory (RSS above the process before it)


# Run in a fresh interpreter: the compressor's peak RSS over the first MEMORY_SAMPLE bytes of the SQL.
MEMORY_PROBE = """
import sys
from backup_ops.core.compression import compressor_for
from backup_ops.core.config.model import Compression

def status_kib(field):  # VmHWM/VmRSS of this process's own memory map (ru_maxrss keeps the forking parent's)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))

compressor = compressor_for(Compression(sys.argv[1], int(sys.argv[2])))
before = status_kib("VmRSS")
with open(sys.argv[3], "rb") as source:
    for _ in range(int(sys.argv[4])):
        compressor.compress(source.read(1 << 20))
compressor.flush()
print((status_kib("VmHWM") - before) / 1024)
"""
MEMORY_SAMPLE_MIB = 24  # several zstd jobs of 4 MiB per worker: the buffers reach their steady state


def timed(action: Callable[[], T], repeat: int) -> tuple[Timed, T]:
    """The fastest of ``repeat`` runs of ``action`` (wall and process CPU seconds, every thread), and its result.

    A run longer than ``SLOW_S`` is not repeated: its noise is small next to its length.
    """
    best: Timed | None = None
    result: T | None = None
    for _ in range(max(1, repeat)):
        wall, cpu = time.perf_counter(), time.process_time()
        result = action()
        run = Timed(time.perf_counter() - wall, time.process_time() - cpu)
        best = run if best is None or run.wall_s < best.wall_s else best
        if run.wall_s > SLOW_S:
            break
    assert best is not None and result is not None
    return best, result


def compress_all(compression: Compression, chunks: list[bytes]) -> list[bytes]:
    compressor = compressor_for(compression)
    assert compressor is not None
    out = [compressor.compress(chunk) for chunk in chunks]
    out.append(compressor.flush())
    return [piece for piece in out if piece]


def rechunk(pieces: list[bytes]) -> list[bytes]:
    """The compressed bytes in 1 MiB chunks, as a restore reads them out of the archive member."""
    data = b"".join(pieces)
    return [data[i:i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]


def zlib_gunzip(chunks: list[bytes]) -> Iterator[bytes]:
    """Restores before ISA-L: zlib's decompressobj, bounded to CHUNK_SIZE per step (one member)."""
    decompressor = zlib.decompressobj(31)
    for chunk in chunks:
        data = chunk
        while data:
            yield decompressor.decompress(data, CHUNK_SIZE)
            data = decompressor.unconsumed_tail
    while not decompressor.eof and (out := decompressor.decompress(b"", CHUNK_SIZE)):
        yield out


def drain(chunks: Iterator[bytes], expected: int) -> int:
    total = sum(len(chunk) for chunk in chunks)
    if total != expected:
        raise RuntimeError(f"decompressed {total} bytes, expected {expected}: the benchmark is broken")
    return total


def drain_decompressed(pieces: list[bytes], method: str, expected: int) -> int:
    return drain(decompress_chunks(pieces, method, "bench"), expected)


def drain_zlib(pieces: list[bytes], expected: int) -> int:
    return drain(zlib_gunzip(pieces), expected)


def make_sql(workdir: Path, db_mb: int) -> tuple[Path, float, str]:
    """A sample database of ``db_mb`` dumped with ``pg_dump -Fp``: (the SQL file, pg_dump's wall s, its version)."""
    from devtools.pgserver import EmbeddedPostgres
    from devtools.sample_data import grow_to_size

    out = workdir / "dump.sql"
    with EmbeddedPostgres() as pg:
        pg.create_database("compression_bench")
        print(f"loading ~{db_mb} MB of sample data …", flush=True)
        with pg.connect("compression_bench") as conn:
            size = grow_to_size(conn, db_mb * MB)
        with pg.connect("compression_bench", autocommit=True) as conn:
            conn.execute("VACUUM (ANALYZE)")
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PG")}, **pg.psql_env("compression_bench")}
        pg_dump = str(pg.bin_dir / "pg_dump")
        version = subprocess.run([pg_dump, "--version"], capture_output=True, text=True, check=True).stdout.strip()
        started = time.perf_counter()
        with out.open("wb") as sink:
            subprocess.run([pg_dump, "-Fp"], stdout=sink, env=env, check=True)
        seconds = time.perf_counter() - started
        print(f"database {size / MB:.0f} MB; pg_dump -Fp wrote {out.stat().st_size / MB:.0f} MB in {seconds:.1f} s",
              flush=True)
    return out, seconds, version


def compressor_memory_mb(compression: Compression, sql: Path) -> float:
    """Peak RSS the compressor adds to a fresh process (import and all), in MB; zlib and ISA-L keep only a window."""
    env = {**os.environ, "PYTHONPATH": str(_REPO / "plugins")}
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, compression.method, str(compression.level), str(sql),
                           str(MEMORY_SAMPLE_MIB)], env=env, capture_output=True, text=True, check=True)
    return float(done.stdout.strip()) * 1024 * 1024 / MB


def gnu_gzip(sql: Path, repeat: int) -> Row:
    """GNU ``gzip -6 -c`` on the SQL file (page-cached), to /dev/null; CPU from the child's rusage."""
    best: Row | None = None
    for _ in range(repeat):
        before = os.times()
        started = time.perf_counter()
        done = subprocess.run(["gzip", "-6", "-c", str(sql)], stdout=subprocess.PIPE, check=True)
        wall = time.perf_counter() - started
        after = os.times()
        cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
        row = Row("GNU gzip -6 (reference)", Timed(wall, cpu), len(done.stdout))
        best = row if best is None or row.timed.wall_s < best.timed.wall_s else best
    assert best is not None
    return best


def machine_summary() -> str:
    """The backup benchmark's machine summary, plus the compression libraries' versions."""
    import isal
    import zstandard
    from backup_throughput import machine_info

    m = machine_info()
    return (f"{m['cpus']} × {m['cpu_model']}, Python {m['python']}, zlib {zlib.ZLIB_RUNTIME_VERSION}, "
            f"isal {isal.__version__}, zstandard {zstandard.__version__} (libzstd "
            f"{'.'.join(map(str, zstandard.ZSTD_VERSION))}), load average {m['load_average'][0]:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db-mb", type=int, default=200, help="sample database size in MB (default: 200)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per row; the fastest counts (default: 2)")
    parser.add_argument("--sql", type=Path, help="compress this plain SQL file instead of making one")
    parser.add_argument("--keep-sql", type=Path, help="keep the SQL file made here at this path, for --sql later")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="backup-ops-compression-"))
    workdir.chmod(0o711)
    try:
        if args.sql is not None:
            sql, dump_s, version = args.sql, 0.0, "pg_dump not run (--sql)"
        else:
            sql, dump_s, version = make_sql(workdir, args.db_mb)
            if args.keep_sql is not None:
                sql = Path(shutil.move(sql, args.keep_sql))
        with sql.open("rb") as source:
            chunks = list(iter(lambda: source.read(CHUNK_SIZE), b""))
        size = sum(len(chunk) for chunk in chunks)
        report(chunks, size, sql, dump_s, version, args.repeat)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def speed(bytes_per_s: float) -> str:
    """MB/s, with a decimal below 10."""
    return f"{bytes_per_s / MB:.0f}" if bytes_per_s >= 10 * MB else f"{bytes_per_s / MB:.1f}"


def report(chunks: list[bytes], size: int, sql: Path, dump_s: float, version: str, repeat: int) -> None:
    rows: list[Row] = []
    outputs: dict[Compression, list[bytes]] = {}
    for compression in LEVELS:
        run, pieces = timed(partial(compress_all, compression, chunks), repeat)
        outputs[compression] = rechunk(pieces) if compression in DECOMPRESSED else []
        rows.append(Row(f"`{compression}`: {engine(compression)}", run, sum(len(p) for p in pieces),
                        compressor_memory_mb(compression, sql)))
        del pieces
        print(f"{rows[-1].label}: {size / rows[-1].timed.wall_s / MB:.0f} MB/s", flush=True)
    rows.append(gnu_gzip(sql, repeat))
    gzip6 = next(row.output_bytes for row in rows if row.label.startswith("`gzip:6`"))

    print()
    print(f"Machine: {machine_summary()}")
    print(f"Input: {size / MB:.1f} MB of plain SQL from {version}"
          + (f", which wrote it in {dump_s:.1f} s ({size / dump_s / MB:.0f} MB/s: the pace to keep up with)"
             if dump_s else ""))
    print(f"Best of {repeat} runs per row (one above {SLOW_S:.0f} s); CPU s counts every thread of the process "
          "(zstd's workers too).")
    print()
    print("MB/s per CPU s: input over CPU seconds, steadier than wall time on a busy machine. Memory: the peak RSS")
    print(f"the compressor adds to a fresh process over the first {MEMORY_SAMPLE_MIB} MiB.")
    print()
    print("| engine and level | MB/s in | CPU s | MB/s per CPU s | output MB | size vs gzip -6 | memory MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        memory = f"{row.memory_mb:.0f}" if row.memory_mb is not None else "–"
        print(f"| {row.label} | {speed(size / row.timed.wall_s)} | {row.timed.cpu_s:.1f} | "
              f"{speed(size / row.timed.cpu_s)} | {row.output_bytes / MB:.1f} | {row.output_bytes / gzip6:.3f}× | "
              f"{memory} |")

    print()
    print("| decompression | MB/s out | CPU s |")
    print("|---|---:|---:|")
    for compression in DECOMPRESSED:
        pieces = outputs[compression]
        library = "ISA-L" if compression.method == "gzip" else "zstandard"
        run, _ = timed(partial(drain_decompressed, pieces, compression.method, size), repeat)
        print(f"| `{compression}` output, {library} (`decompress_chunks`) | {size / run.wall_s / MB:.0f} | "
              f"{run.cpu_s:.1f} |")
        if compression.method == "gzip":
            run, _ = timed(partial(drain_zlib, pieces, size), repeat)
            print(f"| `{compression}` output, zlib (restores before) | {size / run.wall_s / MB:.0f} | "
                  f"{run.cpu_s:.1f} |")


if __name__ == "__main__":
    main()
