"""PublishBackupOperator: templated fields and on_kill reaching the destination."""

from __future__ import annotations

from backup_ops.adapters.destinations.local import LocalDestination
from backup_ops.airflow.operators import PublishBackupOperator


class RecordingDestination(LocalDestination):
    """A real local destination that also records cancel() calls."""

    cancelled = 0

    def cancel(self) -> None:
        self.cancelled += 1


class TestPublishBackupOperator:
    def test_template_fields(self):
        assert PublishBackupOperator.template_fields == ("destination", "archive")

    def test_on_kill_before_execute_is_harmless(self):
        PublishBackupOperator(task_id="publish", destination="local", archive={}).on_kill()

    def test_on_kill_cancels_the_destination_in_use(self, tmp_path):
        op = PublishBackupOperator(task_id="publish", destination="local", archive={})
        dest = RecordingDestination("local", "app", tmp_path)
        op._dest = dest
        op.on_kill()
        assert dest.cancelled == 1
