"""Benchmark: backup_daily's production steps against bare ``pg_dump`` and the usual compressors; many small files.

Run with ``make bench`` (``.venv/bin/python bench/backup_throughput.py``) from the repository root.
One throwaway PostgreSQL (``devtools.pgserver``) holds a database per size, filled with the
invoicing sample data (``devtools.sample_data.grow_to_size``) and vacuumed. Per size and repeat,
against the same database and back to back, it runs

* **floor**: ``pg_dump -Fp > file``, the server's and pg_dump's own cost;
* ``pg_dump -Fp | gzip -6`` (what laravel-backup runs), ``| pigz -6`` (when pigz is on PATH) and
  ``| python -m isal.igzip -3`` (ISA-L), as bash pipelines with the same pg_dump, the connection
  in ``PG*`` variables;
* **backup-ops**: the default profile through the production step functions of
  ``backup_ops.airflow.backup_steps``, called as backup_daily's tasks call them, in a child
  process of its own (``--child``). Its config is a YAML file written here from the shipped
  ``include/backup_config.yaml`` (format, compression, encryption, compression level), with a
  local destination on the staging file system, loaded with ``load_config``; the database is an
  ``AIRFLOW_CONN_<ID>`` URI and the archive password the Airflow Variable the shipped config names
  (``AIRFLOW_VAR_<NAME>``). The child imports Airflow and everything the steps import, and looks
  the connection and the password up once, before its clock starts: what a worker pays once.
  **steps** is the wall time of the step calls; **whole** is the child's wall time, start-up
  included.

Then, with ``--files N`` (default 10,000; 0 skips it), an uploads folder of N small files
(1–50 KB: PDFs, JPEGs and PNGs as random bytes, text exports) goes through ``collect_files``,
``build_archive`` and ``publish`` the same way, a second time under cProfile to show where the time
goes, and the WinZip AES key derivation is timed on its own.

The raw results (every repeat of every contender, versions, machine, date) are written as JSON to
``--results`` (default ``docs/bench/backup_throughput.json``), and the ratios are compared with
the file found there before. The targets (issue 11) are reported as PASS or MISS; the exit status
is 0 unless something failed, because a benchmark reports and does not gate.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Any

# Runs standalone from the repository root; backup_ops and devtools are imported where used, after this.
_REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_REPO), str(_REPO / "plugins")]

if TYPE_CHECKING:
    from devtools.pgserver import EmbeddedPostgres

MB = 1_000_000
RSS_TARGET_MB = 150.0
RSS_FLAT_TOLERANCE = 0.10  # "flat with size": the largest size's peak at most 10 % above the smallest's
DUMP_SIZE_TARGET = 1.06  # the dump at most 6 % larger than gzip -6's
GZIP_RATIO_EXPECTED = 0.3
DEFAULT_RESULTS = _REPO / "docs" / "bench" / "backup_throughput.json"
SHIPPED_CONFIG = _REPO / "include" / "backup_config.yaml"
BENCH_PASSWORD = "bench-archive-password"  # protects throwaway sample data only
BENCH_CONN_ID = "bench_db"
BACKUP_NAME = "bench"
DAG_ID = "backup_daily"
KDF_SAMPLES = 200


def steps_target(size_mb: int) -> float:
    """The issue's target for steps / floor: 1.25× at 1 GB, 1.5× at 100 MB (sizes between take 1.5×)."""
    return 1.25 if size_mb >= 1000 else 1.5


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
    """This environment without inherited ``PG*``, ``AIRFLOW_*`` and ``BACKUP_OPS_*`` variables, plus ``extra``."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "AIRFLOW_", "BACKUP_OPS_"))}
    return {**inherited, **extra}


# ---------------------------------------------------------------------------- the pipelines


@dataclass(frozen=True)
class Pipeline:
    """One shell contender: a bash pipeline from pg_dump to ``$BENCH_OUT``."""

    key: str
    label: str
    script: str  # run by bash; pipefail makes a failing pg_dump fail the pipeline instead of leaving a short file
    needs: str | None = None  # a program that must be on PATH


PIPELINES = (
    Pipeline("floor", "pg_dump -Fp > file", '"$BENCH_PG_DUMP" -Fp > "$BENCH_OUT"'),
    Pipeline("gzip6", "pg_dump -Fp | gzip -6", 'set -o pipefail; "$BENCH_PG_DUMP" -Fp | gzip -6 > "$BENCH_OUT"',
             "gzip"),
    Pipeline("pigz6", "pg_dump -Fp | pigz -6", 'set -o pipefail; "$BENCH_PG_DUMP" -Fp | pigz -6 > "$BENCH_OUT"',
             "pigz"),
    Pipeline("isal3", "pg_dump -Fp | python -m isal.igzip -3",
             'set -o pipefail; "$BENCH_PG_DUMP" -Fp | "$BENCH_PYTHON" -m isal.igzip -3 > "$BENCH_OUT"'),
)
BACKUP_KEY = "backup_ops"


def available(pipeline: Pipeline) -> bool:
    return pipeline.needs is None or shutil.which(pipeline.needs) is not None


def run_pipeline(pipeline: Pipeline, pg: EmbeddedPostgres, dbname: str, out: Path) -> dict[str, Any]:
    """Run one pipeline into ``out``; its wall time, CPU seconds, peak RSS and output size."""
    env = clean_env({**pg.psql_env(dbname), "BENCH_PG_DUMP": str(pg.bin_dir / "pg_dump"), "BENCH_OUT": str(out),
                     "BENCH_PYTHON": sys.executable})
    process = run_measured(["bash", "-c", pipeline.script], env)
    size = out.stat().st_size
    out.unlink()
    return {"wall_s": round(process.wall_s, 3), "cpu_s": round(process.cpu_s, 3),
            "peak_rss_mb": round(process.peak_rss_mb, 1), "output_bytes": size}


# ---------------------------------------------------------------------------- the backup-ops config


def shipped_defaults() -> dict[str, Any]:
    """The shipped config's database format and compression, encryption and archive compression level."""
    import yaml

    backup = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))["backup"]
    database = backup["source"]["databases"][0]
    database = {"conn_id": database} if isinstance(database, str) else dict(database)
    picked = {k: database[k] for k in ("format", "compression") if k in database}
    return {"database": picked, "encryption": backup.get("encryption", "aes256"),
            "compression_level": backup.get("destination", {}).get("compression_level", 6),
            "password": backup.get("password") or {"variable": "backup_archive_password"}}


