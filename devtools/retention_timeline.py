"""Draw the retention timeline in docs/retention.md from the retention core itself.

The worked example of the docs, computed rather than drawn by hand: a daily backup at 02:00 UTC
since 2022-01-01, planned at 2026-11-26 01:00 UTC with the shipped policy. Writes
``docs/img/retention-timeline.svg`` (plain SVG text, no plotting library) and, with ``--ascii``,
prints the plain-text timeline and the table of survivors used in the markdown::

    .venv/bin/python -m devtools.retention_timeline            # rewrite the SVG
    .venv/bin/python -m devtools.retention_timeline --ascii    # print the text version
"""

from __future__ import annotations

import sys
from pathlib import Path

# runnable without the Airflow plugins folder on the path
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

import argparse
import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape

from backup_ops.core.config import RetentionSettings
from backup_ops.core.models import BackupFile
from backup_ops.core.retention import CleanupPlan, RetentionPeriod, RetentionPolicy, plan_cleanup

ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
HISTORY_START = datetime(2022, 1, 1, 2, 0, tzinfo=UTC)
# The config's default cleanup.default_strategy, which include/backup_config.yaml spells out.
SHIPPED_POLICY = RetentionPolicy.from_settings(RetentionSettings())
BACKUP_SIZE = 40 * 1024 * 1024  # small enough that the 5000 MB limit does not bite in the example
SVG_PATH = ROOT / "docs" / "img" / "retention-timeline.svg"

# rule → (letter in the text version, colour in the picture), newest tier first
RULES: dict[str, tuple[str, str]] = {
    "newest": ("N", "#111827"),
    "keep-all": ("a", "#7c3aed"),
    "daily": ("d", "#2563eb"),
    "weekly": ("w", "#059669"),
    "monthly": ("m", "#d97706"),
    "yearly": ("y", "#dc2626"),
}


def daily_history(start: datetime = HISTORY_START, now: datetime = NOW) -> list[BackupFile]:
    """One backup a day at 02:00 UTC (the backup DAG's schedule) from ``start`` until ``now``."""
    backups = []
    moment = start
    while moment <= now:
        backups.append(BackupFile(f"app/{moment:%Y-%m-%d-%H-%M-%S}.zip", moment, BACKUP_SIZE))
        moment += timedelta(days=1)
    return backups


def rule_of(reason: str) -> str | None:
    """The tier that kept a backup (``daily``, …), or None for a deletion."""
    if reason == "newest":
        return "newest"
    if reason == "keep-all window":
        return "keep-all"
    tier = reason.split(" ", 1)[0]
    return tier if tier in RULES else None


def kept_by_rule(plan: CleanupPlan) -> list[tuple[BackupFile, str]]:
    """Each kept backup with the tier that kept it, newest first."""
    return [(backup, rule_of(plan.reasons[backup.path]) or "keep-all") for backup in plan.keep]


# ---------------------------------------------------------------------------- scales


def linear_scale(first: datetime, last: datetime, x0: float, x1: float) -> Callable[[datetime], float]:
    """Calendar time → x, oldest on the left."""
    span = (last - first).total_seconds()
    return lambda moment: x0 + (x1 - x0) * (moment - first).total_seconds() / span


def age_scale(now: datetime, oldest: datetime, x0: float, x1: float) -> Callable[[datetime], float]:
    """Calendar time → x on a logarithmic age axis (now on the right), so recent tiers stay readable."""
    shortest = math.log(0.5)  # half a day: the newest daily backup is at least this old in practice
    longest = math.log(max((now - oldest).total_seconds() / 86400, 1.0))

    def x(moment: datetime) -> float:
        age_days = max((now - moment).total_seconds() / 86400, 0.5)
        return x1 - (x1 - x0) * (math.log(age_days) - shortest) / (longest - shortest)

    return x


# ---------------------------------------------------------------------------- text version


