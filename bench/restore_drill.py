"""Benchmark: a restore drill against a bare ``gunzip | psql`` (and ``pg_restore -j``) of the same dump.

Run with ``make bench`` (or ``.venv/bin/python bench/restore_drill.py``) from the repository root.
One throwaway PostgreSQL (``devtools.pgserver``) holds, per size, a source database filled with the
invoicing sample data (``devtools.sample_data``, with its application roles, grants and settings)
and is also the restore target. A backup archive is made once per size and dump format through the
library (as ``backup_daily`` makes it: AES-256 zip, the application's files, a receipt, published to a
local destination). Then, in the same run and back to back, it times

* the baseline: ``createdb`` and ``gunzip -c dump.sql.gz | psql --single-transaction`` of the same
  dump into an empty database (custom format: ``pg_restore -j 2``), as a bash pipeline with the
  server's own client tools;
* a drill: what ``restore_drill`` does, through the same library calls as
  ``backup_ops.airflow.drill_steps`` (select, fetch from the local destination, verify against the
  receipt and manifest, extract the files, restore into a scratch database with the archive's roles and
  settings, validate every table exactly against the manifest (by SQL, the default; ``--exact-checks
  great_expectations`` measures the same checks in Great Expectations), hash the restored files), in a child process
  of its own so its peak RSS can be read from ``wait4``. The scratch database is dropped afterwards,
  outside the timed part, as the baseline's database is.

Target (issue 10): the drill within 1.3× the bare restore's wall time, and Great Expectations' import
and setup not dominating a small drill. The report says PASS or MISS, for the whole child process and
for its steps without the interpreter's start and GX's import; the exit status is 0 unless something
failed, because a benchmark reports and does not gate.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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

from backup_throughput import MB, ProcessRun, clean_env, machine_summary, parse_sizes, positive_int, run_measured  # noqa: E402

if TYPE_CHECKING:
    from devtools.pgserver import EmbeddedPostgres

RATIO_TARGET = 1.3
BENCH_PASSWORD = "bench-archive-password"  # protects throwaway sample data only
BACKUP_NAME = "bench"
JOBS = 2  # restore_drill.jobs' default: pg_restore -j for custom-format dumps, in the drill and the baseline
FORMATS = ("plain", "custom")
UPLOADS = 60  # the sample application's files: what verify_files hashes
# Bash, not sh: pipefail makes a failing gunzip fail the pipeline instead of a short, committed load.
BASELINE = {
    "plain": 'set -o pipefail; "$BENCH_BIN/createdb" -T template0 "$PGDATABASE" && gunzip -c "$BENCH_DUMP" '
             '| "$BENCH_BIN/psql" -X -q -v ON_ERROR_STOP=1 --single-transaction -o /dev/null',
    "custom": f'"$BENCH_BIN/createdb" -T template0 "$PGDATABASE" && "$BENCH_BIN/pg_restore" --exit-on-error '
              f'--jobs={JOBS} -d "$PGDATABASE" "$BENCH_DUMP"',
}
PHASES = ("select", "fetch", "verify", "extract", "restore", "validate", "verify_files")


# ---------------------------------------------------------------------------- the backup to drill


@dataclass(frozen=True)
class Backup:
    """One published archive and the dump inside it (the staged copy, which the baseline restores)."""

    format: str
    destination_root: Path
    archive_bytes: int
    dump_path: Path
    dump_bytes: int
    rows: int
    tables: int


def make_backup(pg: EmbeddedPostgres, dbname: str, app: Path, fmt: str, workdir: Path) -> Backup:
    """Dump ``dbname`` in ``fmt`` (gzip:6), zip it with ``app``'s files (AES-256), publish it; not timed."""
    from backup_ops.adapters.destinations.local import LocalDestination
    from backup_ops.adapters.postgres.dump import dump_database
    from backup_ops.adapters.postgres.target import PgTarget
    from backup_ops.core.archive import build_archive
    from backup_ops.core.config import DatabaseSource, FileSource
    from backup_ops.core.files import select_files
    from backup_ops.core.manifest import build_manifest
    from backup_ops.core.models import Receipt, archive_file_name

    staging, root = workdir / f"staging-{fmt}", workdir / f"destination-{fmt}"
    staging.mkdir(mode=0o700)
    root.mkdir()
    target = PgTarget(host=pg.host, port=pg.port, user=pg.superuser, password=pg.password, dbname=dbname)
    dump = dump_database(target, DatabaseSource(conn_id="bench", format=fmt), staging,  # type: ignore[arg-type]
                         pg_bin_dir=pg.bin_dir)
    created_at = datetime.now(UTC).replace(microsecond=0)
    name = archive_file_name("", created_at)
    archive = build_archive(
        staging / name, dumps=[dump], files=select_files(FileSource(include=(app,), relative_path=app)),
        password=BENCH_PASSWORD.encode(), encryption="aes256", compression_level=6,
        make_manifest=lambda members: build_manifest(
            backup_name=BACKUP_NAME, created_at=created_at, archive_name=name,
            run={"dag_id": "backup_daily", "run_id": "bench"}, dumps=[dump], members=members, encryption="aes256",
            tool_versions={}))
    receipt = Receipt(name, archive.size, archive.sha256, created_at.isoformat(), archive.manifest_sha256)
    LocalDestination("bench-local", BACKUP_NAME, root).publish(staging / name, name, receipt)
    (staging / name).unlink()  # the published copy is the one drilled; the staged dump stays for the baseline
    return Backup(fmt, root, archive.size, Path(dump.staged_path), dump.size, dump.total_rows, len(dump.tables))


