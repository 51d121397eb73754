"""What the backup-ops page and its endpoints show, read through the monitor's code and kept for a while.

Every destination is gathered by ``take_snapshot`` and judged by ``health.evaluate``, as
``backup_monitor`` and ``python -m backup_ops list`` do, all destinations at once (a thread
each), and the result is kept for ``ui.cache_seconds``. The config file is read again with every
refresh, so an edit shows without restarting the api-server.

Once expired, the state is still shown while one background thread reads the destinations again;
the requests after it has finished get the new state. So only the very first request (or the
first after the config broke) waits for a read, and the concurrent ones wait for that same read:
with 10,000 backups on S3 a read is mostly the listing (seconds), and the page stays fast whenever
it is asked for. The price: an answer may come from a read up to ``ui.cache_seconds`` plus one
read's time old (its ``checked_at`` says when). With ``ui.cache_seconds: 0`` every request reads
the destinations itself.

A backup's receipt state is read only when its page is shown: the snapshot already checked the
newest archives down to the first intact one; the others on the page are checked with the
destination's own ``check_integrity`` (on S3 a GET of the receipt and a HEAD; on a local disk the
archive is hashed, as ``list`` does), eight at a time, and kept with the snapshot. So 10,000
backups on S3 cost one listing (20 requests of 1,000 keys) per refresh, plus two requests per
backup on a page shown.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

from backup_ops.adapters.destinations.base import BackupDestination
from backup_ops.core.catalog import BackupRow, PageWindow, backup_rows
from backup_ops.core.config import BackupConfig, DestinationConfig, load_config
from backup_ops.core.errors import BackupError
from backup_ops.core.health import DestinationSnapshot, HealthReport, evaluate
from backup_ops.core.models import ArchiveIntegrity, BackupFile

RECEIPT_CHECKS_AT_ONCE = 8


@dataclass(frozen=True)
class DestinationState:
    """One destination as last read: the monitor's report on it, and the destination to read more from."""

    report: HealthReport
    destination: BackupDestination | None  # None: it could not even be set up from the config

    @property
    def name(self) -> str:
        return self.report.snapshot.destination