def ascii_timeline(plan: CleanupPlan, backups: Sequence[BackupFile], now: datetime, width: int = 100) -> str:
    """The plan as three text rows on a logarithmic age axis: kept backups, periods, ages."""
    oldest = min(b.date for b in backups)
    x = age_scale(now, oldest, 0, width - 1)
    column = lambda moment: min(width - 1, max(0, round(x(moment))))  # noqa: E731

    kept = [" "] * width
    for backup in plan.delete:
        kept[column(backup.date)] = "·"
    # oldest first so that, where two kept backups share a column, the newer tier shows
    for backup, rule in reversed(kept_by_rule(plan)):
        kept[column(backup.date)] = RULES[rule][0]

    periods = ["-"] * width
    segments = [("all", now, plan.periods[0].start)] + [(p.name, p.start, p.end) for p in plan.periods]
    segments.append(("deleted", plan.periods[-1].end, oldest))
    for name, newer, older in segments:
        left, right = column(older), column(newer)
        label = f" {name} "
        if right - left > len(label) + 1:
            middle = (left + right + 1) // 2 - len(label) // 2
            periods[middle : middle + len(label)] = label
    for _, newer, _ in segments:
        periods[column(newer)] = "|"
    periods[0] = "|"

    ages = [" "] * width
    for label, days in (("1d", 1), ("1w", 7), ("1mo", 30), ("3mo", 91), ("1y", 365), ("2y", 730), ("4y", 1461)):
        if now - timedelta(days=days) >= oldest:
            at = column(now - timedelta(days=days))
            ages[at : at + len(label)] = label
    legend = "  ".join(f"{letter} {rule}" for rule, (letter, _) in RULES.items()) + "  · deleted only"
    rows = ["".join(kept).rstrip(), "".join(periods), "".join(ages).rstrip(), f"age →  ({legend})"]
    return "\n".join(rows)


def survivors_table(plan: CleanupPlan) -> str:
    """A markdown table: how many backups each tier keeps, the oldest and newest of them."""
    lines = ["| rule | kept | newest kept | oldest kept |", "|---|---:|---|---|"]
    for rule in RULES:
        dates = [b.date for b, r in kept_by_rule(plan) if r == rule]
        if dates:
            lines.append(f"| {rule} | {len(dates)} | {max(dates):%Y-%m-%d %H:%M} | {min(dates):%Y-%m-%d %H:%M} |")
    deleted = len(plan.delete)
    lines.append(f"| *(deleted)* | {deleted} | | |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- picture


def svg_timeline(plan: CleanupPlan, backups: Sequence[BackupFile], now: datetime) -> str:
    """Two panels, calendar time and log age, with the periods shaded and every kept backup a tick."""
    width, left, right = 960, 20, 940
    oldest = min(b.date for b in backups)
    bands = [("keep-all", now, plan.periods[0].start)] + [(p.name, p.start, p.end) for p in plan.periods]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="350" viewBox="0 0 {width} 350" '
        'font-family="Helvetica, Arial, sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="#ffffff"/>',
        f'<text x="{left}" y="22" font-size="14" font-weight="bold">Backups kept at {now:%Y-%m-%d %H:%M} UTC '
        f"from one backup a day since {oldest:%Y-%m-%d}</text>",
        f'<text x="{left}" y="40" fill="#374151">{escape(_policy_line(plan))}</text>',
    ]
    linear = linear_scale(oldest, now, left, right)
    out += _panel(plan, backups, bands, linear, top=70, title="Calendar time")
    ticks = [(f"{year}", linear(datetime(year, 1, 1, tzinfo=UTC))) for year in range(oldest.year + 1, now.year + 1)]
    out += _axis(ticks, y=150)
    log_age = age_scale(now, oldest, left, right)
    out += _panel(plan, backups, bands, log_age, top=200, title="Age, logarithmic (recent tiers stretched)")
    ages = [("1 day", 1), ("1 week", 7), ("1 month", 30), ("3 months", 91), ("1 year", 365), ("2 years", 730),
            ("4 years", 1461)]
    out += _axis([(label, log_age(now - timedelta(days=days))) for label, days in ages], y=280)
    out += _legend(y=330, x=left)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _policy_line(plan: CleanupPlan) -> str:
    counts = {rule: 0 for rule in RULES}
    for _, rule in kept_by_rule(plan):
        counts[rule] += 1
    kept = ", ".join(f"{n} {rule}" for rule, n in counts.items() if n)
    return f"kept {len(plan.keep)} ({kept}); deleted {len(plan.delete)}"


