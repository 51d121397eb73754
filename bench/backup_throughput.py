"""Benchmark: one database backup against ``pg_dump | gzip -6 > file``, wall time and peak memory.

Run with ``make bench`` (``.venv/bin/python bench/backup_throughput.py``) from the repository root.
For each size it starts nothing new: one throwaway PostgreSQL (``devtools.pgserver``) holds a
database per size, filled with the invoicing sample data (``devtools.sample_data``). Then, in
the same run and against the same database, it times

* the baseline: ``pg_dump | gzip -6 > file`` as a bash pipeline, the same pg_dump binary, the
  connection in ``PG*`` environment variables;
* a backup: what ``backup_daily`` does for one database with default settings (plain format,
  gzip:6, AES-256 archive with a password, verify, publish to a local destination, verify the
  published copy), through the same library calls as ``backup_ops.airflow.backup_steps``, in a child
  process of its own so its peak RSS can be read from ``wait4``.

Targets (issue 2, item 8): the backup within 1.2× the baseline's wall time, and peak RSS under
150 MB, at both sizes. The report says PASS or MISS for each; the exit status is 0 unless
something failed, because a benchmark reports and does not gate.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Runs standalone from the repository root; backup_ops and devtools are imported where used, after this.
_REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_REPO), str(_REPO / "plugins")]

if TYPE_CHECKING:
    from devtools.pgserver import EmbeddedPostgres

MB = 1_000_000
RATIO_TARGET = 1.2
RSS_TARGET_MB = 150.0
BENCH_PASSWORD = "bench-archive-password"  # protects throwaway sample data only
BACKUP_NAME = "bench"
# Bash, not sh: pipefail makes a failing pg_dump fail the pipeline instead of leaving a short file.
BASELINE_PIPELINE = 'set -o pipefail; "$BENCH_PG_DUMP" | gzip -6 > "$BENCH_OUT"'


# ---------------------------------------------------------------------------- measuring a process


@dataclass(frozen=True)
class ProcessRun:
    """Wall time and rusage of one child process and the descendants it waited for."""

    wall_s: float
    cpu_s: float
    peak_rss_mb: float  # the largest RSS of the child or any descendant it reaped (Linux ru_maxrss, KiB)
    stdout: bytes


def run_measured(argv: list[str], env: dict[str, str], stdin: bytes = b"") -> ProcessRun:
    """Run ``argv`` to completion and measure it with ``wait4``; raises RuntimeError on a non-zero exit."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        if proc.stdin is None or proc.stdout is None:  # cannot happen with PIPE; keeps the type checker honest
            raise RuntimeError(f"{argv[0]} was started without pipes; this is a bug in the benchmark.")
        proc.stdin.write(stdin)  # small (one JSON spec): fits the pipe buffer, cannot block
        proc.stdin.close()
        out = proc.stdout.read()
        proc.stdout.close()
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    wall = time.perf_counter() - started
    # Popen did not reap the child itself; tell it, so it neither waits again nor warns.
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} {' '.join(argv[1:3])} … exited with {proc.returncode}; see its stderr above.")
    return ProcessRun(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out)


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without inherited ``PG*`` variables, plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("PG")}, **extra}


# ---------------------------------------------------------------------------- the two contenders


@dataclass(frozen=True)
class BaselineRun:
    process: ProcessRun
    output_bytes: int


@dataclass(frozen=True)
class BackupRun:
    process: ProcessRun
    child: dict[str, Any]  # what the child measured about itself (see backup_in_child)


def run_baseline(pg: EmbeddedPostgres, dbname: str, out: Path) -> BaselineRun:
    """``pg_dump | gzip -6 > out`` with the embedded server's pg_dump; the password only in the environment."""
    env = clean_env({**pg.psql_env(dbname), "BENCH_PG_DUMP": str(pg.bin_dir / "pg_dump"), "BENCH_OUT": str(out)})
    process = run_measured(["bash", "-c", BASELINE_PIPELINE], env)
    return BaselineRun(process, out.stat().st_size)


def run_backup(pg: EmbeddedPostgres, dbname: str, run_dir: Path) -> BackupRun:
    """One backup in a child process (this file with ``--child``); the spec, password included, goes on stdin."""
    spec = {"host": pg.host, "port": pg.port, "user": pg.superuser, "password": pg.password, "dbname": dbname,
            "pg_bin_dir": str(pg.bin_dir), "run_dir": str(run_dir)}
    process = run_measured([sys.executable, str(Path(__file__).resolve()), "--child"], clean_env({}),
                           json.dumps(spec).encode())
    return BackupRun(process, json.loads(process.stdout.decode().strip().splitlines()[-1]))


# ---------------------------------------------------------------------------- the child: one backup