# ---------------------------------------------------------------------------- the two contenders

EXACT_CHECKS = ["sql"]
"""``--exact-checks``: where the drill's validation runs the exact checks (set once by ``main``)."""


@dataclass(frozen=True)
class BaselineRun:
    process: ProcessRun


@dataclass(frozen=True)
class DrillRun:
    process: ProcessRun
    child: dict[str, Any]  # what the child measured about itself (see drill_in_child)


def run_baseline(pg: EmbeddedPostgres, backup: Backup, dbname: str) -> BaselineRun:
    """createdb + ``gunzip | psql`` (or ``pg_restore -j``) with the server's client tools; then drop the database."""
    env = clean_env({**pg.psql_env(dbname), "BENCH_BIN": str(pg.bin_dir), "BENCH_DUMP": str(backup.dump_path)})
    try:
        process = run_measured(["bash", "-c", BASELINE[backup.format]], env)
    finally:
        pg.drop_database(dbname)
    return BaselineRun(process)


def run_drill(pg: EmbeddedPostgres, backup: Backup, run_dir: Path) -> DrillRun:
    """One drill in a child process (this file with ``--child``); the spec, passwords included, goes on stdin."""
    spec = {"host": pg.host, "port": pg.port, "user": pg.superuser, "password": pg.password,
            "pg_bin_dir": str(pg.bin_dir), "destination_root": str(backup.destination_root),
            "run_dir": str(run_dir), "exact_checks": EXACT_CHECKS[0]}
    process = run_measured([sys.executable, str(Path(__file__).resolve()), "--child"], clean_env({}),
                           json.dumps(spec).encode())
    return DrillRun(process, json.loads(process.stdout.decode().strip().splitlines()[-1]))


# ---------------------------------------------------------------------------- the child: one drill