@dataclass
class CatalogState:
    """Every destination as read at ``checked_at``, with the receipt checks made since for the pages shown."""

    config: BackupConfig
    destinations: tuple[DestinationState, ...]
    checked_at: datetime
    taken: float  # the clock's reading when it was read
    checks: dict[str, dict[str, ArchiveIntegrity | str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        for entry in self.destinations:
            self.checks[entry.name] = {check.path: check for check in entry.report.snapshot.integrity}

    def destination(self, name: str) -> DestinationState | None:
        return next((entry for entry in self.destinations if entry.name == name), None)

    @property
    def reports(self) -> list[HealthReport]:
        return [entry.report for entry in self.destinations]


class CatalogCache:
    """The destinations' state, read again in the background once it is older than the config's ``ui.cache_seconds``."""

    def __init__(self, load: Callable[[], BackupConfig] = load_config,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._load = load
        self._clock = clock
        self._state: CatalogState | None = None
        self._reading = threading.Lock()    # one synchronous read at a time (a cold cache)
        self._guard = threading.Lock()      # one background refresh at a time
        self._refresh: threading.Thread | None = None

    def state(self) -> CatalogState:
        """The current state; raises ConfigError when the config cannot be read and there is no state to show.

        Fresh: returned as it is. Expired: returned too, while a background thread reads the
        destinations again (the next requests get the new state once it is there). None yet, or
        ``ui.cache_seconds`` is 0: read now, the other requests waiting for this one read.
        """
        current = self._state
        if current is not None and not self._expired(current):
            return current
        if current is not None and current.config.ui.cache_seconds > 0:
            self._refresh_in_background()
            return current
        with self._reading:
            current = self._state
            if current is None or self._expired(current):
                current = self._state = read_state(self._load(), self._clock())
            return current

    def wait(self, timeout: float = 60) -> None:
        """Until a background refresh that is running has finished (for tests and benchmarks)."""
        refresh = self._refresh
        if refresh is not None:
            refresh.join(timeout)

    def _refresh_in_background(self) -> None:
        with self._guard:
            if self._refresh is not None and self._refresh.is_alive():
                return
            self._refresh = threading.Thread(target=self._read_again, name="backup-ops-ui-refresh", daemon=True)
            self._refresh.start()

    def _read_again(self) -> None:
        try:
            fresh = read_state(self._load(), self._clock())
        except Exception:  # the config broke meanwhile: the next request reads it itself and reports why
            self._state = None
            return
        self._state = fresh

    def settings(self) -> BackupConfig:
        """The config of the current state, or the file read now when that has expired (without the destinations)."""
        current = self._state
        if current is not None and not self._expired(current):
            return current.config
        return self._load()

    def age(self, state: CatalogState) -> float:
        """Seconds since ``state`` was read."""
        return max(0.0, self._clock() - state.taken)

    def rows(self, state: CatalogState, name: str, window: PageWindow) -> list[BackupRow]:
        """The backups of ``window`` on destination ``name``, each with its receipt state (checked once per state)."""
        entry = state.destination(name)
        if entry is None:
            return []
        backups = entry.report.snapshot.backups[window.start:window.end]
        known = state.checks[name]
        if entry.destination is not None and any(b.path not in known for b in backups):
            with state.lock:  # one request checks a page; another asking for it meanwhile waits for the result
                missing = [b for b in backups if b.path not in known]
                known.update(check_receipts(entry.destination, missing))
        return backup_rows(backups, known)

    def _expired(self, state: CatalogState) -> bool:
        return self._clock() - state.taken >= state.config.ui.cache_seconds


def read_state(config: BackupConfig, taken: float) -> CatalogState:
    """Gather and judge every configured destination now, one thread each."""
    now = datetime.now(UTC)
    destinations = config.backup.destination.destinations
    with ThreadPoolExecutor(max_workers=max(1, len(destinations)), thread_name_prefix="backup-ops-ui") as pool:
        states = tuple(pool.map(lambda dest: read_destination(config, dest, now), destinations))
    return CatalogState(config, states, now, taken)


def read_destination(config: BackupConfig, dest_config: DestinationConfig, now: datetime) -> DestinationState:
    """One destination as ``backup_monitor`` sees it at ``now``."""
    from backup_ops.adapters.destinations.factory import make_destination
    from backup_ops.adapters.destinations.snapshot import take_snapshot

    try:
        destination = make_destination(dest_config, config.backup.name)
    except BackupError as exc:
        snapshot = DestinationSnapshot(backup_name=config.backup.name, destination=dest_config.name,
                                       location="", reachable=False, unreachable_reason=str(exc))
        return DestinationState(evaluate(snapshot, config.monitor, now), None)
    return DestinationState(evaluate(take_snapshot(config, destination), config.monitor, now), destination)


def check_receipts(destination: BackupDestination, backups: Sequence[BackupFile]
                   ) -> dict[str, ArchiveIntegrity | str]:
    """Each backup against its receipt, a few at a time; a string says why one could not be checked."""

    def check(backup: BackupFile) -> ArchiveIntegrity | str:
        try:
            return destination.check_integrity(backup.path)
        except BackupError as exc:
            return str(exc)
        except Exception as exc:  # a page shows what it meets; a surprise is a reason too, not a crash
            return f"{type(exc).__name__}: {exc}"

    if not backups:
        return {}
    with ThreadPoolExecutor(max_workers=min(RECEIPT_CHECKS_AT_ONCE, len(backups)),
                            thread_name_prefix="backup-ops-receipts") as pool:
        return dict(zip((b.path for b in backups), pool.map(check, backups), strict=True))