class _DumpLogCapture(logging.Handler):
    """Keeps dump_database's summary line, which is the only place it reports its read-back time."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def readback_s(self) -> float | None:
        found = [m for m in (re.search(r"read-back check ([0-9.]+) s", text) for text in self.messages) if m]
        return float(found[-1].group(1)) if found else None


def backup_in_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Dump → archive → verify → publish → verify, as backup_daily's tasks call the library; returns timings.

    Mirrors ``backup_ops/airflow/backup_steps.py`` (``dump_database``, ``build_archive``, ``publish``) with the
    config defaults (plain, gzip:6, aes256, compression_level 6, no files), but without Airflow:
    the connection comes from ``spec`` and tool versions are collected here, because importing
    ``airflow`` only to read its version would put the scheduler's imports in the measurement.
    """
    # psycopg is what dump_database imports lazily (~0.25 s); importing it here makes that cost show
    # under 'startup' with the interpreter's, instead of inflating the dump step.
    import psycopg  # noqa: F401
    import pyzipper

    from backup_ops import __version__
    from backup_ops.adapters.destinations.local import LocalDestination
    from backup_ops.adapters.postgres.dump import dump_database
    from backup_ops.adapters.postgres.target import PgTarget
    from backup_ops.core.archive import build_archive
    from backup_ops.core.archive_read import verify_archive
    from backup_ops.core.config import DatabaseSource
    from backup_ops.core.manifest import MemberInfo, build_manifest
    from backup_ops.core.models import Receipt, archive_file_name

    run_dir = Path(spec["run_dir"])
    staging, dest_root = run_dir / "staging", run_dir / "destination"
    staging.mkdir(mode=0o700, parents=True)
    dest_root.mkdir(parents=True)
    target = PgTarget(host=spec["host"], port=spec["port"], user=spec["user"], password=spec["password"],
                      dbname=spec["dbname"])
    secret = BENCH_PASSWORD.encode()
    dump_log = logging.getLogger("bench.child.dump")
    capture = _DumpLogCapture()
    dump_log.addHandler(capture)
    dump_log.setLevel(logging.INFO)
    dump_log.propagate = False  # its INFO summary is captured; only warnings go to stderr
    warnings_out = logging.StreamHandler(sys.stderr)
    warnings_out.setLevel(logging.WARNING)
    dump_log.addHandler(warnings_out)
    times: dict[str, float] = {}

    began = time.perf_counter()
    dump = dump_database(target, DatabaseSource(conn_id="bench"), staging, pg_bin_dir=Path(spec["pg_bin_dir"]),
                         log=dump_log)
    times["dump"] = time.perf_counter() - began

    created_at = datetime.now(UTC).replace(microsecond=0)
    archive_name = archive_file_name("", created_at)
    versions = {"backup_ops": __version__, "python": platform.python_version(),
                "pyzipper": getattr(pyzipper, "__version__", "unknown")}

    def make_manifest(members: list[MemberInfo]) -> dict[str, Any]:
        return build_manifest(backup_name=BACKUP_NAME, created_at=created_at, archive_name=archive_name,
                              run={"dag_id": "backup_daily", "run_id": "bench", "logical_date": ""}, dumps=[dump],
                              members=members, encryption="aes256", tool_versions=versions)

    step = time.perf_counter()
    archive_path = staging / archive_name
    archive = build_archive(archive_path, dumps=[dump], files=iter(()), password=secret, encryption="aes256",
                            compression_level=6, make_manifest=make_manifest)
    times["archive"] = time.perf_counter() - step

    step = time.perf_counter()
    verify_archive(archive_path, password=secret, expected_sha256=archive.sha256, expected_size=archive.size)
    times["verify"] = time.perf_counter() - step

    step = time.perf_counter()
    dest = LocalDestination("bench-local", BACKUP_NAME, dest_root)
    dest.check_reachable()
    receipt = Receipt(archive=archive_name, size=archive.size, sha256=archive.sha256,
                      created_at=created_at.isoformat(), manifest_sha256=archive.manifest_sha256)
    published = dest.publish(archive_path, archive_name, receipt)
    times["publish"] = time.perf_counter() - step

    step = time.perf_counter()
    dest.verify_published(published)
    local_copy = dest.local_path(published.path)
    if local_copy is None:
        raise RuntimeError("A local destination returned no local path; this is a bug in the benchmark.")
    verify_archive(local_copy, password=secret, expected_sha256=archive.sha256, expected_size=archive.size)
    times["publish_verify"] = time.perf_counter() - step
    times["total"] = time.perf_counter() - began

    readback = capture.readback_s()
    if readback is not None:
        times["dump_readback"] = readback
    return {
        "times": {k: round(v, 3) for k, v in times.items()},
        "dump_bytes": dump.size,
        "archive_bytes": archive.size,
        "rows": dump.total_rows,
        # Linux reports ru_maxrss in KiB. RUSAGE_CHILDREN covers pg_dump, reaped by now.
        "self_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "pg_dump_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }


