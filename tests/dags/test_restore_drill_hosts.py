"""restore_drill when its tasks land on different workers: each phase on a worker that has nothing of the run.

The drill's steps are plain functions taking the config, so a second worker is simulated by
calling them one after the other and removing the drill's working directory between phases: what
a task sees on a host where no earlier task of the run ran. The backup is on S3 (moto over HTTP),
so the archive is not on any worker's disk until a phase fetches it; it holds a custom-format dump
(pg_restore needs a file on the worker) and the application's files (``.env`` among them). After
every phase the working directory holds at most the encrypted archive and its marker: no dump, no
restored file, no plaintext. An unencrypted archive leaves no copy after any phase, and an archive
replaced on the destination during the drill is refused when a later worker fetches it again.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dags.conftest import PASSWORD
from tests.integration.test_restore import databases_like, fingerprint, make_backup

DRILL_TARGET = "drill_target"
EXPECTATIONS = {"public.invoices": {"not_null": ["customer_id", "number"],
                                    "freshness": {"column": "created_at", "max_hours": 100_000}}}
COPY = {"archive.zip", "archive.zip.fetched.json"}
"""All a worker may hold between the drill's phases: the encrypted archive and the marker beside it."""


@pytest.fixture(scope="module")
def hosts_env(backup_env: dict[str, Any], pg_server: Any) -> Iterator[dict[str, Any]]:
    """backup_env's config plus an S3 destination ``offsite``, expectations, and a scratch-capable target."""
    from tests.fixtures_s3 import S3_CONN_ID, TEST_BUCKET

    original = backup_env["config"].read_text()
    config = yaml.safe_load(original)
    config["backup"]["destination"]["destinations"].append(
        {"name": "offsite", "type": "s3", "conn_id": S3_CONN_ID, "bucket": TEST_BUCKET, "prefix": "drills"})
    config["restore_drill"] = {"expectations": EXPECTATIONS, "tries": 2, "retry_delay": 0}
    backup_env["config"].write_text(yaml.safe_dump(config))
    os.environ[f"AIRFLOW_CONN_{DRILL_TARGET.upper()}"] = pg_server.conn_uri("postgres")
    yield backup_env
    os.environ.pop(f"AIRFLOW_CONN_{DRILL_TARGET.upper()}", None)
    backup_env["config"].write_text(original)


@pytest.fixture
def on_s3(hosts_env: dict[str, Any], s3_endpoint: str, pg_server: Any, tmp_path: Path) -> Any:
    """Put a backup of the application database (and its files) on the S3 destination; returns its key."""
    from backup_ops.adapters.destinations.s3 import S3Destination
    from backup_ops.adapters.postgres.target import PgTarget
    from tests.fixtures_s3 import S3_CONN_ID, TEST_BUCKET

    destination = S3Destination("offsite", "invoicing-app", bucket=TEST_BUCKET, conn_id=S3_CONN_ID, prefix="drills")
    source = PgTarget(host=pg_server.host, port=pg_server.port, user=pg_server.superuser, password=pg_server.password,
                      dbname=hosts_env["db"])
    app = hosts_env["base"] / "app"

    def put(*, password: str | None = PASSWORD, dump_format: str = "custom") -> str:
        return make_backup(tmp_path, destination, source, "app_db", datetime.now(UTC).replace(microsecond=0),
                           app=app, password=password, dump_format=dump_format)
    return put


@pytest.fixture
def drill(hosts_env: dict[str, Any], pg_server: Any) -> Iterator[dict[str, Any]]:
    """The config, a run id and what the test's phases returned; scratch databases and folders removed after."""
    from backup_ops.airflow import drill_steps as steps
    from backup_ops.core.config import load_config

    before = fingerprint(pg_server, hosts_env["db"])
    state: dict[str, Any] = {"config": load_config(hosts_env["config"]), "run_id": f"manual__{os.urandom(4).hex()}"}
    yield state
    for conn_id, name in steps.planned_scratch(state.get("selected") or {}, state.get("verified") or {}):
        steps.drop_scratch(conn_id, name)
    for folder in hosts_env["staging"].glob("restore_drill__*"):
        shutil.rmtree(folder)
    assert fingerprint(pg_server, hosts_env["db"]) == before, "the source database is untouched"
    assert databases_like(pg_server, "backup\\_drill\\_%") == []