def write_config(path: Path, *, run_dir: Path, pg_bin_dir: Path, app_root: Path | None,
                 includes: list[str]) -> dict[str, Any]:
    """Write the bench's backup config (shipped defaults, this run's folders) to ``path``; returns its content."""
    import yaml

    defaults = shipped_defaults()
    files: dict[str, Any] = {"include": includes}
    if app_root is not None:
        files["relative_path"] = str(app_root)
    config = {"backup": {
        "name": BACKUP_NAME,
        "source": {"files": files,
                   "databases": [{"conn_id": BENCH_CONN_ID, **defaults["database"]}],
                   "pg_bin_dir": str(pg_bin_dir)},
        # Staging and destination share the run's folder: one file system, as the default profile assumes.
        "destination": {"compression_level": defaults["compression_level"],
                        "destinations": [{"name": "local", "type": "local", "path": str(run_dir / "destination")}]},
        "staging_directory": str(run_dir / "staging"),
        "password": defaults["password"],
        "encryption": defaults["encryption"],
    }}
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return config


def password_env(config: dict[str, Any]) -> dict[str, str]:
    """The environment variable that gives the config's password reference the bench password, as Airflow reads it."""
    ref = config["backup"]["password"]
    if "variable" in ref:
        return {f"AIRFLOW_VAR_{ref['variable'].upper()}": BENCH_PASSWORD}
    if "env" in ref:
        return {ref["env"]: BENCH_PASSWORD}
    return {f"AIRFLOW_CONN_{ref['connection'].upper()}": json.dumps({"conn_type": "generic",
                                                                       "password": BENCH_PASSWORD})}


@dataclass(frozen=True)
class ChildSetup:
    """Where one backup-ops child runs: its config and environment."""

    run_dir: Path
    env: dict[str, str]


def prepare_child(workdir: Path, name: str, *, pg: EmbeddedPostgres, dbname: str, app_root: Path | None = None,
                  includes: tuple[str, ...] = ()) -> ChildSetup:
    """A run folder with the config the child loads, and the child's environment (connection, password, config)."""
    run_dir = workdir / name
    run_dir.mkdir(mode=0o700)
    (run_dir / "destination").mkdir()
    config_file = run_dir / "backup_config.yaml"
    config = write_config(config_file, run_dir=run_dir, pg_bin_dir=pg.bin_dir, app_root=app_root,
                          includes=list(includes))
    env = clean_env({
        "BACKUP_OPS_CONFIG": str(config_file),
        f"AIRFLOW_CONN_{BENCH_CONN_ID.upper()}": pg.conn_uri(dbname),
        **password_env(config),
        "AIRFLOW_HOME": str(workdir / "airflow_home"),
        "BACKUP_OPS_DISABLE_DEADLINES": "1",
    })
    return ChildSetup(run_dir, env)


def whole_s(process: ProcessRun, child: dict[str, Any]) -> float:
    """The child's wall time without the bench's own bookkeeping after the steps (cleanup, KDF timing, profile)."""
    return round(process.wall_s - child["bookkeeping_s"], 3)


def run_child(setup: ChildSetup, spec: dict[str, Any]) -> tuple[ProcessRun, dict[str, Any]]:
    """Run this file with ``--child`` and the spec on stdin; the process measurements and what the child reported."""
    process = run_measured([sys.executable, str(Path(__file__).resolve()), "--child"], setup.env,
                           json.dumps(spec).encode())
    return process, json.loads(process.stdout.decode().strip().splitlines()[-1])


# ---------------------------------------------------------------------------- the child: a backup as the tasks run it


# Modules the steps import lazily, imported before the clock starts (a worker has them loaded once).
WARM_MODULES = (
    "airflow.sdk", "backup_ops.airflow.operators", "backup_ops.airflow.backup_steps", "backup_ops.airflow.staging",
    "backup_ops.adapters.postgres.dump", "backup_ops.adapters.postgres.target", "backup_ops.adapters.secrets",
    "backup_ops.adapters.destinations.factory", "backup_ops.adapters.destinations.local",
    "backup_ops.core.archive", "backup_ops.core.archive_read", "backup_ops.core.manifest", "backup_ops.core.files",
    "backup_ops.core.compression", "backup_ops.core.skips", "backup_ops.core.aes_keys",
    "psycopg", "pyzipper", "isal.isal_zlib", "isal.igzip_threaded", "zstandard", "Cryptodome.Cipher.AES",
    "Cryptodome.Hash.HMAC", "Cryptodome.Protocol.KDF", "Cryptodome.Cipher._mode_ctr", "encodings.cp437", "yaml",
)