def _panel(
    plan: CleanupPlan,
    backups: Sequence[BackupFile],
    bands: list[tuple[str, datetime, datetime]],
    x: Callable[[datetime], float],
    top: int,
    title: str,
) -> list[str]:
    height = 56
    oldest = min(b.date for b in backups)
    out = [f'<text x="20" y="{top - 6}" font-weight="bold" fill="#374151">{escape(title)}</text>']
    deleted_from, deleted_to = x(oldest), x(plan.periods[-1].end)
    out.append(f'<rect x="{deleted_from:.1f}" y="{top}" width="{deleted_to - deleted_from:.1f}" height="{height}" '
               'fill="#e5e7eb"/>')
    out.append(_label("deleted", (deleted_from + deleted_to) / 2, top + height / 2 + 4, deleted_to - deleted_from))
    for name, newer, older in bands:
        x0, x1 = x(older), x(newer)
        colour = RULES[name][1]
        out.append(f'<rect x="{x0:.1f}" y="{top}" width="{x1 - x0:.1f}" height="{height}" fill="{colour}" '
                   'fill-opacity="0.10" stroke="#9ca3af" stroke-width="0.5"/>')
        out.append(_label(name, (x0 + x1) / 2, top + 12, x1 - x0))
    # every backup that existed, as one faint line: individual deleted ticks would bloat the file
    out.append(f'<line x1="{x(oldest):.1f}" y1="{top + height - 6}" x2="{x(plan.keep[0].date):.1f}" '
               f'y2="{top + height - 6}" stroke="#9ca3af" stroke-width="3"/>')
    for backup, rule in kept_by_rule(plan):
        bx = x(backup.date)
        out.append(f'<line x1="{bx:.1f}" y1="{top + 18}" x2="{bx:.1f}" y2="{top + height - 2}" '
                   f'stroke="{RULES[rule][1]}" stroke-width="1.6"><title>{escape(backup.path)}: '
                   f"{escape(plan.reasons[backup.path])}</title></line>")
    return out


def _label(text: str, cx: float, y: float, room: float) -> str:
    if room < len(text) * 6.2:  # too narrow to read: leave it to the legend
        return ""
    return f'<text x="{cx:.1f}" y="{y:.1f}" text-anchor="middle" fill="#374151">{escape(text)}</text>'


def _axis(ticks: list[tuple[str, float]], y: int) -> list[str]:
    out = [f'<line x1="20" y1="{y - 16}" x2="940" y2="{y - 16}" stroke="#6b7280" stroke-width="0.8"/>']
    for label, tx in ticks:
        out.append(f'<line x1="{tx:.1f}" y1="{y - 16}" x2="{tx:.1f}" y2="{y - 11}" stroke="#6b7280"/>')
        out.append(f'<text x="{tx:.1f}" y="{y}" text-anchor="middle" fill="#4b5563">{escape(label)}</text>')
    return out


def _legend(y: int, x: int) -> list[str]:
    out = []
    for rule, (_, colour) in RULES.items():
        out.append(f'<line x1="{x}" y1="{y - 9}" x2="{x}" y2="{y + 3}" stroke="{colour}" stroke-width="3"/>')
        out.append(f'<text x="{x + 7}" y="{y + 1}" fill="#374151">kept: {rule}</text>')
        x += 110
    out.append(f'<line x1="{x}" y1="{y - 3}" x2="{x + 20}" y2="{y - 3}" stroke="#9ca3af" stroke-width="3"/>')
    out.append(f'<text x="{x + 27}" y="{y + 1}" fill="#374151">backups that existed (daily)</text>')
    return out


def main() -> None:
    """Write the SVG, or print the text timeline and table with ``--ascii``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ascii", action="store_true", help="print the text timeline and table instead")
    parser.add_argument("--output", type=Path, default=SVG_PATH)
    args = parser.parse_args()

    backups = daily_history()
    plan = plan_cleanup(backups, SHIPPED_POLICY, NOW)
    if args.ascii:
        print(ascii_timeline(plan, backups, NOW))
        print()
        print(survivors_table(plan))
        print()
        print("\n".join(_describe_period(p) for p in plan.periods))
        return
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(svg_timeline(plan, backups, NOW), encoding="utf-8")
    print(f"wrote {args.output} ({args.output.stat().st_size:,} bytes)")


def _describe_period(period: RetentionPeriod) -> str:
    return f"{period.name:8} {period.end:%Y-%m-%d %H:%M} … {period.start:%Y-%m-%d %H:%M}"


if __name__ == "__main__":
    main()