def on_another_worker(workdir: Path) -> None:
    """What the next phase sees on a worker where no earlier phase of the run ran: no working directory."""
    shutil.rmtree(workdir, ignore_errors=True)


def held(workdir: Path) -> set[str]:
    """Every path below the working directory (files and folders), relative to it."""
    return {str(p.relative_to(workdir)) for p in workdir.rglob("*")} if workdir.exists() else set()


def assert_only_the_encrypted_copy(workdir: Path) -> None:
    """Nothing but the archive and its marker is left, and every member of that archive is encrypted."""
    assert held(workdir) == COPY, held(workdir)
    with zipfile.ZipFile(workdir / "archive.zip") as zf:
        assert [i.filename for i in zf.infolist() if not i.is_dir() and not i.flag_bits & 1] == []


def no_check_folders_left() -> list[str]:
    return [p.name for p in Path(tempfile.gettempdir()).glob("backup-ops-drill-check-*")]


def test_every_phase_succeeds_on_a_worker_that_has_nothing_of_the_run_and_leaves_no_plaintext(
        drill: dict[str, Any], on_s3: Any, caplog: pytest.LogCaptureFixture, pg_server: Any) -> None:
    from backup_ops.airflow import drill_steps as steps

    key = on_s3()
    config = drill["config"]
    caplog.set_level(logging.INFO, logger="backup_ops.airflow.drill_steps")
    selected = drill["selected"] = steps.select(config, {"destination": "offsite", "target_conn_id": DRILL_TARGET},
                                                drill["run_id"])
    assert selected["archive"] == key
    workdir = Path(selected["workdir"])

    fetched = steps.fetch(config, selected)
    assert fetched["archive_copy"] == "downloaded" and fetched["archive_kept"] and not fetched["in_place"]
    assert_only_the_encrypted_copy(workdir)
    on_another_worker(workdir)

    verified = drill["verified"] = steps.verify(config, selected, fetched)
    assert verified["archive_copy"] == "fetched again" and verified["encryption"] == "aes256"
    assert verified["sha256"] == selected["receipt"]["sha256"]
    assert_only_the_encrypted_copy(workdir)
    on_another_worker(workdir)

    extracted = steps.extract(config, selected, fetched, verified)
    assert extracted["status"] == "checked" and extracted["entries"] > 5
    assert extracted["archive_copy"] == "fetched again"
    assert_only_the_encrypted_copy(workdir)
    assert no_check_folders_left() == []
    on_another_worker(workdir)

    restored = steps.restore(config, selected, fetched, verified)  # a custom-format dump: pg_restore reads a file
    (database,) = restored["databases"]
    assert restored["archive_copy"] == "fetched again" and database["rows"] > 1000
    assert databases_like(pg_server, database["scratch"]) == [database["scratch"]]
    assert_only_the_encrypted_copy(workdir)  # the dump pg_restore read is gone
    on_another_worker(workdir)

    validated = steps.validate(config, selected, fetched, verified, restored)
    assert validated["success"] and validated["tables"] == 12 and validated["archive_copy"] == "fetched again"
    assert_only_the_encrypted_copy(workdir)
    on_another_worker(workdir)

    files = steps.verify_files(config, selected, fetched, verified, extracted)
    assert files["status"] == "verified" and files["files"] > 6  # .env, config/*, the uploads
    assert files["archive_copy"] == "fetched again" and files["archive_kept"] is False
    assert not workdir.exists(), held(workdir)  # the last reader leaves nothing on its worker

    results = [fetched, verified, extracted, restored, validated, files]
    assert {r["host"] for r in results} == {steps.worker_host()}
    again = [r.getMessage() for r in caplog.records if "had not got the archive: fetched it again" in r.getMessage()]
    assert len(again) == 5 and again[0].startswith(f"This worker ({steps.worker_host()}) had not got the archive")