class _Captured(logging.Handler):
    """Keeps the steps' log messages (never secrets: backup-ops keeps them out of logs by design)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def seconds(self, prefix: str, pattern: str) -> float | None:
        """The seconds the last message starting with ``prefix`` reports: its float argument at full precision
        (the message rounds to 0.1 s), else what ``pattern`` (one group) finds in the message."""
        found = [r for r in self.records if isinstance(r.msg, str) and r.msg.startswith(prefix)]
        if not found:
            return None
        args = found[-1].args if isinstance(found[-1].args, tuple) else ()
        floats = [a for a in args if isinstance(a, float)]
        if len(floats) == 1:
            return round(floats[0], 3)
        match = re.search(pattern, found[-1].getMessage())
        return float(match.group(1)) if match else None


def warm_up(conn_id: str) -> dict[str, Any]:
    """Import what the tasks import and look the connection and password up once, as a worker has done."""
    import importlib

    from backup_ops.core.config import load_config

    missing = []
    for module in WARM_MODULES:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    from backup_ops.adapters.postgres.target import target_from_connection
    from backup_ops.adapters.secrets import resolve_secret

    config = load_config()  # what parsing dags/backup_daily.py does (CONFIG)
    # The first lookup loads Airflow's secrets backends (and, outside a task, probes for a metadata DB).
    target_from_connection(conn_id)
    resolve_secret(config.backup.password)
    return {"missing_modules": missing}


@dataclass
class StepClock:
    """Per step: wall seconds, CPU seconds of this process (every thread) and of the calling thread alone.

    The calling thread's CPU is the step's critical path where work runs in threads beside it
    (compression, key derivation): on a machine with idle cores the wall time approaches it.
    """

    wall: dict[str, float] = field(default_factory=dict)
    cpu_process: dict[str, float] = field(default_factory=dict)
    cpu_thread: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        began, process, thread = time.perf_counter(), time.process_time(), time.thread_time()
        try:
            yield
        finally:
            spent = ((self.wall, time.perf_counter() - began), (self.cpu_process, time.process_time() - process),
                     (self.cpu_thread, time.thread_time() - thread))
            for into, value in spent:
                into[name] = round(into.get(name, 0.0) + value, 3)


def run_steps(clock: StepClock, params: dict[str, Any], run_id: str) -> dict[str, Any]:
    """backup_daily's tasks in their order, each step called as its task calls it; returns their results.

    TaskFlow tasks get the config the DAG file read at parse time; the classic operators
    (dump_database, publish) read it again in ``execute``, so this does too.
    """
    from backup_ops.adapters.destinations.factory import make_destination
    from backup_ops.adapters.staging_store import StagedRun
    from backup_ops.airflow import backup_steps as steps
    from backup_ops.airflow import staging
    from backup_ops.core.config import load_config

    config = load_config()  # the DAG file's CONFIG
    with clock.step("plan"):
        staging_dir = staging.prepare_staging(config, DAG_ID, run_id)
        planned = steps.plan(config, params, staging_dir)
    with clock.step("preflight"):
        databases = steps.check_databases(config, planned["databases"])
        destinations = steps.check_destinations(config, planned["destinations"])
    dumps = []
    with clock.step("dump"):
        for conn_id in databases:  # DumpDatabaseOperator.execute
            task_config = load_config()
            staged = StagedRun.of(task_config, planned["staging_dir"])
            with staged.workdir() as work:
                job = steps.dump_job(task_config, conn_id, str(work), sealed=staged.remote)
                dumps.append(steps.dump_database(job, conn_id, staged))
    with clock.step("files"):
        files = steps.collect_files(config, planned["staging_dir"], planned["include_files"])
    run = {"dag_id": DAG_ID, "run_id": run_id, "logical_date": ""}
    with clock.step("archive"):
        archive = steps.build_archive(config, planned, dumps, files, run)
    published = []
    with clock.step("publish"):
        for name in destinations:  # PublishBackupOperator.execute
            task_config = load_config()
            dest = make_destination(task_config.destination(name), task_config.backup.name)
            published.append(steps.publish(dest, archive, StagedRun.of(task_config, planned["staging_dir"])))
    return {"config": config, "staging_dir": staging_dir, "dumps": dumps, "files": files, "archive": archive,
            "published": published}


def backup_in_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Warm up, run the steps (optionally under cProfile), and report timings, sizes and memory."""
    from backup_ops.core.models import DumpResult

    warm = warm_up(BENCH_CONN_ID)
    warm_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    loaded = set(sys.modules)
    captured = _Captured()
    step_log = logging.getLogger("backup_ops.airflow.backup_steps")
    step_log.setLevel(logging.INFO)
    step_log.propagate = False  # its INFO summaries are captured; only warnings go to stderr
    step_log.addHandler(captured)
    warnings_out = logging.StreamHandler(sys.stderr)
    warnings_out.setLevel(logging.WARNING)
    step_log.addHandler(warnings_out)

    params = {"only_files": spec["mode"] == "files"}
    clock = StepClock()
    profiler = None
    if spec.get("profile"):
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    began = time.perf_counter()
    outcome = run_steps(clock, params, f"bench__{spec['mode']}__{time.time_ns()}")
    steps_s = time.perf_counter() - began
    if profiler is not None:
        profiler.disable()
    finished = time.perf_counter()  # what follows is the bench's bookkeeping, not the backup's

    from backup_ops.adapters.destinations.factory import make_destination

    archive = outcome["archive"]
    config = outcome["config"]
    destination = make_destination(config.destination(outcome["published"][0]["destination"]), config.backup.name)
    published = destination.local_path(outcome["published"][0]["path"])
    linked = published is not None and Path(archive["path"]).stat().st_ino == published.stat().st_ino
    dump_bytes = None
    rows = None
    if outcome["dumps"]:
        result = DumpResult.from_dict(json.loads(Path(outcome["dumps"][0]["result_file"]).read_text()))
        dump_bytes, rows = result.size, result.total_rows
    report: dict[str, Any] = {
        "steps_s": round(steps_s, 3),
        "times": clock.wall,
        "cpu_process_s": clock.cpu_process,  # this process, all threads (not pg_dump: see cpu_s of the whole)
        "cpu_main_thread_s": clock.cpu_thread,
        "build_s": captured.seconds("Built ", r" in ([0-9.]+) s"),
        "dump_bytes": dump_bytes,
        "rows": rows,
        "archive_bytes": archive["size"],
        "members": archive["members"],
        "files": {k: v for k, v in outcome["files"].items() if k != "listing"},  # not the temporary path
        "published_by_hard_link": linked,
        "modules_imported_during_steps": sorted(set(sys.modules) - loaded),
        "missing_warm_modules": warm["missing_modules"],
        # Linux reports ru_maxrss in KiB. RUSAGE_CHILDREN covers pg_dump and the tools, reaped by now; a
        # forked child counts the pages it shares with this process until it execs, so this is at least
        # about warm_rss_mb whatever pg_dump itself needs (the pipelines' peak RSS shows pg_dump's).
        "warm_rss_mb": round(warm_rss, 1),
        "self_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "tools_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "tool_versions": _tool_versions(),
    }
    if profiler is not None:
        report["profile"] = profile_breakdown(profiler, steps_s)
    if spec.get("kdf"):
        report["kdf"] = time_key_derivation(BENCH_PASSWORD.encode(), config.backup.encryption)
    if not spec.get("keep"):
        from backup_ops.airflow import staging

        staging.remove_staging(config, outcome["staging_dir"], archive=archive, missing_destinations=[])
        if published is not None:
            published.unlink()
    report["bookkeeping_s"] = round(time.perf_counter() - finished, 3)
    return report


def _tool_versions() -> dict[str, str]:
    from backup_ops.airflow.backup_steps import tool_versions

    versions = dict(tool_versions())
    for module, attr in (("isal", "__version__"), ("Cryptodome", "__version__"), ("psycopg", "__version__"),
                         ("zstandard", "__version__")):
        try:
            versions[module] = str(getattr(__import__(module), attr))
        except ImportError:
            continue
    import zlib

    versions["zlib"] = zlib.ZLIB_RUNTIME_VERSION
    return versions


# ---------------------------------------------------------------------------- where the time goes (child)


