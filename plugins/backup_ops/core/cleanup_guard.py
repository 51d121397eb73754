"""The last check before cleanup deletes anything: is carrying out this retention plan safe?"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from backup_ops.core.models import ArchiveIntegrity, BackupFile, is_backup_key
from backup_ops.core.retention import REASON_NEWEST, CleanupPlan, RetentionPolicy


def refusal_reason(plan: CleanupPlan, backups: Sequence[BackupFile], policy: RetentionPolicy,
                   backup_name: str, integrity: Sequence[ArchiveIntegrity] = ()) -> str | None:
    """Why deleting what ``plan`` says would be unsafe, or None when it is safe.

    Two kinds of trouble are caught before anything is deleted. A plan that does not match the
    listing (a lost or unknown path, the newest, the newest intact or a floor backup deleted, a
    damaged archive deleted, a key outside the backup folder) means a bug, and deleting on a bug
    is irreversible. A listing whose newest (undamaged) backup is older than the whole retention
    horizon means no backup was made for years, or, far more likely, the dates are wrong
    (modification times reset by a copy or restore): the plan would then erase the whole history
    but one backup. laravel-backup would delete; we stop and let a human look, because that is the
    one case where being wrong loses everything.
    """
    listed = {backup.path for backup in backups}
    kept = {backup.path for backup in plan.keep}
    deleted = {backup.path for backup in plan.delete}
    if kept & deleted or kept | deleted != listed or len(plan.keep) + len(plan.delete) != len(backups):
        return "the retention plan does not cover the listing exactly (a bug in the planner)."
    damaged = {check.path for check in integrity if check.damaged}
    if len(plan.keep) < min(policy.min_backups_kept, len(backups)) or (
        listed - damaged and REASON_NEWEST not in {plan.reasons[path] for path in kept}
    ):
        return "the retention plan would delete the newest backup or go below min_backups_kept (a bug in the planner)."
    checked_intact = [check.path for check in integrity if check.intact and check.path in listed]
    newest_intact = max(checked_intact, key=_dated(backups), default=None)
    if damaged & deleted or newest_intact in deleted:
        return "the retention plan would delete a damaged archive or the newest intact backup (a bug in the planner)."
    strays = sorted(path for path in deleted if not is_backup_key(path) or not path.startswith(f"{backup_name}/"))
    if strays:
        return f"the retention plan names {strays[0]!r}, which is not a .zip backup below {backup_name}/."
    if not plan.delete or not plan.periods:
        return None
    horizon = plan.periods[-1].end
    newest = max((b for b in backups if b.path not in damaged), key=lambda backup: backup.date)
    if newest.date < horizon:
        return (
            f"the newest backup, {newest.path}, is dated {newest.date.isoformat()}, before the whole retention "
            f"horizon ({horizon.isoformat()}), so the plan would leave only {len(plan.keep)} backup(s) of "
            f"{len(backups)}. Either no backup was made for years or the backups' dates are wrong (modification "
            "times reset by a copy?). Check the destination; if the plan logged above is right, delete by hand."
        )
    return None


def _dated(backups: Sequence[BackupFile]) -> Callable[[str], datetime]:
    """Sort key: a path's backup date (for picking the newest of several paths)."""
    dates = {backup.path: backup.date for backup in backups}
    return lambda path: dates[path]