def child_main() -> None:
    """``--child``: read the spec from stdin, run one backup, print the measurements as one JSON line."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="child: %(levelname)s %(message)s")
    spec = json.loads(sys.stdin.read())
    print(json.dumps(backup_in_child(spec)), flush=True)


# ---------------------------------------------------------------------------- one size


@dataclass(frozen=True)
class Pair:
    """One repeat: the baseline, then the backup, back to back, so both see about the same machine load."""

    baseline: BaselineRun
    backup: BackupRun

    @property
    def ratio(self) -> float:
        return self.backup.process.wall_s / self.baseline.process.wall_s


@dataclass
class SizeResult:
    """Everything measured for one database size.

    Other work on the machine moves both timings of a repeat together, so the ratio is taken per
    repeat and the repeat with the median ratio represents the size (the higher one of the two
    middle repeats when their number is even: a benchmark should not flatter).
    """

    size_mb: int
    db_bytes: int
    load_s: float
    pairs: list[Pair] = field(default_factory=list)
    load_averages: list[float] = field(default_factory=list)

    @property
    def median(self) -> Pair:
        ranked = sorted(self.pairs, key=lambda p: p.ratio)
        return ranked[len(ranked) // 2]

    @property
    def peak_rss_mb(self) -> float:
        """The highest peak over all backup runs: the backup process and pg_dump below it."""
        return max(p.backup.process.peak_rss_mb for p in self.pairs)

    def child_peak(self, key: str) -> float:
        """The highest value of a peak the child reported about itself (``self_…`` or ``pg_dump_…``)."""
        return max(float(p.backup.child[key]) for p in self.pairs)


def measure_size(pg: EmbeddedPostgres, size_mb: int, repeat: int, workdir: Path, keep_data: bool) -> SizeResult:
    """Create and fill a database of ``size_mb``, then time baseline and backup ``repeat`` times each."""
    from devtools.sample_data import grow_to_size

    dbname = f"bench_{size_mb}mb"
    pg.drop_database(dbname)
    pg.create_database(dbname)
    print(f"[{size_mb} MB] loading sample data …", flush=True)
    began = time.perf_counter()
    with pg.connect(dbname) as conn:
        db_bytes = grow_to_size(conn, size_mb * MB)
    with pg.connect(dbname, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")  # set hint bits now, so the first reader does not pay for them
    result = SizeResult(size_mb, db_bytes, time.perf_counter() - began)
    print(f"[{size_mb} MB] database is {db_bytes / MB:.0f} MB, loaded in {result.load_s:.0f} s", flush=True)

    for attempt in range(1, repeat + 1):
        run_dir = workdir / f"{size_mb}mb-run{attempt}"
        run_dir.mkdir(mode=0o700)
        result.load_averages.append(os.getloadavg()[0])
        baseline = run_baseline(pg, dbname, run_dir / "baseline.sql.gz")
        print(f"[{size_mb} MB] run {attempt}/{repeat}: baseline {baseline.process.wall_s:.1f} s", flush=True)
        result.load_averages.append(os.getloadavg()[0])
        backup = run_backup(pg, dbname, run_dir)
        result.pairs.append(Pair(baseline, backup))
        result.load_averages.append(os.getloadavg()[0])
        print(f"[{size_mb} MB] run {attempt}/{repeat}: backup {backup.process.wall_s:.1f} s "
              f"({backup.process.wall_s / baseline.process.wall_s:.2f}×), split {backup.child['times']}", flush=True)
        if not keep_data:
            shutil.rmtree(run_dir)
    if not keep_data:
        pg.drop_database(dbname)
    return result


# ---------------------------------------------------------------------------- report


def machine_summary() -> str:
    """CPU count and model, and the load average, for reading the numbers in context."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    one, five, fifteen = os.getloadavg()
    return (f"{os.cpu_count()} × {model}, Python {platform.python_version()}, "
            f"load average {one:.2f} / {five:.2f} / {fifteen:.2f}")


