"""The docker-compose stack, checked without Docker.

There is no Docker engine where the tests run, so what ``docker compose up`` would find out the hard
way is checked on the files themselves: the compose file parses; every service a service waits for
exists, every named volume it mounts is declared, every ``${VAR}`` it uses is in .env.example; every
image is pinned; no secret is written into it; every long-running service has a health check; the
worker serving ``backup.files_queue`` is the one that mounts the application's files; the Dockerfile's
Airflow, Python and PostgreSQL client versions are requirements.txt's and the application server's;
deploy/backup_config.yaml is valid and agrees with the stack (queue, buckets, connections, mounts).

Each check is a function returning its problems; each also runs on a copy with a planted fault, which
it must report. The stack's two Python jobs run for real: the seed job against the test PostgreSQL
server, the api-server's login file in a temporary folder.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import stat
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import yaml

from backup_ops.core.config import BackupConfig, LocalDestinationConfig, S3DestinationConfig, load_config
from deploy.seed_app import SeedSettings, seed
from deploy.write_admin_password import write_password_file
from devtools.pgserver import EmbeddedPostgres
from devtools.sample_data import sample_sizes

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
REQUIREMENTS = ROOT / "requirements.txt"
AIRFLOW_INIT = ROOT / "deploy" / "airflow_init.sh"
MINIO_INIT = ROOT / "deploy" / "minio" / "init.sh"
STAGING_LIFECYCLE = ROOT / "deploy" / "minio" / "staging-lifecycle.json"

ENV_REF = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)")
ONLY_A_REFERENCE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?[-?][^}]*)?\}")
URL_PASSWORD = re.compile(r"://[^:/@\s]+:(\$\{[^}]*\}|[^@\s]*)@")
SECRET_WORDS = ("PASSWORD", "SECRET", "KEY", "TOKEN")
DEFAULT_QUEUE = "default"  # Airflow's [operators] default_queue

Compose = dict[str, Any]


# ---------------------------------------------------------------- reading the files


def load_compose() -> Compose:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def env_example() -> dict[str, str]:
    """The KEY=value lines of .env.example (comments and blank lines skipped)."""
    pairs = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example line {line!r} is not KEY=value"
            pairs[key.strip()] = value.strip()
    return pairs


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(key): "" if value is None else str(value) for key, value in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return shlex.split(cmd) if isinstance(cmd, str) else [str(part) for part in cmd]


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool

    @property
    def named(self) -> bool:
        return not self.source.startswith((".", "/", "~"))


def mounts(service: dict[str, Any]) -> list[Mount]:
    found = []
    for item in service.get("volumes") or []:
        if isinstance(item, dict):
            found.append(Mount(str(item.get("source", "")), str(item["target"]), bool(item.get("read_only"))))
        else:
            source, _, rest = str(item).partition(":")
            target, _, mode = rest.partition(":")
            found.append(Mount(source, target, "ro" in mode.split(",")))
    return found


def dependencies(service: dict[str, Any]) -> dict[str, str]:
    """Service name → condition (a plain list means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def one_shot_services(compose: Compose) -> set[str]:
    return {name for service in compose["services"].values()
            for name, condition in dependencies(service).items() if condition == "service_completed_successfully"}


def served_queues(service: dict[str, Any]) -> set[str] | None:
    """The queues a Celery worker serves (None: not a Celery worker)."""
    cmd = command(service)
    cmd = cmd[1:] if cmd[:1] == ["airflow"] else cmd  # the image's entrypoint takes both forms
    if cmd[:2] != ["celery", "worker"]:
        return None
    for flag in ("--queues", "-q"):
        if flag in cmd:
            return set(cmd[cmd.index(flag) + 1].split(","))
        joined = [part for part in cmd if part.startswith(f"{flag}=")]
        if joined:
            return set(joined[0].split("=", 1)[1].split(","))
    return {DEFAULT_QUEUE}


def airflow_services(compose: Compose) -> dict[str, dict[str, Any]]:
    """The services that read the backup-ops config (BACKUP_OPS_CONFIG in their environment)."""
    return {name: service for name, service in compose["services"].items()
            if "BACKUP_OPS_CONFIG" in environment(service)}


def connection(service: dict[str, Any], conn_id: str) -> dict[str, Any]:
    value = environment(service).get(f"AIRFLOW_CONN_{conn_id.upper()}")
    assert value, f"no AIRFLOW_CONN_{conn_id.upper()}"
    return dict(json.loads(value))


def env_var_of(reference: str) -> str:
    match = ENV_REF.search(reference)
    assert match, f"{reference!r} is not a ${{VAR}} reference"
    return match.group(1)


def is_secret_name(name: str) -> bool:
    return any(word in name.upper() for word in SECRET_WORDS)


def mounted_config(compose: Compose) -> BackupConfig:
    """deploy/backup_config.yaml as the workers see it: the file bind-mounted where BACKUP_OPS_CONFIG points."""
    worker = compose["services"]["airflow-worker"]
    target = environment(worker)["BACKUP_OPS_CONFIG"]
    (source,) = [m.source for m in mounts(worker) if m.target == target]
    return load_config(ROOT / source)


def covers(mount: Mount, path: Path | str) -> bool:
    return PurePosixPath(str(path)).is_relative_to(PurePosixPath(mount.target))


# ---------------------------------------------------------------- the checks


def unknown_dependencies(compose: Compose) -> list[str]:
    services = compose["services"]
    return [f"{name} depends on {dep}, which is not a service" for name, service in services.items()
            for dep in dependencies(service) if dep not in services]


def dependency_condition_problems(compose: Compose) -> list[str]:
    problems = []
    services = compose["services"]
    for name, service in services.items():
        for dep, condition in dependencies(service).items():
            target = services.get(dep, {})
            if condition == "service_healthy" and not target.get("healthcheck"):
                problems.append(f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck")
            if condition == "service_completed_successfully" and target.get("restart") in ("always", "unless-stopped"):
                problems.append(f"{name} waits for {dep} to complete, but {dep} restarts for ever")
    return problems


def undeclared_volumes(compose: Compose) -> list[str]:
    declared = set(compose.get("volumes") or {})
    return [f"{name} mounts volume {m.source}, which is not declared under volumes:"
            for name, service in compose["services"].items() for m in mounts(service)
            if m.named and m.source not in declared]


def missing_bind_sources(compose: Compose) -> list[str]:
    return [f"{name} mounts {m.source}, which is not in the repository"
            for name, service in compose["services"].items() for m in mounts(service)
            if m.source.startswith(".") and not (ROOT / m.source).exists()]


def variables_used(node: Any) -> set[str]:
    """The ${VAR}s compose interpolates: in every string of the parsed file (comments are not read)."""
    if isinstance(node, dict):
        return {var for key, value in node.items() for var in variables_used(key) | variables_used(value)}
    if isinstance(node, list):
        return {var for item in node for var in variables_used(item)}
    return set(ENV_REF.findall(node)) if isinstance(node, str) else set()


def undefined_variables(compose: Compose, defined: set[str]) -> list[str]:
    return [f"${{{var}}} is not in .env.example" for var in sorted(variables_used(compose) - defined)]


def unpinned_images(compose: Compose) -> list[str]:
    problems = []
    for name, service in compose["services"].items():
        build = service.get("build")
        if build is not None:
            context = build if isinstance(build, str) else build.get("context", ".")
            dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
            if (ROOT / context / dockerfile).resolve() != DOCKERFILE:
                problems.append(f"{name} builds {context}/{dockerfile}, not the repository's Dockerfile")
        image = service.get("image")
        if not image:
            if build is None:
                problems.append(f"{name} has neither an image nor a build")
            continue
        if "@sha256:" in image:
            continue
        repository, _, tag = image.rpartition(":")
        if not repository or "/" in tag or tag in ("", "latest"):
            problems.append(f"{name} uses image {image!r}, which is not pinned to a version tag")
    return problems


def secret_literals(compose: Compose) -> list[str]:
    """Secrets must be ${...} references to .env: by variable name, inside URLs, inside connection JSON."""
    problems = []
    for name, service in compose["services"].items():
        for key, value in environment(service).items():
            where = f"{name}: {key}"
            # A *_FILE variable names where a secret is kept (a path), not the secret.
            if is_secret_name(key) and not key.endswith("_FILE") and not ONLY_A_REFERENCE.fullmatch(value):
                problems.append(f"{where} holds a literal, not a ${{...}} reference")
            for password in URL_PASSWORD.findall(value):
                if not ONLY_A_REFERENCE.fullmatch(password):
                    problems.append(f"{where} has a URL with a literal password")
            if key.startswith("AIRFLOW_CONN_") and value.lstrip().startswith("{"):
                fields = _json_fields(json.loads(value))
                problems += [f"{where} field {field} holds a literal" for field, field_value in fields
                             if is_secret_name(field)
                             and not (isinstance(field_value, str) and ONLY_A_REFERENCE.fullmatch(field_value))]
    return problems


def _json_fields(node: Any) -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [pair for key, value in node.items() for pair in [(str(key), value), *_json_fields(value)]]
    if isinstance(node, list):
        return [pair for item in node for pair in _json_fields(item)]
    return []


def missing_healthchecks(compose: Compose) -> list[str]:
    one_shots = one_shot_services(compose)
    problems = []
    for name, service in compose["services"].items():
        if name in one_shots:
            continue
        check = service.get("healthcheck") or {}
        if not check.get("test") or check.get("disable") or check.get("test") in (["NONE"], "NONE"):
            problems.append(f"{name} runs for good but has no healthcheck")
    return problems


def files_queue_problems(compose: Compose, config: BackupConfig) -> list[str]:
    """The workers that mount the application's files serve exactly files_queue; no other worker serves it."""
    queue = config.backup.files_queue or DEFAULT_QUEUE
    app_root = config.backup.files.relative_path
    assert app_root is not None, "the stack's config names source.files.relative_path"
    problems = []
    with_files = []
    for name, service in compose["services"].items():
        queues = served_queues(service)
        if queues is None:
            continue
        app_mounts = [m for m in mounts(service) if m.named and covers(m, app_root)]
        if app_mounts:
            with_files.append(name)
            if queues != {queue}:
                problems.append(f"{name} mounts the application's files but serves {sorted(queues)}, not [{queue!r}]")
            problems += [f"{name} mounts {m.source} writable; the files are only read" for m in app_mounts
                         if not m.read_only]
        elif queue in queues:
            problems.append(f"{name} serves {queue!r} without the application's files at {app_root}")
    if not with_files:
        problems.append(f"no Celery worker mounts the application's files at {app_root}")
    return problems


# ---------------------------------------------------------------- the compose file


@pytest.fixture(scope="module")
def compose() -> Compose:
    return load_compose()


@pytest.fixture(scope="module")
def config(compose: Compose) -> BackupConfig:
    return mounted_config(compose)


def test_the_compose_file_parses_into_the_stack_of_the_issue(compose: Compose) -> None:
    assert set(compose) <= {"services", "volumes", "networks"} | {key for key in compose if key.startswith("x-")}
    assert set(compose["services"]) >= {
        "postgres", "redis", "airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
        "airflow-triggerer", "airflow-worker", "airflow-worker-files", "minio", "minio-init", "app-db", "app-seed",
        "mailpit"}
    executors = {environment(s).get("AIRFLOW__CORE__EXECUTOR") for s in airflow_services(compose).values()}
    assert executors == {"CeleryExecutor"}
    assert "api-server" in " ".join(command(compose["services"]["airflow-apiserver"]))


def test_a_scalable_worker_has_no_fixed_name_or_host_port(compose: Compose) -> None:
    # `docker compose up --scale airflow-worker=3` fails on a container_name or a published port.
    worker = compose["services"]["airflow-worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert served_queues(worker) == {DEFAULT_QUEUE}


def test_every_published_port_is_on_loopback(compose: Compose) -> None:
    published = {name: s["ports"] for name, s in compose["services"].items() if s.get("ports")}
    assert published, "the UI, the MinIO console and Mailpit are published"
    assert [f"{n}: {p}" for n, ports in published.items() for p in ports if not str(p).startswith("127.0.0.1:")] == []


def test_every_service_a_service_depends_on_exists(compose: Compose) -> None:
    assert unknown_dependencies(compose) == []
    assert dependency_condition_problems(compose) == []


def test_one_shot_jobs_are_waited_for_until_they_succeeded(compose: Compose) -> None:
    assert one_shot_services(compose) == {"airflow-init", "minio-init", "app-seed"}
    services = compose["services"]
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                 "airflow-worker", "airflow-worker-files"):
        assert dependencies(services[name]).get("airflow-init") == "service_completed_successfully", name
    for worker in ("airflow-worker", "airflow-worker-files"):
        assert dependencies(services[worker])["minio-init"] == "service_completed_successfully"
        assert dependencies(services[worker])["app-seed"] == "service_completed_successfully"


def test_every_named_volume_is_declared_and_every_bind_source_exists(compose: Compose) -> None:
    assert undeclared_volumes(compose) == []
    assert missing_bind_sources(compose) == []


def test_every_variable_the_compose_file_uses_is_in_env_example(compose: Compose) -> None:
    defined = set(env_example())
    assert undefined_variables(compose, defined) == []
    # …and the example has nothing the stack does not use.
    assert defined - variables_used(compose) == set()


def test_env_example_ships_no_secret() -> None:
    # An empty secret stops `docker compose up` (${VAR:?…}) instead of starting with a known password.
    # An access key id names MinIO's account, like a user name.
    shipped = {key: value for key, value in env_example().items()
               if is_secret_name(key) and not key.endswith("ACCESS_KEY") and value}
    assert shipped == {}


def test_every_image_is_pinned_and_the_built_one_is_this_dockerfile(compose: Compose) -> None:
    assert unpinned_images(compose) == []
    built = {name for name, s in compose["services"].items() if "build" in s}
    assert built >= set(airflow_services(compose)) | {"airflow-init", "app-seed"}


def test_no_secret_is_written_into_the_compose_file(compose: Compose) -> None:
    assert secret_literals(compose) == []


def test_every_long_running_service_has_a_healthcheck(compose: Compose) -> None:
    assert missing_healthchecks(compose) == []


def test_the_files_queue_is_served_by_the_one_worker_that_mounts_the_files(
        compose: Compose, config: BackupConfig) -> None:
    assert config.backup.files_queue == "files"
    assert files_queue_problems(compose, config) == []
    assert served_queues(compose["services"]["airflow-worker-files"]) == {config.backup.files_queue}


def _with(mutate: Callable[[Compose], object]) -> Compose:
    planted = copy.deepcopy(load_compose())
    mutate(planted)
    return planted


PLANTED: list[tuple[str, Callable[[Compose], object], Callable[[Compose], list[str]], str]] = [
    ("a literal password in an environment variable",
     lambda c: c["services"]["app-db"]["environment"].update(POSTGRES_PASSWORD="hunter2-literal"),
     secret_literals, "app-db: POSTGRES_PASSWORD holds a literal"),
    ("a literal password in a connection's JSON",
     lambda c: c["services"]["airflow-worker"]["environment"].update(
         AIRFLOW_CONN_APP_DB=json.dumps({"conn_type": "postgres", "host": "app-db", "password": "hunter2"})),
     secret_literals, "AIRFLOW_CONN_APP_DB field password holds a literal"),
    ("a literal password in a database URL",
     lambda c: c["services"]["airflow-scheduler"]["environment"].update(
         AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg://airflow:hunter2@postgres/airflow"),
     secret_literals, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN has a URL with a literal password"),
    ("a literal Airflow connection URI",
     lambda c: c["services"]["airflow-worker"]["environment"].update(
         AIRFLOW_CONN_APP_DB="postgresql://invoicing_app:hunter2@app-db/invoicing"),
     secret_literals, "AIRFLOW_CONN_APP_DB has a URL with a literal password"),
    ("an unpinned image",
     lambda c: c["services"]["redis"].update(image="redis"), unpinned_images, "redis uses image 'redis'"),
    ("an image on latest",
     lambda c: c["services"]["mailpit"].update(image="axllent/mailpit:latest"), unpinned_images, "mailpit uses image"),
    ("a build of another Dockerfile",
     lambda c: c["services"]["app-seed"].update(build={"context": ".", "dockerfile": "Dockerfile.other"}),
     unpinned_images, "app-seed builds ./Dockerfile.other"),
    ("a long-running service without a healthcheck",
     lambda c: c["services"]["airflow-triggerer"].pop("healthcheck"), missing_healthchecks, "airflow-triggerer runs"),
    ("a dependency on a service that does not exist",
     lambda c: c["services"]["airflow-worker"]["depends_on"].update(app_seed={"condition": "service_started"}),
     unknown_dependencies, "airflow-worker depends on app_seed"),
    ("waiting for a healthy service that has no healthcheck",
     lambda c: (c["services"]["mailpit"].pop("healthcheck"),
                c["services"]["airflow-triggerer"].update(depends_on={"mailpit": {"condition": "service_healthy"}})),
     dependency_condition_problems, "airflow-triggerer waits for mailpit to be healthy"),
    ("a volume that is not declared",
     lambda c: c["services"]["minio"]["volumes"].append("minio-cache:/cache"), undeclared_volumes,
     "minio mounts volume minio-cache"),
    ("a bind mount of a file that is not there",
     lambda c: c["services"]["minio-init"]["volumes"].append("./deploy/minio/nothing.sh:/x.sh:ro"),
     missing_bind_sources, "minio-init mounts ./deploy/minio/nothing.sh"),
]


@pytest.mark.parametrize(("mutate", "check", "expected"), [p[1:] for p in PLANTED], ids=[p[0] for p in PLANTED])
def test_each_check_reports_a_planted_fault(mutate: Callable[[Compose], object],
                                             check: Callable[[Compose], list[str]], expected: str) -> None:
    assert check(load_compose()) == []
    problems = check(_with(mutate))
    assert any(expected in problem for problem in problems), problems


def test_the_files_queue_check_reports_planted_faults(config: BackupConfig) -> None:
    def files_worker(c: Compose) -> dict[str, Any]:
        return dict(c["services"]["airflow-worker-files"])

    planted = {
        "serves the default queue too": lambda c: c["services"]["airflow-worker-files"].update(
            command="celery worker --queues default,files"),
        "does not mount the files": lambda c: c["services"]["airflow-worker-files"].update(
            volumes=[v for v in files_worker(c)["volumes"] if "app-files" not in v]),
        "mounts them writable": lambda c: c["services"]["airflow-worker-files"].update(
            volumes=[v.replace(":ro", "") if "app-files" in v else v for v in files_worker(c)["volumes"]]),
        "another worker serves files": lambda c: c["services"]["airflow-worker"].update(
            command="celery worker --queues default,files"),
    }
    expected = {
        "serves the default queue too": "airflow-worker-files mounts the application's files but serves",
        "does not mount the files": "airflow-worker-files serves 'files' without the application's files",
        "mounts them writable": "airflow-worker-files mounts app-files writable",
        "another worker serves files": "airflow-worker serves 'files' without",
    }
    for what, mutate in planted.items():
        problems = files_queue_problems(_with(mutate), config)
        assert any(expected[what] in p for p in problems), (what, problems)


def test_the_variable_check_reports_a_variable_missing_from_env_example() -> None:
    planted = _with(lambda c: c["services"]["mailpit"].update(
        environment={"MP_UI_AUTH": "${NOT_IN_THE_EXAMPLE:?}", "SHELL_VAR": "$${HOSTNAME}"}))
    assert undefined_variables(planted, set(env_example())) == ["${NOT_IN_THE_EXAMPLE} is not in .env.example"]


# ---------------------------------------------------------------- the Dockerfile


def test_the_dockerfile_extends_the_airflow_and_python_of_requirements_txt() -> None:
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    requirements = REQUIREMENTS.read_text(encoding="utf-8")
    (base,) = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    match = re.fullmatch(r"apache/airflow:(\d+\.\d+\.\d+)-python(\d+\.\d+)", base)
    assert match, f"FROM {base}: expected apache/airflow:<version>-python<version>"
    pinned = re.search(r"^apache-airflow==(\S+)$", requirements, re.M)
    compiled_for = re.search(r"--python-version (\d+\.\d+)", requirements)
    assert pinned and compiled_for
    assert match.groups() == (pinned.group(1), compiled_for.group(1))


def test_the_postgresql_client_is_the_major_version_of_the_application_server(
        compose: Compose, config: BackupConfig) -> None:
    clients = set(re.findall(r"postgresql-client-(\d+)", DOCKERFILE.read_text(encoding="utf-8")))
    app_host = connection(compose["services"]["airflow-worker"], config.backup.databases[0].conn_id)["host"]
    server = re.fullmatch(r"postgres:(\d+)\.\d+(?:-\w+)?", compose["services"][app_host]["image"])
    assert server, compose["services"][app_host]["image"]
    assert clients == {server.group(1)}
    assert config.backup.pg_bin_dir == Path(f"/usr/lib/postgresql/{server.group(1)}/bin")


def test_what_the_dockerfile_copies_exists_and_dot_env_stays_out_of_the_build() -> None:
    copies = re.findall(r"^COPY\s+(?:--\S+\s+)*(.+?)\s+\S+$", DOCKERFILE.read_text(encoding="utf-8"), re.M)
    sources = [source for line in copies for source in line.split()]
    assert "requirements.txt" in sources and "plugins/" in sources and "deploy/" in sources
    assert [s for s in sources if not (ROOT / s).exists()] == []
    ignored = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
    assert ".env" in ignored and ".venv" in ignored and ".git" in ignored


def test_the_shell_scripts_parse() -> None:
    for shell, script in (("bash", AIRFLOW_INIT), ("sh", MINIO_INIT)):
        done = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True, check=False)
        assert done.returncode == 0, f"{script.name}: {done.stderr}"


def test_airflow_init_hands_over_exactly_the_volumes_it_mounts(compose: Compose) -> None:
    init = compose["services"]["airflow-init"]
    assert init["user"] == "0:0"
    assert init["entrypoint"] == ["/bin/bash", "/opt/airflow/deploy/airflow_init.sh"]
    loop = re.search(r"^for volume in (.+); do$", AIRFLOW_INIT.read_text(encoding="utf-8"), re.M)
    assert loop
    assert set(loop.group(1).split()) == {m.target for m in mounts(init) if m.named}
    assert "airflow pools set backup_ops_dumps" in AIRFLOW_INIT.read_text(encoding="utf-8")


# ---------------------------------------------------------------- deploy/backup_config.yaml and the stack


def test_the_stack_config_is_valid_and_stages_on_s3(monkeypatch: pytest.MonkeyPatch, compose: Compose) -> None:
    raw = (ROOT / "deploy" / "backup_config.yaml").read_text(encoding="utf-8")
    for var in set(ENV_REF.findall(raw)):
        monkeypatch.setenv(var, f"/srv/{var.lower()}")
    config = mounted_config(compose)
    staging = config.backup.staging_location
    assert staging.url.startswith("s3://") and staging.local_root is None
    assert staging.conn_id == "backup_s3"
    assert config.backup.encryption == "aes256"


def test_every_connection_and_variable_the_config_names_is_in_every_airflow_service(
        compose: Compose, config: BackupConfig) -> None:
    conn_ids = {db.conn_id for db in config.backup.databases}
    conn_ids |= {d.conn_id for d in config.backup.destination.destinations if isinstance(d, S3DestinationConfig)}
    conn_ids |= {config.backup.staging_location.conn_id or "", config.restore_drill.target_conn_id or ""}
    conn_ids |= {config.notifications.mail.conn_id} if config.notifications.mail else set()
    conn_ids.discard("")
    assert conn_ids == {"app_db", "backup_s3", "drill_server", "smtp_default"}
    password = config.backup.password
    assert password is not None and password.kind == "variable"
    wanted = {f"AIRFLOW_CONN_{c.upper()}" for c in conn_ids} | {f"AIRFLOW_VAR_{password.name.upper()}"}
    services = airflow_services(compose)
    assert set(services) >= {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                             "airflow-worker", "airflow-worker-files"}
    missing = {name: sorted(wanted - set(environment(s))) for name, s in services.items()}
    assert {name: absent for name, absent in missing.items() if absent} == {}


def test_every_airflow_service_mounts_the_config_where_backup_ops_config_points(compose: Compose) -> None:
    for name, service in airflow_services(compose).items():
        target = environment(service)["BACKUP_OPS_CONFIG"]
        assert Mount("./deploy/backup_config.yaml", target, True) in mounts(service), name


def test_the_buckets_and_the_expiry_rule_are_the_ones_minio_init_makes(compose: Compose, config: BackupConfig) -> None:
    init = environment(compose["services"]["minio-init"])
    made = {init["STAGING_BUCKET"], init["BACKUP_BUCKET"]}
    staging = urlsplit(config.backup.staging_location.url)
    buckets = {d.bucket for d in config.backup.destination.destinations if isinstance(d, S3DestinationConfig)}
    assert staging.netloc == init["STAGING_BUCKET"]
    assert buckets == {init["BACKUP_BUCKET"]}
    assert made == buckets | {staging.netloc}
    (rule,) = json.loads(STAGING_LIFECYCLE.read_text(encoding="utf-8"))["Rules"]
    assert rule["Filter"]["Prefix"] == staging.path.strip("/") + "/"
    assert rule["Status"] == "Enabled" and rule["Expiration"]["Days"] >= 2  # a run is over within 23 h


def test_the_s3_connection_reaches_minio_with_backup_ops_own_key(compose: Compose) -> None:
    s3 = connection(compose["services"]["airflow-worker"], "backup_s3")
    endpoint = urlsplit(s3["extra"]["endpoint_url"])
    assert endpoint.hostname in compose["services"] and compose["services"][endpoint.hostname]["image"].startswith(
        "minio/minio:")
    init = environment(compose["services"]["minio-init"])
    assert env_var_of(s3["login"]) == env_var_of(init["BACKUP_S3_ACCESS_KEY"]) == "BACKUP_S3_ACCESS_KEY"
    assert env_var_of(s3["password"]) == env_var_of(init["BACKUP_S3_SECRET_KEY"])
    assert env_var_of(s3["login"]) != env_var_of(init["MINIO_ROOT_USER"])


def test_the_local_destination_is_a_volume_of_every_worker_that_publishes_and_of_the_ui(
        compose: Compose, config: BackupConfig) -> None:
    (local,) = [d for d in config.backup.destination.destinations if isinstance(d, LocalDestinationConfig)]
    for name in ("airflow-worker", "airflow-apiserver"):
        assert [m for m in mounts(compose["services"][name]) if m.named and covers(m, local.path)], name


def test_the_app_connections_are_the_logins_the_seed_job_creates(compose: Compose) -> None:
    worker, seed_env = compose["services"]["airflow-worker"], environment(compose["services"]["app-seed"])
    app, drill = connection(worker, "app_db"), connection(worker, "drill_server")
    assert (app["host"], app["login"], app["schema"]) == (seed_env["APP_DB_HOST"], seed_env["APP_DB_USER"],
                                                          seed_env["APP_DB_NAME"])
    assert env_var_of(app["password"]) == env_var_of(seed_env["APP_DB_PASSWORD"])
    assert (drill["host"], drill["login"]) == (seed_env["APP_DB_HOST"], seed_env["APP_DB_SUPERUSER"])
    assert env_var_of(drill["password"]) == env_var_of(seed_env["APP_DB_SUPERUSER_PASSWORD"])
    (files,) = [m for m in mounts(compose["services"]["app-seed"]) if m.named]
    assert (files.target, files.read_only) == (seed_env["APP_FILES_ROOT"], False)


# ---------------------------------------------------------------- the api-server's login file


def test_the_admin_password_file_holds_the_env_password_for_the_first_user(tmp_path: Path) -> None:
    target = tmp_path / "passwords.json"
    target.write_text('{"admin": "old"}\n')
    env = {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(target),
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
           "AIRFLOW_ADMIN_PASSWORD": "from-dot-env-1"}
    assert write_password_file(env) == target
    assert json.loads(target.read_text()) == {"admin": "from-dot-env-1"}
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["passwords.json"]


def test_the_admin_password_file_is_not_written_without_a_password(tmp_path: Path) -> None:
    env = {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp_path / "p.json"),
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin", "AIRFLOW_ADMIN_PASSWORD": ""}
    with pytest.raises(SystemExit, match="AIRFLOW_ADMIN_PASSWORD not set"):
        write_password_file(env)
    assert not (tmp_path / "p.json").exists()


def test_the_apiserver_writes_the_login_file_its_auth_manager_reads(compose: Compose) -> None:
    api = compose["services"]["airflow-apiserver"]
    assert command(api)[:2] == ["bash", "-c"]
    assert command(api)[2].startswith("python /opt/airflow/deploy/write_admin_password.py && exec airflow api-server")
    env = environment(api)
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(":")[0] == "admin"
    assert env_var_of(env["AIRFLOW_ADMIN_PASSWORD"]) == "AIRFLOW_ADMIN_PASSWORD"


# ---------------------------------------------------------------- the seed job, against a real server


@pytest.fixture
def seed_settings(pg_server: EmbeddedPostgres, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Seed settings for a login and database of this test's own on the test server, removed afterwards."""
    env = {"APP_DB_HOST": pg_server.host, "APP_DB_PORT": str(pg_server.port), "APP_DB_SUPERUSER": pg_server.superuser,
           "APP_DB_SUPERUSER_PASSWORD": pg_server.password, "APP_DB_USER": "seed_job_app",
           "APP_DB_PASSWORD": "first-password-1", "APP_DB_NAME": "seed_job_db", "APP_SAMPLE_SCALE": "0.01",
           "APP_FILES_ROOT": str(tmp_path / "app")}
    yield env
    pg_server.drop_database("seed_job_db")
    with pg_server.connect(autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS seed_job_app")


def _login(settings: SeedSettings, password: str) -> psycopg.Connection[Any]:
    return psycopg.connect(host=settings.host, port=settings.port, user=settings.app_user, password=password,
                           dbname=settings.database, connect_timeout=5)


def test_the_seed_job_creates_the_application_once_and_can_run_again(
        pg_server: EmbeddedPostgres, seed_settings: dict[str, str]) -> None:
    first = SeedSettings.from_env(seed_settings)
    lines = seed(first)
    invoices = sample_sizes(0.01)["invoices"]
    assert lines[:2] == [f"Login seed_job_app on {first.host}:{first.port}: created",
                         "Database seed_job_db: created, owned by seed_job_app"]
    assert lines[2].startswith("Sample data: loaded ")
    with pg_server.connect(autocommit=True) as conn:
        role = conn.execute("SELECT rolsuper, rolcanlogin FROM pg_roles WHERE rolname = 'seed_job_app'").fetchone()
        owner = conn.execute("SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'seed_job_db'").fetchone()
    assert role == (False, True) and owner == ("seed_job_app",)
    with _login(first, "first-password-1") as conn:
        assert conn.execute("SELECT count(*) FROM invoices").fetchone() == (invoices,)
    assert (first.files_root / ".env").is_file()
    assert list((first.files_root / "storage/app/public/uploads").rglob("*.pdf"))

    again = SeedSettings.from_env({**seed_settings, "APP_DB_PASSWORD": "second-password-2"})
    lines = seed(again)
    assert lines[:3] == [f"Login seed_job_app on {first.host}:{first.port}: updated",
                         "Database seed_job_db: exists, owned by seed_job_app", "Sample data: already loaded"]
    assert not any("password-" in line for line in lines)
    with _login(again, "second-password-2") as conn:
        assert conn.execute("SELECT count(*) FROM invoices").fetchone() == (invoices,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _login(again, "first-password-1").close()


def test_the_seed_job_names_a_missing_password_and_a_bad_scale() -> None:
    with pytest.raises(SystemExit, match=r"APP_DB_SUPERUSER_PASSWORD is not set; set it in \.env"):
        SeedSettings.from_env({"APP_DB_PASSWORD": "x"})
    with pytest.raises(SystemExit, match="APP_SAMPLE_SCALE must be a float, got 'lots'"):
        SeedSettings.from_env({"APP_DB_PASSWORD": "x", "APP_DB_SUPERUSER_PASSWORD": "y", "APP_SAMPLE_SCALE": "lots"})
    settings = SeedSettings.from_env({"APP_DB_PASSWORD": "pw-a", "APP_DB_SUPERUSER_PASSWORD": "pw-b"})
    assert "pw-a" not in repr(settings) and "pw-b" not in repr(settings)
    assert (settings.host, settings.app_user, settings.database) == ("app-db", "invoicing_app", "invoicing")


def test_environment_accepts_both_compose_forms() -> None:
    assert environment({"environment": ["A=1", "B"]}) == {"A": "1", "B": ""}
    assert environment({"environment": {"A": 1, "B": None}}) == {"A": "1", "B": ""}
