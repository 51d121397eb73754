"""PublishBackupOperator: one destination's publish step, with an ``on_kill`` that aborts uploads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from backup_ops.adapters.destinations.base import BackupDestination
from backup_ops.airflow.backup_steps import publish
from backup_ops.core.config import load_config


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
        from backup_ops.adapters.destinations.factory import make_destination

        config = load_config()
        self._dest = make_destination(config.destination(self.destination), config.backup.name)
        return publish(self._dest, self.archive)

    def on_kill(self) -> None:
        if self._dest is not None:
            self._dest.cancel()
