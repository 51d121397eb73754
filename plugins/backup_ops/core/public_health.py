"""The health answer an uptime monitor or load balancer polls: the monitor's verdict, with nothing to hide in it.

``GET /backup-ops/health`` is public by default, so what it shows is shaped here, from the
monitor's ``HealthReport`` of each destination: reachable, healthy, each failed check with its
sentence, the newest backup's age, used storage against the limit, and one overall status. It
never shows a secret, a host path or an archive name: the check sentences name archives ("The
newest backup invoicing-app/2026-11-26-02-00-00.zip is damaged …") and locations (``s3://…``,
``file:///…``, an endpoint URL), so ``redact`` replaces every archive the destination holds or
a drill report names, every location, and anything else shaped like a URL, an archive or an
absolute path, by a placeholder. Secrets never reach a sentence in the first place (backup-ops
never puts one there); a URL's credentials would be removed with the URL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from backup_ops.core.health import HealthReport

HEALTH_FORMAT_VERSION = 1
ARCHIVE = "[archive]"
LOCATION = "[location]"
PATH = "[path]"

_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s()<>'\"]*")
_ARCHIVE_NAME = re.compile(r"[^\s()<>'\"]*\.zip\b")
# An absolute path: a '/' that starts a word (not the middle of 'a/b', '1/2' or a placeholder) and a name.
_ABSOLUTE_PATH = re.compile(r"(?<![\w./\[\]])/[\w.-][^\s()<>'\",;]*")
_TRAILING = ".:;,"  # a sentence's punctuation after a URL or a path is not part of it


def redact(text: str, archives: Iterable[str] = (), locations: Iterable[str] = ()) -> str:
    """``text`` with archives, locations, URLs and absolute paths replaced by placeholders."""
    for known, placeholder in ((sorted(set(locations), key=len, reverse=True), LOCATION),
                               (sorted(set(archives), key=len, reverse=True), ARCHIVE)):
        for value in known:
            if value:
                text = text.replace(value, placeholder)
    text = _URL.sub(lambda m: _keep_trailing(m, LOCATION), text)
    text = _ARCHIVE_NAME.sub(ARCHIVE, text)
    return _ABSOLUTE_PATH.sub(lambda m: _keep_trailing(m, PATH), text)


def _keep_trailing(match: re.Match[str], placeholder: str) -> str:
    found = match.group(0)
    return placeholder + found[len(found.rstrip(_TRAILING)):]


def _named_in(report: HealthReport) -> tuple[list[str], list[str]]:
    """(the archives, the locations) that sentences about this destination may name."""
    snapshot = report.snapshot
    archives = [b.path for b in snapshot.backups] + [d.archive for d in snapshot.drill_reports]
    archives += [name.rsplit("/", 1)[-1] for name in archives]
    return archives, [snapshot.location]


def public_destination(report: HealthReport) -> dict[str, Any]:
    """One destination's health, as an uptime monitor may see it."""
    snapshot = report.snapshot
    archives, locations = _named_in(report)
    newest = snapshot.backups[0] if snapshot.backups else None
    listed = snapshot.reachable
    return {
        "destination": snapshot.destination,
        "reachable": snapshot.reachable,
        "healthy": report.healthy,
        "failed_checks": [{"name": check.name, "sentence": redact(check.sentence, archives, locations)}
                          for check in report.failures],
        "backup_count": len(snapshot.backups) if listed else None,
        "newest_backup_age_seconds": round((report.checked_at - newest.date).total_seconds()) if newest else None,
        "used_storage": snapshot.used_storage if listed else None,
        "storage_limit": report.storage_limit,
    }


def public_health(backup_name: str, reports: Sequence[HealthReport], checked_at: datetime) -> dict[str, Any]:
    """Every destination's health and the overall status: healthy only when every destination is."""
    destinations = [public_destination(report) for report in reports]
    healthy = bool(destinations) and all(d["healthy"] for d in destinations)
    return {"format_version": HEALTH_FORMAT_VERSION, "status": "healthy" if healthy else "unhealthy",
            "healthy": healthy, "backup_name": backup_name, "checked_at": checked_at.isoformat(),
            "destinations": destinations}


def unavailable_health(reason: str, checked_at: datetime) -> dict[str, Any]:
    """The answer when the health cannot be computed at all (the config cannot be read): unhealthy, and why."""
    return {"format_version": HEALTH_FORMAT_VERSION, "status": "unhealthy", "healthy": False, "backup_name": None,
            "checked_at": checked_at.isoformat(), "destinations": [], "error": redact(reason)}
