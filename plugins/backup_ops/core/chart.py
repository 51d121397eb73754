"""The two small charts of the backup-ops page, as geometry: archive size over time, restore-drill RTO over time.

Pure: a series of points (x: a moment in epoch seconds, y: a value) becomes pixel coordinates in
a box of a given size, with a few labelled ticks on each axis; drawing them (inline SVG) is the
page's business. A destination may hold thousands of backups, so ``downsample`` keeps at most a
few hundred points, in time order: per run of neighbouring points the largest (a size spike stays
visible), and always the first and the last.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

MAX_POINTS = 300
TICKS = 4


@dataclass(frozen=True)
class Point:
    """One value at one moment; ``label`` describes it (a tooltip), ``flag`` marks it (e.g. a failed drill)."""

    x: float
    y: float
    label: str = ""
    flag: str = ""


@dataclass(frozen=True)
class Margins:
    top: int = 10
    right: int = 12
    bottom: int = 22
    left: int = 64


@dataclass(frozen=True)
class Plot:
    """Points placed in a ``width`` × ``height`` box (y grows downwards), and the axes' ticks."""

    width: int
    height: int
    margins: Margins
    points: tuple[tuple[float, float, Point], ...]
    x_ticks: tuple[tuple[float, str], ...]
    y_ticks: tuple[tuple[float, str], ...]

    @property
    def empty(self) -> bool:
        return not self.points


def downsample(points: Sequence[Point], max_points: int = MAX_POINTS) -> list[Point]:
    """At most ``max_points`` of ``points`` in time order: the first, the last, and each run's largest value."""
    ordered = sorted(points, key=lambda p: p.x)
    if len(ordered) <= max_points:
        return ordered
    if max_points < 3:
        return [ordered[0], ordered[-1]][:max_points]
    inner = ordered[1:-1]
    runs = max_points - 2
    kept = [ordered[0]]
    for index in range(runs):
        run = inner[index * len(inner) // runs:(index + 1) * len(inner) // runs]
        if run:
            kept.append(max(run, key=lambda p: p.y))
    kept.append(ordered[-1])
    return kept


def plot(points: Sequence[Point], *, width: int, height: int, x_label: Callable[[float], str],
         y_label: Callable[[float], str], margins: Margins | None = None, ticks: int = TICKS) -> Plot:
    """``points`` scaled into the box: x from the first to the last moment, y from 0 to a little above the largest."""
    margins = margins or Margins()
    ordered = sorted(points, key=lambda p: p.x)
    if not ordered:
        return Plot(width, height, margins, (), (), ())
    x_low, x_high = ordered[0].x, ordered[-1].x
    if x_high - x_low < 1:  # one moment: centre it in a day's width
        x_low, x_high = x_low - 43200, x_high + 43200
    y_high = max(p.y for p in ordered) * 1.1 or 1.0
    left, right = margins.left, width - margins.right
    top, bottom = margins.top, height - margins.bottom

    def px(x: float) -> float:
        return round(left + (x - x_low) / (x_high - x_low) * (right - left), 1)

    def py(y: float) -> float:
        return round(bottom - max(0.0, y) / y_high * (bottom - top), 1)

    steps = max(1, ticks - 1)
    x_ticks = tuple((px(x), x_label(x)) for x in (x_low + (x_high - x_low) * i / steps for i in range(ticks)))
    y_ticks = tuple((py(y), y_label(y)) for y in (y_high * i / steps for i in range(ticks)))
    return Plot(width, height, margins, tuple((px(p.x), py(p.y), p) for p in ordered), x_ticks, y_ticks)