def print_report(results: list[SizeResult], pg_dump_version: str) -> None:
    """The results table, the backup's time split, and PASS/MISS per target."""
    print()
    print(f"Machine: {machine_summary()}")
    print(f"pg_dump: {pg_dump_version}; backup = plain, gzip:6, AES-256 zip, verify, publish to local disk + verify")
    print("With repeats, the repeat with the median ratio is shown (ratios of all repeats in the last column).")
    print("CPU s counts the process and its children (pg_dump, gzip), not the PostgreSQL server.")
    print("Peak RSS is the largest process in the backup's tree (wait4 ru_maxrss): the Python backup process")
    print("itself ('python') or pg_dump below it.")
    print()
    header = (f"{'size':>7} {'DB MB':>6} {'baseline s':>10} {'backup s':>9} {'ratio':>6} {'cpu base':>8} "
              f"{'cpu bkp':>8} {'peak RSS MB':>11} {'python MB':>9} {'pg_dump MB':>10} {'base.gz MB':>10} "
              f"{'dump.gz MB':>10} {'zip MB':>7} {'load avg':>9}  all ratios")
    print(header)
    print("-" * len(header))
    for r in results:
        pair = r.median
        b, k = pair.baseline, pair.backup
        ratios = " ".join(f"{p.ratio:.2f}" for p in r.pairs)
        print(f"{r.size_mb:>4} MB {r.db_bytes / MB:>6.0f} {b.process.wall_s:>10.1f} {k.process.wall_s:>9.1f} "
              f"{pair.ratio:>5.2f}× {b.process.cpu_s:>8.1f} {k.process.cpu_s:>8.1f} {r.peak_rss_mb:>11.1f} "
              f"{r.child_peak('self_peak_rss_mb'):>9.1f} {r.child_peak('pg_dump_peak_rss_mb'):>10.1f} "
              f"{b.output_bytes / MB:>10.1f} {k.child['dump_bytes'] / MB:>10.1f} {k.child['archive_bytes'] / MB:>7.1f} "
              f"{min(r.load_averages):>4.1f}–{max(r.load_averages):<4.1f}  {ratios}")
    print()
    print("Backup time split (s) of that repeat. 'dump' includes 'dump_readback' (custom/zstd/lz4 read-back;")
    print("plain gzip dumps are checked while they stream, so it is 0 for them);")
    print("'startup' is the process's wall time minus the steps: interpreter start and imports, which a")
    print("worker pays once per task process. 'steps ratio' leaves it out: the library's cost alone.")
    steps = ["dump", "dump_readback", "archive", "verify", "publish", "publish_verify"]
    print(f"{'size':>7} " + " ".join(f"{s:>14}" for s in [*steps, "startup", "process", "steps ratio"]))
    for r in results:
        t = r.median.backup.child["times"]
        cells = " ".join(f"{t[s]:>14.2f}" if s in t else f"{'n/a':>14}" for s in steps)
        wall = r.median.backup.process.wall_s
        steps_ratio = t["total"] / r.median.baseline.process.wall_s
        print(f"{r.size_mb:>4} MB {cells} {wall - t['total']:>14.2f} {wall:>14.2f} {steps_ratio:>13.2f}×")
    print()
    for r in results:
        ratio, rss = r.median.ratio, r.peak_rss_mb
        print(f"{r.size_mb:>4} MB  wall time {ratio:.2f}× baseline (target ≤ {RATIO_TARGET}×): "
              f"{'PASS' if ratio <= RATIO_TARGET else 'MISS'};  peak RSS {rss:.0f} MB "
              f"(target < {RSS_TARGET_MB:.0f} MB): {'PASS' if rss < RSS_TARGET_MB else 'MISS'}")


# ---------------------------------------------------------------------------- main


def parse_sizes(text: str) -> list[int]:
    """``"100,1000"`` → ``[100, 1000]`` (MB, 10^6 bytes)."""
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes takes whole MB separated by commas, got {text!r}") from None
    if not sizes or any(size <= 0 for size in sizes):
        raise argparse.ArgumentTypeError(f"--sizes takes positive whole MB separated by commas, got {text!r}")
    return sizes


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"--repeat must be at least 1, got {text!r}")
    return value


def main() -> None:
    """Parse the command line, then either run the benchmark or, with ``--child``, one measured backup."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[100, 1000],
                        help="database sizes in MB, comma-separated (default: 100,1000)")
    parser.add_argument("--repeat", type=positive_int, default=1,
                        help="baseline+backup pairs per size; the median ratio counts (default: 1)")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the PostgreSQL cluster, dumps and archives in the work directory")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main()
        return

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from devtools.pgserver import EmbeddedPostgres

    workdir = Path(tempfile.mkdtemp(prefix="backup-ops-bench-"))
    # The server's OS user must traverse the work dir when the cluster lives in it (--keep-data).
    workdir.chmod(0o711)
    pg = EmbeddedPostgres(data_dir=workdir / "pgdata" if args.keep_data else None)
    results: list[SizeResult] = []
    try:
        pg.start()
        version = subprocess.run([str(pg.bin_dir / "pg_dump"), "--version"], capture_output=True, text=True,
                                 check=True).stdout.strip()
        print(f"Work directory {workdir}; {machine_summary()}", flush=True)
        for size_mb in args.sizes:
            results.append(measure_size(pg, size_mb, args.repeat, workdir, args.keep_data))
    finally:
        pg.stop()
        if args.keep_data:
            print(f"Kept {workdir} (cluster in pgdata/, dumps and archives in *-run*/)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_report(results, version)


if __name__ == "__main__":
    main()
