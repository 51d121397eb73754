"""laravel-backup's destination properties for a notification, read from the destinations themselves."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from backup_ops.core.config import BackupConfig
from backup_ops.core.notification import DestinationProperties

log = logging.getLogger(__name__)


def destination_properties(config: BackupConfig, names: Iterable[str]) -> tuple[DestinationProperties, ...]:
    """What each named destination holds now (one listing each); one that cannot be listed is logged and left out.

    Meant for destinations a run just reached (published to, cleaned), so the listing is cheap and
    the destination answers; a notification goes out without the properties it could not read.
    """
    from backup_ops.adapters.destinations.factory import make_destination

    found = []
    for name in names:
        try:
            destination = make_destination(config.destination(name), config.backup.name)
            found.append(DestinationProperties.of(name, destination.list_backups()))
        except Exception as exc:  # the notification must still go out
            log.warning("Destination %s: could not list its backups for the notification: %s", name, exc)
    return tuple(found)