def test_on_one_worker_the_archive_is_downloaded_once_and_proved_by_its_marker(drill: dict[str, Any],
                                                                                on_s3: Any) -> None:
    from backup_ops.airflow import drill_steps as steps

    on_s3(dump_format="plain")
    config = drill["config"]
    selected = drill["selected"] = steps.select(config, {"destination": "offsite", "target_conn_id": DRILL_TARGET,
                                                         "restore_files": True}, drill["run_id"])
    workdir = Path(selected["workdir"])
    fetched = steps.fetch(config, selected)
    copy = os.stat(workdir / "archive.zip")
    verified = drill["verified"] = steps.verify(config, selected, fetched)
    extracted = steps.extract(config, selected, fetched, verified)
    restored = steps.restore(config, selected, fetched, verified)
    validated = steps.validate(config, selected, fetched, verified, restored)
    assert [r["archive_copy"] for r in (verified, extracted, restored, validated)] == ["present"] * 4
    assert os.stat(workdir / "archive.zip").st_ino == copy.st_ino  # the same file throughout, not a new download
    assert_only_the_encrypted_copy(workdir)
    files = steps.verify_files(config, selected, fetched, verified, extracted)
    assert files["status"] == "verified" and files["archive_copy"] == "present"
    assert not workdir.exists()


def test_an_unencrypted_archive_leaves_no_copy_after_any_phase(drill: dict[str, Any], on_s3: Any) -> None:
    from backup_ops.airflow import drill_steps as steps

    on_s3(password=None, dump_format="plain")
    config = drill["config"]
    selected = drill["selected"] = steps.select(config, {"destination": "offsite", "target_conn_id": DRILL_TARGET},
                                                drill["run_id"])
    workdir = Path(selected["workdir"])
    fetched = steps.fetch(config, selected)  # the zip's directory says the manifest is not encrypted
    assert fetched["archive_kept"] is False and held(workdir) == set()
    verified = drill["verified"] = steps.verify(config, selected, fetched)
    assert verified["encryption"] == "none" and verified["archive_kept"] is False and held(workdir) == set()
    extracted = steps.extract(config, selected, fetched, verified)
    assert extracted["status"] == "checked" and extracted["archive_kept"] is False and held(workdir) == set()
    files = steps.verify_files(config, selected, fetched, verified, extracted)
    assert files["status"] == "verified" and held(workdir) == set()
    assert [r["archive_copy"] for r in (verified, extracted, files)] == ["fetched again"] * 3


def test_an_archive_replaced_during_the_drill_is_refused_where_it_is_fetched_again(
        drill: dict[str, Any], on_s3: Any, s3_client: Any) -> None:
    from backup_ops.airflow import drill_steps as steps
    from backup_ops.core.errors import VerificationError
    from tests.fixtures_s3 import TEST_BUCKET

    key = on_s3(dump_format="plain")
    config = drill["config"]
    selected = drill["selected"] = steps.select(config, {"destination": "offsite", "target_conn_id": DRILL_TARGET},
                                                drill["run_id"])
    fetched = steps.fetch(config, selected)
    verified = drill["verified"] = steps.verify(config, selected, fetched)
    data = bytearray(s3_client.get_object(Bucket=TEST_BUCKET, Key=f"drills/{key}")["Body"].read())
    data[len(data) // 3] ^= 0xFF  # same size: only its sha256 tells
    s3_client.put_object(Bucket=TEST_BUCKET, Key=f"drills/{key}", Body=bytes(data))
    workdir = Path(selected["workdir"])
    on_another_worker(workdir)
    with pytest.raises(VerificationError) as caught:
        steps.restore(config, selected, fetched, verified)
    assert caught.value.retryable is False
    assert str(caught.value).startswith(f"Archive {key} on destination offsite changed during the drill: fetched "
                                        f"again on {steps.worker_host()} it has sha256 ")
    assert str(caught.value).endswith(f"but verify proved {verified['sha256']}; it was replaced.")
    assert held(workdir) == set()  # the replaced copy is not kept
