"""The page's two charts as inline SVG: archive size over time and restore-drill RTO over time.

The geometry (which points, where, the ticks) is ``backup_ops.core.chart``'s; this module only
draws it, every text escaped. No script and no external resource: the page works offline and
inside the UI's sandboxed iframe.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from html import escape

from backup_ops.core.catalog import newest_first_drills
from backup_ops.core.chart import Plot, Point, downsample, plot
from backup_ops.core.drill_report import DrillReport
from backup_ops.core.models import BackupFile, human_bytes

WIDTH, HEIGHT = 520, 170
MARKERS_UP_TO = 120  # beyond this many points, the line alone (a circle each would only blur)


def size_chart(backups: Sequence[BackupFile]) -> str:
    """Archive size over time, every backup the destination lists (thinned to a few hundred points)."""
    points = [Point(b.date.timestamp(), float(b.size), f"{_day(b.date.timestamp())}: {human_bytes(b.size)}")
              for b in backups]
    geometry = plot(downsample(points), width=WIDTH, height=HEIGHT, x_label=_moment_label(points), y_label=_bytes)
    return _svg(geometry, "chart-size", "Archive size over time", "No backups yet.")


def rto_chart(drills: Sequence[DrillReport]) -> str:
    """Each restore drill's RTO at the moment it finished; failed drills are marked (without an RTO, at 0)."""
    points = []
    for drill in reversed(newest_first_drills(drills)):
        rto = drill.rto_seconds
        shown = f"RTO {_seconds(rto)}" if rto is not None else "no RTO"
        points.append(Point(drill.finished_at.timestamp(), rto or 0.0,
                            f"{_day(drill.finished_at.timestamp())}: {drill.outcome}, {shown}",
                            "" if drill.succeeded else "failed"))
    geometry = plot(points, width=WIDTH, height=HEIGHT, x_label=_moment_label(points), y_label=_seconds)
    return _svg(geometry, "chart-rto", "Restore-drill RTO over time", "No restore drill yet.")


def _svg(geometry: Plot, kind: str, title: str, empty_text: str) -> str:
    m = geometry.margins
    left, right, top, bottom = m.left, geometry.width - m.right, m.top, geometry.height - m.bottom
    parts = [f'<svg class="chart {kind}" role="img" aria-label="{escape(title)}" '
             f'viewBox="0 0 {geometry.width} {geometry.height}" width="{geometry.width}" height="{geometry.height}" '
             'xmlns="http://www.w3.org/2000/svg">', f"<title>{escape(title)}</title>"]
    if geometry.empty:
        parts.append(f'<text class="empty" x="{geometry.width / 2}" y="{geometry.height / 2}" '
                     f'text-anchor="middle">{escape(empty_text)}</text></svg>')
        return "".join(parts)
    for y, label in geometry.y_ticks:
        parts.append(f'<line class="grid" x1="{left}" y1="{y}" x2="{right}" y2="{y}"/>'
                     f'<text class="tick" x="{left - 6}" y="{y + 4}" text-anchor="end">{escape(label)}</text>')
    for index, (x, label) in enumerate(geometry.x_ticks):
        anchor = "start" if index == 0 else "end" if index == len(geometry.x_ticks) - 1 else "middle"
        parts.append(f'<text class="tick" x="{x}" y="{bottom + 16}" text-anchor="{anchor}">{escape(label)}</text>')
    parts.append(f'<line class="axis" x1="{left}" y1="{bottom}" x2="{right}" y2="{bottom}"/>'
                 f'<line class="axis" x1="{left}" y1="{top}" x2="{left}" y2="{bottom}"/>')
    # The line joins the measured values; a flagged point (a failed drill, without an RTO) is a marker only.
    coords = " ".join(f"{x},{y}" for x, y, point in geometry.points if not point.flag)
    parts.append(f'<polyline class="series" points="{coords}"/>')
    if len(geometry.points) <= MARKERS_UP_TO:
        for x, y, point in geometry.points:
            flag = f" {escape(point.flag)}" if point.flag else ""
            parts.append(f'<circle class="point{flag}" cx="{x}" cy="{y}" r="3.5">'
                         f"<title>{escape(point.label)}</title></circle>")
    parts.append("</svg>")
    return "".join(parts)


def _day(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d")


def _moment_label(points: Sequence[Point]) -> Callable[[float], str]:
    """Dates for the x axis; with hours and minutes when the points span less than three days (UTC)."""
    span = max((p.x for p in points), default=0.0) - min((p.x for p in points), default=0.0)
    if span >= 3 * 86400:
        return _day
    return lambda epoch: datetime.fromtimestamp(epoch, UTC).strftime("%m-%d %H:%M")


def _bytes(value: float) -> str:
    return human_bytes(value)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 3600:
        return f"{value / 3600:.1f} h"
    if value >= 120:
        return f"{value / 60:.1f} min"
    return f"{value:.0f} s"