def drill_in_child(spec: dict[str, Any], entered: float) -> dict[str, Any]:
    """select → fetch → verify → extract → restore → validate → verify_files, as the drill's tasks call the library.

    Mirrors ``backup_ops/airflow/drill_steps.py`` phase by phase, each phase reading the manifest again
    as its task does, but without Airflow: the server comes from ``spec`` (no connection lookup, no
    source list from the config), because importing ``airflow`` would put the scheduler's imports in
    the measurement; a worker has them loaded anyway. Great Expectations, when the exact checks run in it
    (``--exact-checks great_expectations``), is imported where the drill imports it, inside
    ``validate_database``, so its import is timed as a part of ``validate`` (reported on its own as
    ``gx_import``).
    """
    # psycopg and pyzipper are what the phases import lazily (~0.3 s); importing them here makes that cost
    # show under 'imports' (``entered``: when child_main started), as in the backup benchmark, not in 'select'.
    import psycopg  # noqa: F401
    import pyzipper  # noqa: F401

    from backup_ops.adapters.backup_fetch import fetch_backup, read_manifest, select_backup, verify_fetched
    from backup_ops.adapters.destinations.local import LocalDestination
    from backup_ops.adapters.postgres import restore as pg_restore
    from backup_ops.adapters.postgres.target import PgTarget
    from backup_ops.adapters.validation import validate_database
    from backup_ops.core.extract import safe_extract
    from backup_ops.core.file_check import check_restored_files
    from backup_ops.core.restore_plan import file_members, scratch_names, table_expectations

    secret = BENCH_PASSWORD.encode()
    run_dir = Path(spec["run_dir"])
    workdir = run_dir / "drill"
    workdir.mkdir(mode=0o700)
    server = PgTarget(host=spec["host"], port=spec["port"], user=spec["user"], password=spec["password"],
                      dbname="postgres")
    destination = LocalDestination("bench-local", BACKUP_NAME, Path(spec["destination_root"]))
    times: dict[str, float] = {"imports": time.perf_counter() - entered}
    peak_after: dict[str, float] = {}  # this process's peak RSS (MB) when each phase ended: which phase grew it
    began = clock = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        times[phase] = now - clock
        peak_after[phase] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        clock = now

    selected = select_backup(destination, "latest")
    lap("select")
    fetched = fetch_backup(destination, selected, workdir)
    lap("fetch")
    verified = verify_fetched(fetched, selected, password=secret)
    lap("verify")
    manifest = read_manifest(fetched.path, secret)
    members = file_members(manifest)
    safe_extract(fetched.path, workdir / "files", password=secret, members=[m.name for m in members],
                 listed=manifest.members_by_name(), max_total_bytes=manifest.file_bytes)
    lap("extract")
    manifest = read_manifest(fetched.path, secret)
    names = scratch_names(datetime.now(UTC), len(manifest.databases))
    loaded = []
    for db, name in zip(manifest.databases, names, strict=True):
        source = pg_restore.on_database(server, db.database)
        pg_restore.refuse_source_database(server, "bench", name, [("bench", source)])
        pg_restore.drop_scratch_database(server, "bench", name)
        info = pg_restore.database_info(fetched.path, db, secret)
        notes = pg_restore.create_database(server, "bench", name, info)
        loaded.append(pg_restore.restore_database(server, "bench", name, fetched.path, db, info=info, password=secret,
                                                  workdir=workdir, pg_bin_dir=Path(spec["pg_bin_dir"]), jobs=JOBS,
                                                  notes=notes))
    lap("restore")
    manifest = read_manifest(fetched.path, secret)
    gx_import = 0.0
    failed = 0
    for db, done in zip(manifest.databases, loaded, strict=True):
        run = validate_database(pg_restore.on_database(server, done.name), "bench",
                                table_expectations(db, {}, manifest.created_at), label=db.database,
                                exact_by=spec["exact_checks"])
        gx_import += run.import_seconds
        failed += sum(not t.success for t in run.tables)
    lap("validate")
    manifest = read_manifest(fetched.path, secret)
    checked = check_restored_files(workdir / "files", file_members(manifest))
    lap("verify_files")
    times["total"] = time.perf_counter() - began
    times["gx_import"] = gx_import
    times["load"] = sum(done.seconds for done in loaded)

    step = time.perf_counter()
    for done in loaded:
        pg_restore.drop_scratch_database(server, "bench", done.name)
    shutil.rmtree(workdir)
    times["teardown"] = time.perf_counter() - step
    if failed:
        raise RuntimeError(f"{failed} tables did not validate; the benchmark's backup is broken.")
    return {
        "times": {k: round(v, 3) for k, v in times.items()},
        "peak_after": peak_after,
        "members": verified.members_checked,
        "restored_bytes": sum(done.size_bytes for done in loaded),
        "tables": sum(len(db.tables) for db in manifest.databases),
        "files": checked.files,
        "file_bytes": checked.bytes,
        # Linux reports ru_maxrss in KiB. RUSAGE_CHILDREN covers psql / pg_restore, reaped by now.
        "self_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "tools_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
    }


