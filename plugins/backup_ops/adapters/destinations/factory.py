"""Turn destination config into destination objects (S3 support is imported only when used)."""

from __future__ import annotations

from backup_ops.adapters.destinations.base import BackupDestination
from backup_ops.core.config import DestinationConfig, LocalDestinationConfig


def make_destination(config: DestinationConfig, backup_name: str) -> BackupDestination:
    """The destination object for one ``destination.destinations`` entry."""
    if isinstance(config, LocalDestinationConfig):
        from backup_ops.adapters.destinations.local import LocalDestination

        return LocalDestination(config.name, backup_name, config.path)
    from backup_ops.adapters.destinations.s3 import S3Destination

    return S3Destination.from_config(config, backup_name)