# (category, how): "tt" sums the own time of matching functions (C builtins: nothing below them),
# "ct" the cumulative time of matching Python functions (everything they call). Matched on
# "file:function" of pstats' keys; the categories do not nest in one another.
PROFILE_CATEGORIES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("key derivation, writing (PBKDF2 in the AES encrypter, or waiting for a pre-derived key)", "ct",
     ("zipfile_aes.py:__init__@AESZipEncrypter", "aes_keys.py:take")),
    ("key derivation, verifying (PBKDF2 in the AES decrypter)", "ct", ("zipfile_aes.py:__init__@AESZipDecrypter",)),
    ("AES-CTR encrypt/decrypt", "ct", ("_mode_ctr.py:encrypt", "_mode_ctr.py:decrypt")),
    ("HMAC-SHA1 (update, digest)", "ct", ("HMAC.py:update", "HMAC.py:digest", "HMAC.py:hexdigest")),
    ("deflate", "tt", ("~:<method 'compress' of 'zlib.Compress' objects>",
                       "~:<method 'flush' of 'zlib.Compress' objects>", "~:<built-in method zlib.compressobj>")),
    ("inflate (verify)", "tt", ("~:<method 'decompress' of 'zlib.Decompress' objects>",
                                "~:<method 'flush' of 'zlib.Decompress' objects>",
                                "~:<built-in method zlib.decompressobj>")),
    ("sha256", "tt", ("~:<method 'update' of '_hashlib.HASH' objects>",
                      "~:<method 'hexdigest' of '_hashlib.HASH' objects>",
                      "~:<built-in method _hashlib.openssl_sha256>")),
    ("crc32", "tt", ("~:<built-in method zlib.crc32>",)),
    ("reading files (read)", "tt", ("~:<method 'read' of '_io.FileIO' objects>", "~:<built-in method posix.read>",
                                    "~:<method 'readinto' of '_io.FileIO' objects>",
                                    "~:<method 'read' of '_io.BufferedReader' objects>")),
    ("listing, opening, stat (lstat, open, fstat, scandir)", "tt", (
        "~:<built-in method posix.lstat>", "~:<built-in method posix.stat>", "~:<built-in method posix.fstat>",
        "~:<built-in method posix.open>", "~:<built-in method posix.scandir>", "~:<built-in method posix.close>",
        "~:<built-in method io.open>", "~:<built-in method posix.openat>")),
    ("writing the archive (write, fsync)", "tt", ("~:<built-in method posix.write>",
                                                   "~:<built-in method posix.fsync>",
                                                   "~:<method 'write' of '_io.FileIO' objects>")),
    ("JSON listing (collect_files writes it, build_archive reads it)", "tt", (
        "~:<built-in method _json.encode_basestring_ascii>", "~:<method 'encode' of '_json.Encoder' objects>",
        "~:<built-in method _json.scanstring>", "~:<method 'scan_once' of '_json.Scanner' objects>",
        "json/encoder.py:iterencode", "json/decoder.py:raw_decode")),
)


def _profile_key(key: tuple[str, int, str]) -> str:
    filename, _, function = key
    return f"{'~' if filename == '~' else Path(filename).name}:{function}"


def profile_breakdown(profiler: Any, steps_s: float) -> dict[str, Any]:
    """Seconds per category (PROFILE_CATEGORIES) of the profiled steps, and the top functions by own time."""
    import pstats

    stats = pstats.Stats(profiler)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, Any]] = stats.stats  # type: ignore[attr-defined]
    by_name: dict[str, list[tuple[float, float, tuple[str, int, str]]]] = {}
    for key, (_, _, tt, ct, _) in raw.items():
        by_name.setdefault(_profile_key(key), []).append((tt, ct, key))
    classes = _encrypter_classes(raw)
    seconds: dict[str, float] = {}
    used: set[tuple[str, int, str]] = set()
    for category, how, names in PROFILE_CATEGORIES:
        total = 0.0
        for name in names:
            base, _, owner = name.partition("@")
            for tt, ct, key in by_name.get(base, []):
                if key in used or (owner and classes.get(key) != owner):
                    continue
                used.add(key)
                total += tt if how == "tt" else ct
        seconds[category] = round(total, 3)
    profiled = sum(tt for _, _, tt, _, _ in raw.values())
    cumulative = {name: round(max((ct for _, ct, _ in by_name.get(name, [])), default=0.0), 3)
                  for name in ("archive.py:build_archive", "archive_read.py:verify_archive",
                               "backup_steps.py:collect_files", "backup_steps.py:publish",
                               "backup_steps.py:dump_database", "backup_steps.py:plan")}
    top = sorted(raw.items(), key=lambda item: item[1][2], reverse=True)[:25]
    return {
        "profiled_s": round(profiled, 3),
        "unprofiled_steps_s": round(steps_s, 3),
        "categories_s": seconds,
        "other_python_s": round(profiled - sum(seconds.values()), 3),
        "cumulative_s": cumulative,
        "top_own_time": [{"function": _profile_key(key), "calls": value[1], "own_s": round(value[2], 3),
                          "cumulative_s": round(value[3], 3)} for key, value in top],
    }


def _encrypter_classes(raw: dict[tuple[str, int, str], Any]) -> dict[tuple[str, int, str], str]:
    """Which pyzipper class each ``zipfile_aes.py:__init__`` key belongs to (told apart by line number)."""
    import inspect

    from pyzipper import zipfile_aes

    owners = {}
    for cls in (zipfile_aes.AESZipEncrypter, zipfile_aes.AESZipDecrypter):
        line = inspect.getsourcelines(cls.__init__)[1]
        owners[line] = cls.__name__
    return {key: owners[key[1]] for key in raw if key[2] == "__init__" and key[0].endswith("zipfile_aes.py")
            and key[1] in owners}


def time_key_derivation(password: bytes, encryption: str) -> dict[str, Any]:
    """Milliseconds per WinZip AES key derivation: pyzipper's encrypter set-up, plain PBKDF2, and backup-ops' pool."""
    import hashlib

    from Cryptodome.Protocol.KDF import PBKDF2
    from pyzipper.zipfile_aes import AESZipEncrypter

    secret: Any = password  # pycryptodome takes bytes; its stubs say str
    nbits = {"aes128": 128, "aes192": 192, "aes256": 256}.get(encryption, 256)
    key_length, salt_length = nbits // 8, {128: 8, 192: 12, 256: 16}[nbits]
    dk_len = 2 * key_length + 2

    def per_call(fn: Callable[[], object]) -> float:
        fn()
        began = time.perf_counter()
        for _ in range(KDF_SAMPLES):
            fn()
        return round((time.perf_counter() - began) / KDF_SAMPLES * 1000, 3)

    result: dict[str, Any] = {
        "samples": KDF_SAMPLES,
        "pyzipper_encrypter_init_ms": per_call(lambda: AESZipEncrypter(password, nbits=nbits)),
        "pycryptodome_pbkdf2_ms": per_call(lambda: PBKDF2(secret, os.urandom(salt_length), count=1000,
                                                          dkLen=dk_len)),
        "hashlib_pbkdf2_ms": per_call(lambda: hashlib.pbkdf2_hmac("sha1", password, os.urandom(salt_length), 1000,
                                                                  dk_len)),
    }
    try:
        from backup_ops.core.aes_keys import AESKeyPool
    except ImportError:
        return result
    with AESKeyPool(password, nbits) as pool:
        result["pool_workers"] = pool.workers
        result["pool_take_ms"] = per_call(pool.take)  # keys taken back to back: the pool's throughput
    return result


