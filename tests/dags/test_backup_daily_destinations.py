"""backup_daily fan-out: one verified archive on a local disk and on S3 (moto over HTTP).

continue_on_failure both ways, only_to_destination, and the unknown-destination message.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from backup_ops.core.errors import ConfigError
from tests.dags.conftest import run_backup, update_config
from tests.fixtures_s3 import S3_CONN_ID, TEST_BUCKET, Fault, new_s3_client


def local_dest(env: dict) -> dict:
    return {"name": "local", "type": "local", "path": str(env["base"] / "backups")}


def s3_dest(bucket: str = TEST_BUCKET) -> dict:
    return {"name": "offsite", "type": "s3", "conn_id": S3_CONN_ID, "bucket": bucket, "prefix": "prod",
            "part_size_mb": 5}


def s3_archives(endpoint: str) -> dict[str, bytes]:
    client = new_s3_client(endpoint)
    listing = client.list_objects_v2(Bucket=TEST_BUCKET, Prefix="prod/invoicing-app/").get("Contents", [])
    found = {o["Key"]: client.get_object(Bucket=TEST_BUCKET, Key=o["Key"])["Body"].read() for o in listing}
    client.close()
    return found


@pytest.fixture
def two_destinations(backup_env, s3_endpoint):
    original = update_config(backup_env["config"], destinations=[local_dest(backup_env), s3_dest()],
                             continue_on_failure=False)
    yield backup_env
    backup_env["config"].write_text(original)


def test_same_verified_archive_on_local_and_s3(two_destinations, s3_endpoint):
    before = set(two_destinations["backups"].glob("*.zip"))
    run, states = run_backup()
    assert run.state == "success", states
    assert states[("publish", 0)] == states[("publish", 1)] == "success"
    (new_local,) = set(two_destinations["backups"].glob("*.zip")) - before
    objects = s3_archives(s3_endpoint)
    key = f"prod/invoicing-app/{new_local.name}"
    assert objects[key] == new_local.read_bytes()
    receipt = json.loads(objects[key + ".json"])
    assert receipt["sha256"] == hashlib.sha256(new_local.read_bytes()).hexdigest()
    client = new_s3_client(s3_endpoint)
    assert client.list_multipart_uploads(Bucket=TEST_BUCKET).get("Uploads", []) == []
    client.close()


def test_only_to_destination_publishes_to_that_one(two_destinations, s3_endpoint):
    before = set(two_destinations["backups"].glob("*.zip"))
    run, states = run_backup({"only_to_destination": "offsite"})
    assert run.state == "success", states
    assert set(two_destinations["backups"].glob("*.zip")) == before
    assert len([k for k in s3_archives(s3_endpoint) if k.endswith(".zip")]) == 1


def test_unknown_destination_names_the_valid_ones(two_destinations, tmp_path):
    from backup_ops.airflow.backup_steps import plan
    from backup_ops.core.config import load_config

    with pytest.raises(ConfigError, match="no backup destination named 'nas'; configured destinations are: "
                                          "local, offsite"):
        plan(load_config(), {"only_to_destination": "nas"}, str(tmp_path))


def test_a_broken_destination_fails_the_run_but_the_healthy_one_gets_the_backup(backup_env, s3_endpoint):
    original = update_config(backup_env["config"], destinations=[local_dest(backup_env), s3_dest("no-such-bucket")],
                             continue_on_failure=False)
    before = set(backup_env["backups"].glob("*.zip"))
    try:
        run, states = run_backup()
    finally:
        backup_env["config"].write_text(original)
    assert run.state == "failed", "without continue_on_failure a destination that failed fails the run"
    assert states[("check_destinations", -1)] == "success", "one reachable destination is enough to go ahead"
    assert states[("publish", 0)] == "success" and states[("publish", 1)] == "failed"
    assert len(set(backup_env["backups"].glob("*.zip")) - before) == 1, "the healthy destination has the backup"
    assert states[("finalize", -1)] == "failed"


def test_no_dump_starts_when_no_destination_can_take_the_backup(backup_env, s3_endpoint):
    original = update_config(backup_env["config"], destinations=[s3_dest("no-such-bucket")], continue_on_failure=False)
    try:
        run, states = run_backup()
    finally:
        backup_env["config"].write_text(original)
    assert run.state == "failed"
    assert states[("check_destinations", -1)] == "failed"
    assert [state for (task, _), state in states.items() if task == "dump_database"] == ["upstream_failed"]
    assert states[("collect_files", -1)] == "upstream_failed"


def test_continue_on_failure_succeeds_with_one_verified_copy(backup_env, s3_endpoint):
    original = update_config(backup_env["config"], destinations=[local_dest(backup_env), s3_dest("no-such-bucket")],
                             continue_on_failure=True)
    before = set(backup_env["backups"].glob("*.zip"))
    try:
        run, states = run_backup()
    finally:
        backup_env["config"].write_text(original)
    assert run.state == "success", states
    assert states[("publish", 0)] == "success" and states[("publish", 1)] == "failed"
    assert len(set(backup_env["backups"].glob("*.zip")) - before) == 1
    finalize = next(ti for ti in run.get_task_instances() if ti.task_id == "finalize")
    assert finalize.state == "success"


def test_endpoint_dying_mid_upload_fails_the_run_and_leaves_no_object(backup_env, s3_endpoint, faulty_endpoint,
                                                                      monkeypatch):
    # The endpoint accepts the receipt, then dies when the archive itself is sent.
    proxy = faulty_endpoint(lambda r: Fault(die=True) if r.method == "PUT" and r.path.endswith(".zip") else None)
    monkeypatch.setenv("AIRFLOW_CONN_BACKUP_S3_FLAKY", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": proxy.url, "region_name": "us-east-1"}}))
    flaky = {**s3_dest(), "conn_id": "backup_s3_flaky"}
    original = update_config(backup_env["config"], destinations=[local_dest(backup_env), flaky],
                             continue_on_failure=False)
    try:
        run, states = run_backup()
    finally:
        backup_env["config"].write_text(original)
    assert run.state == "failed"
    assert states[("publish", 1)] == "failed"
    assert not [k for k in s3_archives(s3_endpoint) if k.endswith(".zip")], "no partial or complete object"
    client = new_s3_client(s3_endpoint)
    assert client.list_multipart_uploads(Bucket=TEST_BUCKET).get("Uploads", []) == []
    client.close()
    left = [p for p in backup_env["staging"].rglob("*") if p.is_file()]
    assert left and all(p.suffix == ".zip" for p in left), f"only staged (encrypted) archives stay: {left}"
