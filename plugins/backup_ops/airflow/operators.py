"""The classic operators of backup-ops: the ones that need more of Airflow than a TaskFlow function gets.

Each reads the config once in ``execute`` (after templates are rendered) and hands it to a step.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, Context

from backup_ops.adapters.destinations.base import BackupDestination
from backup_ops.adapters.destinations.factory import make_destination
from backup_ops.adapters.staging_store import StagedRun
from backup_ops.airflow.backup_steps import dump_database, dump_job, publish
from backup_ops.airflow.cleanup_steps import (
    LEFTOVER_AGE,
    clean_destination,
    cleanup_moment,
    retention_policy,
)
from backup_ops.airflow.fail_fast import permanent_errors_fail_fast
from backup_ops.core.config import load_config
from backup_ops.core.errors import ConfigError

if TYPE_CHECKING:
    from backup_ops.adapters.postgres.dump import DumpJob

class PublishBackupOperator(BaseOperator):
    """Publish the run's staged archive to one configured destination and verify it there.

    A classic operator rather than a TaskFlow function so ``on_kill`` can reach the destination:
    Airflow calls it when the task is stopped, and an S3 destination then aborts its multipart
    upload instead of leaving parts behind until a lifecycle rule removes them.
    """

    template_fields: Sequence[str] = ("destination", "archive")

    def __init__(self, *, destination: str, archive: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.destination = destination
        self.archive = archive
        self._dest: BackupDestination | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        with permanent_errors_fail_fast():
            config = load_config()
            self._dest = make_destination(config.destination(self.destination), config.backup.name)
            # The run's staging, reached from wherever this task runs (the archive is staged at its top level).
            staged = StagedRun.of(config, str(self.archive["path"]).rsplit("/", 1)[0])
            return publish(self._dest, self.archive, staged)

    def on_kill(self) -> None:
        if self._dest is not None:
            self._dest.cancel()


class DumpDatabaseOperator(BaseOperator):
    """Dump one configured database into the run's staging folder (mapped over ``source.databases``).

    A classic operator rather than a TaskFlow function so ``on_kill`` can stop pg_dump: it runs in
    a process group of its own (so that a timeout can kill everything it started) and would
    otherwise outlive a task that Airflow stops, holding a snapshot open on the production server.
    """

    template_fields: Sequence[str] = ("conn_id", "staging_dir")

    def __init__(self, *, conn_id: str, staging_dir: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.staging_dir = staging_dir
        self._job: DumpJob | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        with permanent_errors_fail_fast():
            config = load_config()
            run = StagedRun.of(config, self.staging_dir)
            with run.workdir() as work:
                self._job = dump_job(config, self.conn_id, str(work), sealed=run.remote)
                return dump_database(self._job, self.conn_id, run)

    def on_kill(self) -> None:
        if self._job is not None:
            self._job.cancel()


class BackupCleanupOperator(BaseOperator):
    """Delete the backups on one destination that the retention policy does not keep.

    :param destination: name of a ``backup.destination.destinations`` entry (templated).
    :param dry_run: log the plan and delete nothing; a bool, or ``"true"``/``"false"`` as
        rendered from ``{{ params.dry_run }}`` (templated).

    Retention is measured from the run's logical date (data interval end, else ``run_after``),
    never the clock, so re-running a past date decides the same; the age of leftovers of failed
    publishes is measured on the wall clock (a day), so a publish in flight is never touched.
    Returns a small summary (counts, bytes, damaged archives), never the lists of backups. A
    permanent error (a config error, a missing or unwritable destination, wrong credentials, every
    archive damaged) fails the task at once, without its retries.
    """

    template_fields: Sequence[str] = ("destination", "dry_run")
    ui_color = "#f4d8cd"

    def __init__(self, *, destination: str, dry_run: bool | str = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.destination = destination
        # Shadows BaseOperator's legacy ``dry_run()`` (render-only; nothing in Airflow 3 calls it) so the
        # argument, the template field and the DAG Param all keep laravel-backup's flag name.
        self.dry_run = dry_run  # type: ignore[assignment,method-assign]

    def execute(self, context: Context) -> dict[str, Any]:
        with permanent_errors_fail_fast():
            dry_run = parse_dry_run(self.dry_run)
            if not isinstance(self.destination, str) or not self.destination.strip():
                raise ConfigError(
                    f"BackupCleanupOperator.destination must be a destination name, got {self.destination!r}."
                )
            now = cleanup_moment(context)
            config = load_config()
            destination = make_destination(config.destination(self.destination.strip()), config.backup.name)
            return clean_destination(destination, retention_policy(config), now, dry_run=dry_run,
                                     leftovers_before=datetime.now(UTC) - LEFTOVER_AGE, log=self.log)


def parse_dry_run(value: object) -> bool:
    """The rendered ``dry_run`` as a bool; anything but a clear true/false is refused, never guessed.

    A typo in a flag that decides between "log only" and "delete" must not silently mean "delete".
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f"BackupCleanupOperator.dry_run must be true or false, got {value!r}.")