def child_main() -> None:
    """``--child``: read the spec from stdin, run one drill, print the measurements as one JSON line."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="child: %(levelname)s %(message)s")
    entered = time.perf_counter()
    spec = json.loads(sys.stdin.read())
    print(json.dumps(drill_in_child(spec, entered)), flush=True)


# ---------------------------------------------------------------------------- one size


@dataclass(frozen=True)
class Pair:
    """One repeat: the baseline, then the drill, back to back, so both see about the same machine load."""

    baseline: BaselineRun
    drill: DrillRun

    @property
    def ratio(self) -> float:
        """The whole drill process (interpreter, imports, GX's import, every phase) over the baseline."""
        return self.drill.process.wall_s / self.baseline.process.wall_s

    @property
    def steps_ratio(self) -> float:
        """The drill's phases without the interpreter's start and GX's import, over the baseline."""
        times = self.drill.child["times"]
        return (times["total"] - times["gx_import"]) / self.baseline.process.wall_s


@dataclass
class FormatResult:
    """Everything measured for one size and dump format; the repeat with the median ratio represents it
    (the higher one of the two middle repeats when their number is even: a benchmark should not flatter)."""

    size_mb: int
    db_bytes: int
    backup: Backup
    pairs: list[Pair] = field(default_factory=list)
    load_averages: list[float] = field(default_factory=list)

    @property
    def median(self) -> Pair:
        ranked = sorted(self.pairs, key=lambda p: p.ratio)
        return ranked[len(ranked) // 2]

    @property
    def peak_rss_mb(self) -> float:
        return max(p.drill.process.peak_rss_mb for p in self.pairs)

    def child_peak(self, key: str) -> float:
        return max(float(p.drill.child[key]) for p in self.pairs)


def measure_size(pg: EmbeddedPostgres, size_mb: int, formats: list[str], repeat: int, workdir: Path,
                 keep_data: bool) -> list[FormatResult]:
    """Fill a database of ``size_mb``, back it up per format, then time baseline and drill ``repeat`` times each."""
    from devtools.sample_app import build_sample_app
    from devtools.sample_data import add_application_roles, grow_to_size

    dbname = f"bench_{size_mb}mb"
    pg.drop_database(dbname)
    pg.create_database(dbname)
    print(f"[{size_mb} MB] loading sample data …", flush=True)
    began = time.perf_counter()
    with pg.connect(dbname) as conn:
        db_bytes = grow_to_size(conn, size_mb * MB)
        conn.commit()
        add_application_roles(conn)
    with pg.connect(dbname, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
    print(f"[{size_mb} MB] database is {db_bytes / MB:.0f} MB, loaded in {time.perf_counter() - began:.0f} s",
          flush=True)
    size_dir = workdir / f"{size_mb}mb"
    size_dir.mkdir(mode=0o700)
    app = build_sample_app(size_dir / "app", uploads=UPLOADS)
    results = []
    for fmt in formats:
        began = time.perf_counter()
        backup = make_backup(pg, dbname, app, fmt, size_dir)
        print(f"[{size_mb} MB {fmt}] backup made in {time.perf_counter() - began:.0f} s: archive "
              f"{backup.archive_bytes / MB:.1f} MB, {backup.tables} tables, {backup.rows} rows", flush=True)
        result = FormatResult(size_mb, db_bytes, backup)
        for attempt in range(1, repeat + 1):
            run_dir = size_dir / f"{fmt}-run{attempt}"
            run_dir.mkdir(mode=0o700)
            result.load_averages.append(os.getloadavg()[0])
            baseline = run_baseline(pg, backup, f"bench_bare_{size_mb}mb")
            print(f"[{size_mb} MB {fmt}] run {attempt}/{repeat}: baseline {baseline.process.wall_s:.1f} s", flush=True)
            result.load_averages.append(os.getloadavg()[0])
            drill = run_drill(pg, backup, run_dir)
            result.pairs.append(Pair(baseline, drill))
            result.load_averages.append(os.getloadavg()[0])
            print(f"[{size_mb} MB {fmt}] run {attempt}/{repeat}: drill {drill.process.wall_s:.1f} s "
                  f"({drill.process.wall_s / baseline.process.wall_s:.2f}×), split {drill.child['times']}", flush=True)
            if not keep_data:
                shutil.rmtree(run_dir)
        results.append(result)
    if not keep_data:
        pg.drop_database(dbname)
    return results


# ---------------------------------------------------------------------------- report


def print_report(results: list[FormatResult], versions: str) -> None:
    """The results table, the drill's time split, and PASS/MISS per target."""
    print()
    print(f"Machine: {machine_summary()}")
    print(f"{versions}; drill = local destination, AES-256 zip, {UPLOADS}-upload sample app, jobs {JOBS}, "
          f"exact checks by {EXACT_CHECKS[0]}")
    print("With repeats, the repeat with the median ratio is shown (ratios of all repeats in the last column).")
    print("'ratio' is the whole drill process (interpreter start, imports, Great Expectations' import, every")
    print("phase) over the baseline; 'steps' leaves out the interpreter's start and GX's import, which a worker")
    print("pays in every validate task (each Airflow task is a process of its own).")
    print("Peak RSS is the largest process in the drill's tree (wait4 ru_maxrss): Python or psql/pg_restore.")
    print()
    header = (f"{'size':>7} {'format':>6} {'DB MB':>6} {'zip MB':>7} {'baseline s':>10} {'drill s':>8} {'ratio':>6} "
              f"{'steps':>6} {'peak RSS MB':>11} {'python MB':>9} {'tools MB':>8} {'restored MB':>11} "
              f"{'load avg':>9}  all ratios")
    print(header)
    print("-" * len(header))
    for r in results:
        pair = r.median
        b, d = pair.baseline, pair.drill
        ratios = " ".join(f"{p.ratio:.2f}" for p in r.pairs)
        print(f"{r.size_mb:>4} MB {r.backup.format:>6} {r.db_bytes / MB:>6.0f} {r.backup.archive_bytes / MB:>7.1f} "
              f"{b.process.wall_s:>10.1f} {d.process.wall_s:>8.1f} {pair.ratio:>5.2f}× {pair.steps_ratio:>5.2f}× "
              f"{r.peak_rss_mb:>11.1f} {r.child_peak('self_peak_rss_mb'):>9.1f} "
              f"{r.child_peak('tools_peak_rss_mb'):>8.1f} {d.child['restored_bytes'] / MB:>11.1f} "
              f"{min(r.load_averages):>4.1f}–{max(r.load_averages):<4.1f}  {ratios}")
    print()
    print("Drill time split (s) of that repeat. 'validate' includes 'gx_import'; 'load' is the part of 'restore'")
    print("spent loading the dump (the rest: CREATE DATABASE, roles and settings, size).")
    print("'imports' are psycopg, pyzipper and backup_ops; 'start+exit' is the process's wall time minus all")
    print("the above: interpreter start and exit (with GX loaded, exit alone takes about 0.7 s).")
    print("'restore/base' compares the restore phase alone with the whole baseline.")
    columns = [*PHASES, "gx_import", "load", "imports", "start+exit", "teardown"]
    print(f"{'size':>7} {'format':>6} " + " ".join(f"{c:>12}" for c in columns)
          + f" {'per table ms':>12} {'restore/base':>12}")
    for r in results:
        t = r.median.drill.child["times"]
        rest = r.median.drill.process.wall_s - t["imports"] - t["total"] - t["teardown"]
        per_table = (t["validate"] - t["gx_import"]) / max(r.median.drill.child["tables"], 1) * 1000
        cells = " ".join(f"{(rest if c == 'start+exit' else t[c]):>12.2f}" for c in columns)
        restore_ratio = t["restore"] / r.median.baseline.process.wall_s
        print(f"{r.size_mb:>4} MB {r.backup.format:>6} {cells} {per_table:>12.0f} {restore_ratio:>11.2f}×")
    print()
    print("The drill process's own peak RSS (MB) when each phase ended, of that repeat:")
    print(f"{'size':>7} {'format':>6} " + " ".join(f"{p:>12}" for p in PHASES))
    for r in results:
        peaks = r.median.drill.child["peak_after"]
        print(f"{r.size_mb:>4} MB {r.backup.format:>6} " + " ".join(f"{peaks[p]:>12.1f}" for p in PHASES))
    print()
    for r in results:
        pair = r.median
        t = pair.drill.child["times"]
        gx_share = t["gx_import"] / pair.drill.process.wall_s
        print(f"{r.size_mb:>4} MB {r.backup.format:>6}  drill {pair.ratio:.2f}× the bare restore (target ≤ "
              f"{RATIO_TARGET}×): {'PASS' if pair.ratio <= RATIO_TARGET else 'MISS'};  without interpreter start "
              f"and GX import {pair.steps_ratio:.2f}×: {'PASS' if pair.steps_ratio <= RATIO_TARGET else 'MISS'};  "
              f"GX import {t['gx_import']:.1f} s = {gx_share:.0%} of the drill")


# ---------------------------------------------------------------------------- main


def parse_formats(text: str) -> list[str]:
    """``"plain,custom"`` → ``["plain", "custom"]``."""
    formats = [part.strip() for part in text.split(",") if part.strip()]
    if not formats or any(f not in FORMATS for f in formats):
        raise argparse.ArgumentTypeError(f"--formats takes plain and/or custom separated by commas, got {text!r}")
    return formats


def main() -> None:
    """Parse the command line, then either run the benchmark or, with ``--child``, one measured drill."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[100, 1000],
                        help="database sizes in MB, comma-separated (default: 100,1000)")
    parser.add_argument("--formats", type=parse_formats, default=list(FORMATS),
                        help="dump formats, comma-separated (default: plain,custom)")
    parser.add_argument("--repeat", type=positive_int, default=1,
                        help="baseline+drill pairs per size and format; the median ratio counts (default: 1)")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the PostgreSQL cluster, dumps and archives in the work directory")
    parser.add_argument("--exact-checks", choices=("sql", "great_expectations"), default="sql",
                        help="where the drill checks row counts and columns (restore_drill.exact_checks; default: sql)")
    parser.add_argument("--results", type=Path, default=_REPO / "docs" / "bench" / "restore_drill.json",
                        help="where to write every repeat's raw results (default: docs/bench/restore_drill.json)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    EXACT_CHECKS[0] = args.exact_checks
    if args.child:
        child_main()
        return

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from devtools.pgserver import EmbeddedPostgres

    workdir = Path(tempfile.mkdtemp(prefix="backup-ops-bench-restore-"))
    workdir.chmod(0o711)  # the server's OS user must traverse it when the cluster lives in it (--keep-data)
    pg = EmbeddedPostgres(data_dir=workdir / "pgdata" if args.keep_data else None)
    results: list[FormatResult] = []
    try:
        pg.start()
        versions = "; ".join(subprocess.run([str(pg.bin_dir / tool), "--version"], capture_output=True, text=True,
                                            check=True).stdout.strip() for tool in ("psql", "pg_restore"))
        print(f"Work directory {workdir}; {machine_summary()}", flush=True)
        for size_mb in args.sizes:
            results += measure_size(pg, size_mb, args.formats, args.repeat, workdir, args.keep_data)
    finally:
        pg.stop()
        if args.keep_data:
            print(f"Kept {workdir} (cluster in pgdata/, dumps and archives in <size>mb/)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print_report(results, versions)
    if args.results is not None:
        write_results(args.results, results, versions, args)


def write_results(path: Path, results: list[FormatResult], versions: str, args: argparse.Namespace) -> None:
    """Every repeat's raw measurements as JSON, so a later run can be compared with this one."""
    data = {
        "benchmark": "restore_drill", "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_summary(), "versions": versions, "exact_checks": EXACT_CHECKS[0],
        "ratio_target": RATIO_TARGET, "sizes": args.sizes, "formats": args.formats, "repeat": args.repeat,
        "results": [{
            "size_mb": r.size_mb, "format": r.backup.format, "db_bytes": r.db_bytes,
            "archive_bytes": r.backup.archive_bytes, "dump_bytes": r.backup.dump_bytes, "rows": r.backup.rows,
            "tables": r.backup.tables, "load_averages": r.load_averages,
            "median": {"ratio": round(r.median.ratio, 3), "steps_ratio": round(r.median.steps_ratio, 3)},
            "peak_rss_mb": r.peak_rss_mb,
            "repeats": [{"baseline": {"wall_s": round(p.baseline.process.wall_s, 3),
                                      "cpu_s": round(p.baseline.process.cpu_s, 3),
                                      "peak_rss_mb": p.baseline.process.peak_rss_mb},
                         "drill": {"wall_s": round(p.drill.process.wall_s, 3), "cpu_s": round(p.drill.process.cpu_s, 3),
                                   "peak_rss_mb": p.drill.process.peak_rss_mb, "child": p.drill.child},
                         "ratio": round(p.ratio, 3), "steps_ratio": round(p.steps_ratio, 3)} for p in r.pairs],
        } for r in results],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    print(f"Raw results written to {path}")


if __name__ == "__main__":
    main()
