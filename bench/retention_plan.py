"""Benchmark: plan retention for 100 000 backups and compare with just sorting them.

Run with ``.venv/bin/python bench/retention_plan.py``. Sorting is the floor any plan must pay
(laravel-backup sorts newest first before anything else), so the ratio shows how much the rules
themselves cost on top; a ratio that grows with the input size would mean a quadratic slip.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

import argparse
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from backup_ops.core.models import BackupFile
from backup_ops.core.retention import RetentionPolicy, plan_cleanup

NOW = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
# The shipped config's values (include/backup_config.yaml), not laravel-backup's defaults.
SHIPPED_POLICY = RetentionPolicy(7, 30, 12, 12, 3, 5000)


def synthetic_history(count: int, per_day: int, seed: int) -> list[BackupFile]:
    """``count`` backups, ``per_day`` a day at jittered times, going back as many years as needed, shuffled."""
    rng = random.Random(seed)
    backups = []
    for index in range(count):
        day, slot = divmod(index, per_day)
        moment = NOW - timedelta(days=day, hours=slot * 24 / per_day, seconds=rng.randint(0, 600))
        backups.append(BackupFile(f"app/{moment:%Y-%m-%d-%H-%M-%S}-{index}.zip", moment, rng.randint(1, 2**20)))
    rng.shuffle(backups)  # listings are not sorted by date; make the sort do real work
    return backups


def best_of(repeats: int, action: Callable[[], object]) -> float:
    """The fastest of ``repeats`` runs, in seconds: the least disturbed by the rest of the machine."""
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return min(timings)


def main() -> None:
    """Time both, print the numbers and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--per-day", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    backups = synthetic_history(args.count, args.per_day, seed=42)
    years = (NOW - min(b.date for b in backups)).days / 365.25
    sort_s = best_of(args.repeats, lambda: sorted(backups, key=lambda b: b.date, reverse=True))
    plan_s = best_of(args.repeats, lambda: plan_cleanup(backups, SHIPPED_POLICY, NOW))
    plan = plan_cleanup(backups, SHIPPED_POLICY, NOW)

    print(f"backups:        {len(backups):,} ({args.per_day} a day over {years:.1f} years)")
    print(f"policy:         {SHIPPED_POLICY.describe()}")
    print(f"plan:           kept {len(plan.keep):,}, deleted {len(plan.delete):,}")
    print(f"sort only:      {sort_s * 1000:8.1f} ms  (best of {args.repeats})")
    print(f"plan_cleanup:   {plan_s * 1000:8.1f} ms  (best of {args.repeats})")
    print(f"ratio:          {plan_s / sort_s:8.1f} × sorting")


if __name__ == "__main__":
    main()
