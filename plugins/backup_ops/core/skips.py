"""Files not archived as they were listed: each one logged and counted, and the reasons that fail the run.

Selection (``files``) and the archive (``archive``) both meet files they cannot back up as
listed: a FIFO, a name restore would refuse, a file removed or swapped for a link in between.
Each becomes a ``SkippedFile`` with a reason code; ``SkipTally`` logs it once, counts it by
reason, and turns the first ones whose reason is in ``source.files.fail_on`` into one
FileSelectionError naming the file and the key to change.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping

from backup_ops.core.errors import FileSelectionError
from backup_ops.core.models import SkippedFile

FAIL_ON_KEY = "backup.source.files.fail_on"
_NAMED_IN_ERROR = 3

_FIX = {
    "vanished": "exclude files that come and go (caches, sessions, temporary files) or run the backup again",
    "replaced": "check who swapped it (a link swapped in can expose files outside the backup) and run the backup "
                "again",
    "unreadable": "fix its permissions or exclude it",
    "changed": "exclude it or back it up while it is not being written",
    "bad_name": "rename it or exclude it",
    "fifo": "exclude it",
    "socket": "exclude it",
    "device": "exclude it",
}
# A retry cannot fix these: the same file is there, the same way, on the next attempt.
_PERMANENT = frozenset({"unreadable", "bad_name", "fifo", "socket", "device"})


class SkipTally:
    """Counts skipped files by reason, logs each one, and keeps the first ones that fail the run."""

    def __init__(self, fail_on: Collection[str], log: logging.Logger) -> None:
        self.fail_on = frozenset(fail_on)
        self.log = log
        self.counts: dict[str, int] = {}
        self.failing: list[SkippedFile] = []
        self.failing_count = 0

    def add(self, skip: SkippedFile, *, announce: bool = True) -> bool:
        """Record ``skip`` (logging it when ``announce``); True when its reason fails the run."""
        self.counts[skip.reason] = self.counts.get(skip.reason, 0) + 1
        if announce:
            # A file that changed while read is in the archive, as read; every other one is not.
            self.log.warning("%s: %s %s [%s].", "Kept as read" if skip.reason == "changed" else "Skipped",
                             skip.path or skip.name, skip.detail, skip.reason)
        if skip.reason not in self.fail_on:
            return False
        self.failing_count += 1
        if len(self.failing) < _NAMED_IN_ERROR:
            self.failing.append(skip)
        return True

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> str:
        """``3 files skipped (1 fifo, 2 vanished)``, or ``no files skipped``."""
        return describe_counts(self.counts)

    def failure(self) -> FileSelectionError | None:
        """The error for the skips whose reason is in fail_on, or None when there are none."""
        if not self.failing:
            return None
        first, others = self.failing[0], self.failing[1:]
        more = self.failing_count - 1
        also = ""
        if more:
            also = f" (and {more} more: {', '.join(s.path or s.name for s in others)}"
            also += ", …)" if more > len(others) else ")"
        return FileSelectionError(
            f"File {first.path or first.name} {first.detail}{also}, and {FAIL_ON_KEY} lists {first.reason!r}: "
            f"{_FIX.get(first.reason, 'exclude it')}, or remove {first.reason!r} from {FAIL_ON_KEY} to back up "
            "without it.",
            retryable=first.reason not in _PERMANENT,
        )


def describe_counts(counts: Mapping[str, int]) -> str:
    """``3 files skipped (1 fifo, 2 vanished)`` from counts by reason."""
    total = sum(counts.values())
    if not total:
        return "no files skipped"
    by_reason = ", ".join(f"{counts[reason]} {reason}" for reason in sorted(counts) if counts[reason])
    return f"{total} file{'' if total == 1 else 's'} skipped ({by_reason})"