def child_main() -> None:
    """``--child``: read the spec from stdin, run one backup, print the measurements as one JSON line."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="child: %(levelname)s %(message)s")
    spec = json.loads(sys.stdin.read())
    print(json.dumps(backup_in_child(spec)), flush=True)


# ---------------------------------------------------------------------------- one database size


@dataclass
class SizeResult:
    """Everything measured for one database size: every repeat of every contender."""

    size_mb: int
    db_bytes: int
    load_s: float
    repeats: list[dict[str, Any]] = field(default_factory=list)

    def ratios(self, repeat: dict[str, Any]) -> dict[str, float]:
        """The ratios of one repeat (taken within the repeat: load moves its contenders together)."""
        c = repeat["contenders"]
        floor, gzip6, backup = c["floor"]["wall_s"], c["gzip6"]["wall_s"], c[BACKUP_KEY]
        ratios = {"steps_over_floor": backup["steps_s"] / floor, "whole_over_floor": backup["whole_s"] / floor,
                  "steps_over_gzip6": backup["steps_s"] / gzip6, "whole_over_gzip6": backup["whole_s"] / gzip6,
                  "dump_over_gzip6_size": backup["dump_bytes"] / c["gzip6"]["output_bytes"]}
        if "isal3" in c:
            ratios["steps_over_isal3"] = backup["steps_s"] / c["isal3"]["wall_s"]
        return {k: round(v, 3) for k, v in ratios.items()}

    def median_ratios(self) -> dict[str, float]:
        per_repeat = [self.ratios(r) for r in self.repeats]
        return {k: round(median(r[k] for r in per_repeat), 3) for k in per_repeat[0]}

    @property
    def representative(self) -> dict[str, Any]:
        """The repeat with the median steps/floor ratio (the higher middle one for an even count: no flattery)."""
        ranked = sorted(self.repeats, key=lambda r: self.ratios(r)["steps_over_floor"])
        return ranked[len(ranked) // 2]

    @property
    def peak_rss_mb(self) -> float:
        return max(r["contenders"][BACKUP_KEY]["peak_rss_mb"] for r in self.repeats)

    def to_json(self) -> dict[str, Any]:
        return {"size_mb": self.size_mb, "db_bytes": self.db_bytes, "load_s": round(self.load_s, 1),
                "repeats": [{**r, "ratios": self.ratios(r)} for r in self.repeats],
                "median_ratios": self.median_ratios(), "verdicts": self.verdicts()}

    def verdicts(self) -> dict[str, dict[str, Any]]:
        m = self.median_ratios()
        target = steps_target(self.size_mb)
        return {
            "steps_over_floor": {"value": m["steps_over_floor"], "target": f"<= {target}",
                                 "pass": m["steps_over_floor"] <= target},
            "dump_over_gzip6_size": {"value": m["dump_over_gzip6_size"], "target": f"<= {DUMP_SIZE_TARGET}",
                                     "pass": m["dump_over_gzip6_size"] <= DUMP_SIZE_TARGET},
            "peak_rss_mb": {"value": self.peak_rss_mb, "target": f"< {RSS_TARGET_MB:.0f}",
                            "pass": self.peak_rss_mb < RSS_TARGET_MB},
            "steps_over_gzip6": {"value": m["steps_over_gzip6"], "target": f"<= {GZIP_RATIO_EXPECTED} (expected)",
                                 "pass": m["steps_over_gzip6"] <= GZIP_RATIO_EXPECTED},
        }


def measure_size(pg: EmbeddedPostgres, size_mb: int, repeat: int, workdir: Path, keep_data: bool) -> SizeResult:
    """Create and fill a database of ``size_mb``, then run every contender ``repeat`` times against it."""
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
    # One unmeasured read, so the first contender does not pay for a cold page cache alone.
    subprocess.run(["bash", "-c", '"$BENCH_PG_DUMP" -Fp > /dev/null'], check=True,
                   env=clean_env({**pg.psql_env(dbname), "BENCH_PG_DUMP": str(pg.bin_dir / "pg_dump")}))

    for attempt in range(1, repeat + 1):
        loads = [os.getloadavg()[0]]
        contenders: dict[str, Any] = {}
        # The floor and backup-ops run next to each other: their ratio is the target.
        contenders["floor"] = run_pipeline(PIPELINES[0], pg, dbname, workdir / "floor.sql")
        loads.append(os.getloadavg()[0])
        setup = prepare_child(workdir, f"{size_mb}mb-run{attempt}", pg=pg, dbname=dbname)
        process, child = run_child(setup, {"mode": "database", "keep": keep_data})
        contenders[BACKUP_KEY] = {"wall_s": round(process.wall_s, 3), "whole_s": whole_s(process, child),
                                  "cpu_s": round(process.cpu_s, 3),
                                  "peak_rss_mb": round(process.peak_rss_mb, 1), "output_bytes": child["archive_bytes"],
                                  **child}
        loads.append(os.getloadavg()[0])
        for pipeline in PIPELINES[1:]:
            if available(pipeline):
                contenders[pipeline.key] = run_pipeline(pipeline, pg, dbname, workdir / f"{pipeline.key}.out")
                loads.append(os.getloadavg()[0])
        record = {"repeat": attempt, "load_average_1m": loads, "contenders": contenders}
        result.repeats.append(record)
        r = result.ratios(record)
        print(f"[{size_mb} MB] run {attempt}/{repeat}: floor {contenders['floor']['wall_s']:.2f} s, backup-ops steps "
              f"{child['steps_s']:.2f} s ({r['steps_over_floor']:.2f}×), whole "
              f"{contenders[BACKUP_KEY]['whole_s']:.2f} s, gzip -6 {contenders['gzip6']['wall_s']:.2f} s; "
              f"split {child['times']}", flush=True)
        if not keep_data:
            shutil.rmtree(setup.run_dir)
    if not keep_data:
        pg.drop_database(dbname)
    return result


# ---------------------------------------------------------------------------- many small files


# (kind, share of the files, suffix, header): binary kinds are random bytes (incompressible, stored as
# already compressed by their suffix); text kinds are invoice lines (deflated).
UPLOAD_KINDS = (
    ("invoice PDF", 0.40, ".pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"),
    ("photo JPEG", 0.20, ".jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"),
    ("logo PNG", 0.10, ".png", b"\x89PNG\r\n\x1a\n"),
    ("CSV export", 0.20, ".csv", b""),
    ("note / HTML", 0.10, ".html", b""),
)
MIN_FILE, MAX_FILE = 1_000, 50_000


def build_uploads(root: Path, count: int, seed: int = 11) -> dict[str, Any]:
    """Write ``count`` small files (sizes log-uniform 1–50 KB) below ``root``; returns counts and bytes per kind."""
    rng = random.Random(seed)
    words = [f"{w}{i}" for i, w in enumerate(("invoice", "customer", "amount", "tax", "due", "paid", "EUR",
                                              "net", "gross", "item", "qty", "discount"))]
    lines = [f"INV-{rng.randint(1, 99999):05d};{rng.choice(words)};{rng.randint(1, 5000)}.{rng.randint(0, 99):02d};"
             f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d};{' '.join(rng.choices(words, k=4))}\n"
             for _ in range(4000)]
    kinds: dict[str, dict[str, int]] = {}
    for n in range(count):
        kind, _, suffix, header = rng.choices(UPLOAD_KINDS, weights=[k[1] for k in UPLOAD_KINDS])[0]
        size = int(MIN_FILE * (MAX_FILE / MIN_FILE) ** rng.random())
        if header:
            data = header + rng.randbytes(max(0, size - len(header)))
        else:
            text = "".join(rng.choices(lines, k=size // 60 + 1)).encode()
            data = (b"<html><body><pre>\n" + text if suffix == ".html" else text)[:size]
        folder = root / f"{'invoices' if suffix == '.pdf' else suffix[1:]}" / f"2026-{n % 12 + 1:02d}" / f"{n // 1200}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"upload-{n:06d}{suffix}").write_bytes(data)
        tally = kinds.setdefault(kind, {"files": 0, "bytes": 0})
        tally["files"] += 1
        tally["bytes"] += len(data)
    return {"files": count, "bytes": sum(k["bytes"] for k in kinds.values()), "kinds": kinds}


def measure_small_files(pg: EmbeddedPostgres, count: int, repeat: int, workdir: Path, keep_data: bool,
                        profile: bool) -> dict[str, Any]:
    """The uploads folder through collect_files, build_archive and publish: timed runs, then one under cProfile."""
    app = workdir / "app"
    uploads = app / "storage" / "app" / "public" / "uploads"
    print(f"[{count} files] writing the uploads folder …", flush=True)
    began = time.perf_counter()
    tree = build_uploads(uploads, count)
    print(f"[{count} files] {tree['bytes'] / MB:.0f} MB in {time.perf_counter() - began:.0f} s", flush=True)
    # The database connection is configured (the shipped profile has one) but only_files skips it.
    dbname = "postgres"
    runs = []
    passes = [False] * repeat + ([True] if profile else [])
    for attempt, profiled in enumerate(passes, start=1):
        setup = prepare_child(workdir, f"files-run{attempt}", pg=pg, dbname=dbname, app_root=app,
                              includes=("storage/app/public/uploads",))
        load = os.getloadavg()[0]
        process, child = run_child(setup, {"mode": "files", "keep": keep_data, "profile": profiled,
                                           "kdf": attempt == 1})
        record = {"repeat": attempt, "profiled": profiled, "load_average_1m": load, "wall_s": round(process.wall_s, 3),
                  "whole_s": whole_s(process, child),
                  "cpu_s": round(process.cpu_s, 3), "peak_rss_mb": round(process.peak_rss_mb, 1), **child}
        runs.append(record)
        t = child["times"]
        print(f"[{count} files] run {attempt}{' (cProfile)' if profiled else ''}: archive step {t['archive']:.2f} s "
              f"(build {child['build_s']} s), listing {t['files']:.2f} s, publish {t['publish']:.2f} s, "
              f"{child['members']} members", flush=True)
        if not keep_data:
            shutil.rmtree(setup.run_dir)
    if not keep_data:
        shutil.rmtree(app)
    return {"count": count, "tree": tree, "runs": runs}


# ---------------------------------------------------------------------------- report


def machine_summary() -> str:
    """CPU count and model, and the load average, for reading the numbers in context."""
    m = machine_info()
    one, five, fifteen = m["load_average"]
    return (f"{m['cpus']} × {m['cpu_model']}, Python {m['python']}, "
            f"load average {one:.2f} / {five:.2f} / {fifteen:.2f}")


def machine_info() -> dict[str, Any]:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), model)
    except OSError:
        pass
    memory = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as meminfo:
            memory = next((int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemTotal:")), None)
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "memory_bytes": memory, "python": platform.python_version(),
            "platform": platform.platform(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError:
        return "not installed"
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def pipeline_versions(pg: EmbeddedPostgres) -> dict[str, str]:
    import isal

    return {"pg_dump": tool_version([str(pg.bin_dir / "pg_dump"), "--version"]),
            "gzip": tool_version(["gzip", "--version"]),
            "pigz": tool_version(["pigz", "--version"]) if shutil.which("pigz") else "not installed",
            "isal": str(isal.__version__), "bash": tool_version(["bash", "--version"])}


def _mb(n: float | None) -> str:
    return "n/a" if n is None else f"{n / MB:.1f}"


def print_size_report(results: list[SizeResult]) -> None:
    """Per size: every contender of the median repeat, the backup's step split, ratios and verdicts."""
    for r in results:
        rep = r.representative
        c = rep["contenders"]
        floor = c["floor"]["wall_s"]
        backup = c[BACKUP_KEY]
        print()
        print(f"{r.size_mb} MB (database {r.db_bytes / MB:.0f} MB), repeat {rep['repeat']} of {len(r.repeats)} "
              f"(median steps/floor), load average {min(rep['load_average_1m']):.1f}–"
              f"{max(rep['load_average_1m']):.1f}")
        header = f"  {'contender':<44} {'wall s':>7} {'×floor':>7} {'CPU s':>7} {'peak RSS MB':>11} {'output MB':>9}"
        print(header)
        print("  " + "-" * (len(header) - 2))
        for pipeline in PIPELINES:
            if pipeline.key not in c:
                print(f"  {pipeline.label:<44} {'not installed':>7}")
                continue
            p = c[pipeline.key]
            print(f"  {pipeline.label:<44} {p['wall_s']:>7.2f} {p['wall_s'] / floor:>6.2f}× {p['cpu_s']:>7.2f} "
                  f"{p['peak_rss_mb']:>11.1f} {_mb(p['output_bytes']):>9}")
        steps = backup["steps_s"]
        print(f"  {'backup-ops steps (the step calls)':<44} {steps:>7.2f} {steps / floor:>6.2f}×"
              f" {'':>7} {'':>11} {_mb(backup['dump_bytes']):>9}")
        whole = backup["whole_s"]
        print(f"  {'backup-ops whole (child process)':<44} {whole:>7.2f} {whole / floor:>6.2f}× "
              f"{backup['cpu_s']:>7.2f} {backup['peak_rss_mb']:>11.1f} {_mb(backup['archive_bytes']):>9}")
        t = backup["times"]
        build = backup.get("build_s")
        print("  steps: " + ", ".join(f"{k} {v:.2f} s" for k, v in t.items())
              + (f" (archive: build {build:.2f} s + verify {t['archive'] - build:.2f} s)" if build is not None else ""))
        print("  CPU s per step, the backup process's threads / the calling thread alone: " + ", ".join(
            f"{k} {backup['cpu_process_s'][k]:.2f}/{backup['cpu_main_thread_s'][k]:.2f}" for k in t))
        print(f"  start-up and warm-up (whole − steps) {whole - steps:.2f} s; RSS after warm-up "
              f"{backup['warm_rss_mb']:.1f} MB, Python peak {backup['self_peak_rss_mb']:.1f} MB, its children's peak "
              f"{backup['tools_peak_rss_mb']:.1f} MB; published by hard link: {backup['published_by_hard_link']}")
        late = backup["modules_imported_during_steps"]
        if late:
            print(f"  modules first imported during the steps ({len(late)}): {', '.join(late[:12])}"
                  f"{' …' if len(late) > 12 else ''}")
    if not results:
        return
    print()
    print("Ratios (median over repeats of the ratio within each repeat) and targets (issue 11):")
    for r in results:
        m = r.median_ratios()
        v = r.verdicts()
        print(f"  {r.size_mb:>5} MB: steps/floor {m['steps_over_floor']:.2f}× (≤ {steps_target(r.size_mb)}×: "
              f"{_verdict(v['steps_over_floor'])}), whole/floor {m['whole_over_floor']:.2f}×, "
              f"steps/gzip-6 {m['steps_over_gzip6']:.2f}× (≤ {GZIP_RATIO_EXPECTED}× expected: "
              f"{_verdict(v['steps_over_gzip6'])}), whole/gzip-6 {m['whole_over_gzip6']:.2f}×, "
              f"dump/gzip-6 size {m['dump_over_gzip6_size']:.3f} (≤ {DUMP_SIZE_TARGET}: "
              f"{_verdict(v['dump_over_gzip6_size'])}), peak RSS {r.peak_rss_mb:.1f} MB (< {RSS_TARGET_MB:.0f}: "
              f"{_verdict(v['peak_rss_mb'])}); all steps/floor: "
              + " ".join(f"{r.ratios(x)['steps_over_floor']:.2f}" for x in r.repeats))
    flat = rss_flat(results)
    if flat is not None:
        print(f"  peak RSS flat with size (largest size ≤ {1 + RSS_FLAT_TOLERANCE:.2f}× the smallest's): "
              f"{flat['smallest_mb']:.1f} → {flat['largest_mb']:.1f} MB: {'PASS' if flat['pass'] else 'MISS'}")


def rss_flat(results: list[SizeResult]) -> dict[str, Any] | None:
    if len(results) < 2:
        return None
    ordered = sorted(results, key=lambda r: r.size_mb)
    small, large = ordered[0].peak_rss_mb, ordered[-1].peak_rss_mb
    return {"smallest_mb": small, "largest_mb": large, "pass": large <= small * (1 + RSS_FLAT_TOLERANCE)}


def _verdict(v: dict[str, Any]) -> str:
    return "PASS" if v["pass"] else "MISS"


def small_files_summary(part: dict[str, Any]) -> dict[str, Any]:
    """The median timed run's figures: archive step, build, verify, members/s, MB/s."""
    timed = [r for r in part["runs"] if not r["profiled"]]
    ranked = sorted(timed, key=lambda r: r["times"]["archive"])
    run = ranked[len(ranked) // 2]
    archive_s = run["times"]["archive"]
    build = run.get("build_s")
    data_bytes = run["files"]["bytes"]
    return {"repeat": run["repeat"], "archive_step_s": archive_s, "build_s": build,
            "verify_s": round(archive_s - build, 3) if build is not None else None,
            "listing_s": run["times"]["files"], "publish_s": run["times"]["publish"],
            "archive_cpu_process_s": run["cpu_process_s"]["archive"],
            "archive_cpu_main_thread_s": run["cpu_main_thread_s"]["archive"],
            "steps_s": run["steps_s"], "whole_s": run["whole_s"], "members": run["members"],
            "members_per_s_archive_step": round(run["members"] / archive_s, 1),
            "members_per_s_build": round(run["members"] / build, 1) if build else None,
            "mb_per_s_archive_step": round(data_bytes / MB / archive_s, 2),
            "peak_rss_mb": run["peak_rss_mb"], "archive_bytes": run["archive_bytes"], "file_bytes": data_bytes}


def print_small_files_report(part: dict[str, Any]) -> None:
    s = small_files_summary(part)
    tree = part["tree"]
    print()
    print(f"{part['count']} small files ({tree['bytes'] / MB:.0f} MB: "
          + ", ".join(f"{k['files']} {name}" for name, k in tree["kinds"].items()) + ")")
    print(f"  archive step {s['archive_step_s']:.2f} s = build {s['build_s']} s + verify {s['verify_s']} s; "
          f"{s['members']} members: {s['members_per_s_archive_step']:.0f} members/s "
          f"({s['members_per_s_build']} members/s building), {s['mb_per_s_archive_step']:.1f} MB/s")
    print(f"  archive step CPU: {s['archive_cpu_process_s']:.2f} s in all threads, "
          f"{s['archive_cpu_main_thread_s']:.2f} s in the calling thread (the critical path when cores are free)")
    print(f"  listing (collect_files) {s['listing_s']:.2f} s, publish {s['publish_s']:.2f} s, "
          f"steps {s['steps_s']:.2f} s, whole process {s['whole_s']:.2f} s, peak RSS {s['peak_rss_mb']:.1f} MB, "
          f"archive {_mb(s['archive_bytes'])} MB")
    kdf = next((r["kdf"] for r in part["runs"] if "kdf" in r), None)
    if kdf:
        members = s["members"]
        line = (f"  WinZip AES key derivation (PBKDF2-HMAC-SHA1 ×1000), per member: pyzipper's encrypter set-up "
                f"{kdf['pyzipper_encrypter_init_ms']:.2f} ms, pycryptodome PBKDF2 "
                f"{kdf['pycryptodome_pbkdf2_ms']:.2f} ms, hashlib {kdf['hashlib_pbkdf2_ms']:.2f} ms")
        if "pool_take_ms" in kdf:
            line += f", backup-ops' key pool ({kdf['pool_workers']} threads) {kdf['pool_take_ms']:.2f} ms per key taken"
        print(line)
        writing, verifying = (members * kdf[k] / 1000 for k in ("pyzipper_encrypter_init_ms", "pycryptodome_pbkdf2_ms"))
        print(f"  serial cost for {members} members: writing {writing:.1f} s, verifying {verifying:.1f} s")
    profiled = next((r for r in part["runs"] if r["profiled"]), None)
    if profiled:
        p = profiled["profile"]
        print(f"  Under cProfile (steps {p['unprofiled_steps_s']:.1f} s with the profiler's overhead; "
              f"build_archive {p['cumulative_s']['archive.py:build_archive']:.2f} s, verify_archive "
              f"{p['cumulative_s']['archive_read.py:verify_archive']:.2f} s, collect_files "
              f"{p['cumulative_s']['backup_steps.py:collect_files']:.2f} s):")
        total = p["profiled_s"] or 1.0
        for category, seconds in sorted(p["categories_s"].items(), key=lambda kv: kv[1], reverse=True):
            if seconds:
                print(f"    {seconds:>7.2f} s {seconds / total:>5.0%}  {category}")
        print(f"    {p['other_python_s']:>7.2f} s {p['other_python_s'] / total:>5.0%}  other (Python: zipfile, "
              "the archive writer, manifest, listing)")


# ---------------------------------------------------------------------------- results file


def compare_with_previous(previous: dict[str, Any] | None, current: dict[str, Any]) -> None:
    """Print the change of every ratio (and the small-files rates) against the previous results file."""
    if not previous:
        return
    print()
    print(f"Change against the previous results ({previous.get('date', 'undated')}):")
    old_sizes = {s["size_mb"]: s for s in previous.get("sizes", [])}
    any_change = False
    for size in current.get("sizes", []):
        old = old_sizes.get(size["size_mb"])
        if not old:
            continue
        for key, value in size["median_ratios"].items():
            before = old.get("median_ratios", {}).get(key)
            if isinstance(before, int | float):
                any_change = True
                print(f"  {size['size_mb']:>5} MB {key:<22} {before:.3f} → {value:.3f} ({value - before:+.3f})")
    old_files, new_files = previous.get("small_files"), current.get("small_files")
    if old_files and new_files and old_files.get("count") == new_files.get("count"):
        for key in ("archive_step_s", "build_s", "verify_s", "members_per_s_archive_step", "mb_per_s_archive_step"):
            before, after = old_files["summary"].get(key), new_files["summary"].get(key)
            if isinstance(before, int | float) and isinstance(after, int | float):
                any_change = True
                print(f"  {new_files['count']} files {key:<28} {before} → {after} ({after - before:+.3f})")
    if not any_change:
        print("  nothing comparable (different sizes or file counts)")


def load_previous(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


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


def parse_sizes_or_none(text: str) -> list[int]:
    """Like parse_sizes, and ``"0"`` for no database at all (only the small-files part)."""
    return [] if text.strip() == "0" else parse_sizes(text)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"--repeat must be at least 1, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {text!r}")
    return value


def main() -> None:
    """Parse the command line, then either run the benchmark or, with ``--child``, one measured backup."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=parse_sizes_or_none, default=[100, 1000],
                        help="database sizes in MB, comma-separated; 0: none (default: 100,1000)")
    parser.add_argument("--repeat", type=positive_int, default=1,
                        help="runs of every contender per size (and of the small-files backup); medians count "
                             "(default: 1)")
    parser.add_argument("--files", type=non_negative_int, default=10_000,
                        help="small files in the uploads folder of the small-files part; 0 skips it (default: 10000)")
    parser.add_argument("--no-profile", action="store_true",
                        help="skip the small-files part's extra run under cProfile")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS,
                        help=f"where the raw results go as JSON (default: {DEFAULT_RESULTS.relative_to(_REPO)})")
    parser.add_argument("--keep-data", action="store_true",
                        help="keep the PostgreSQL cluster, uploads, staging folders and archives in the work directory")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main()
        return
    if not args.sizes and not args.files:
        parser.error("nothing to measure: --sizes 0 and --files 0")

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from devtools.pgserver import EmbeddedPostgres

    previous = load_previous(args.results)
    workdir = Path(tempfile.mkdtemp(prefix="backup-ops-bench-"))
    # The server's OS user must traverse the work dir when the cluster lives in it (--keep-data).
    workdir.chmod(0o711)
    pg = EmbeddedPostgres(data_dir=workdir / "pgdata" if args.keep_data else None)
    results: list[SizeResult] = []
    files_part = None
    started = datetime.now(UTC)
    loads = [os.getloadavg()[0]]
    try:
        pg.start()
        versions = pipeline_versions(pg)
        print(f"Work directory {workdir}; {machine_summary()}", flush=True)
        print("Contenders: " + ", ".join(p.label + ("" if available(p) else " (not installed)") for p in PIPELINES)
              + ", backup-ops (backup_daily's steps, default profile)", flush=True)
        for size_mb in args.sizes:
            results.append(measure_size(pg, size_mb, args.repeat, workdir, args.keep_data))
            loads.append(os.getloadavg()[0])
        if args.files:
            files_part = measure_small_files(pg, args.files, args.repeat, workdir, args.keep_data,
                                             profile=not args.no_profile)
            loads.append(os.getloadavg()[0])
    finally:
        pg.stop()
        if args.keep_data:
            print(f"Kept {workdir} (cluster in pgdata/, uploads in app/, staging and archives in *-run*/)")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"Machine: {machine_summary()}; 1-minute load average during the run {min(loads):.1f}–{max(loads):.1f}")
    print(f"Versions: {versions}")
    print("wall s and CPU s (user + system, the process tree, not the server) from wait4; peak RSS is the largest")
    print("process of the tree. steps: backup_daily's step calls, after imports and one connection/password")
    print("lookup; whole: the child process from exec to exit (interpreter, Airflow and backup-ops imports included).")
    print_size_report(results)
    if files_part is not None:
        print_small_files_report(files_part)

    child_versions = next((r["contenders"][BACKUP_KEY]["tool_versions"] for s in results for r in s.repeats),
                          None) or (files_part["runs"][0]["tool_versions"] if files_part else {})
    flat = rss_flat(results)
    document = {
        "benchmark": "bench/backup_throughput.py",
        "schema": 1,
        "date": started.isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "machine": machine_info(),
        "load_average_1m_during_run": [round(x, 2) for x in loads],
        "versions": {**versions, **child_versions},
        "contenders": {p.key: {"label": p.label, "script": p.script, "installed": available(p)} for p in PIPELINES},
        "targets": {"steps_over_floor": {"1000 MB and up": 1.25, "below 1000 MB": 1.5},
                    "dump_over_gzip6_size": DUMP_SIZE_TARGET, "peak_rss_mb": RSS_TARGET_MB,
                    "steps_over_gzip6_expected": GZIP_RATIO_EXPECTED, "rss_flat_tolerance": RSS_FLAT_TOLERANCE},
        "sizes": [r.to_json() for r in results],
        "rss_flat": flat,
        "small_files": ({**files_part, "summary": small_files_summary(files_part)} if files_part else None),
    }
    compare_with_previous(previous, document)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    print()
    print(f"Raw results written to {args.results}")


if __name__ == "__main__":
    main()
