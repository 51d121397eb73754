"""The charts' geometry: thinning thousands of backups to a few hundred points, and placing them in a box."""

from __future__ import annotations

import random

import pytest

from backup_ops.core.chart import Margins, Point, downsample, plot

DAY = 86400.0


def series(count: int, seed: int = 1) -> list[Point]:
    rng = random.Random(seed)
    return [Point(1.7e9 + i * DAY, float(rng.randint(1, 1000))) for i in range(count)]


@pytest.mark.parametrize("count", [0, 1, 2, 299, 300])
def test_up_to_the_limit_every_point_stays_in_time_order(count: int) -> None:
    points = series(count)
    assert downsample(list(reversed(points)), 300) == points


@pytest.mark.parametrize(("count", "limit"), [(301, 300), (10_000, 300), (10_000, 3), (1000, 50)])
def test_beyond_the_limit_the_first_the_last_and_each_runs_largest_stay(count: int, limit: int) -> None:
    points = series(count)
    points[count // 2] = Point(points[count // 2].x, 10_000.0)  # a spike must not vanish
    kept = downsample(points, limit)
    assert len(kept) == limit
    assert kept[0] == points[0] and kept[-1] == points[-1]
    assert [p.x for p in kept] == sorted(p.x for p in kept)
    assert max(p.y for p in kept) == 10_000.0
    assert set(kept) <= set(points)


def test_no_points_is_an_empty_plot() -> None:
    geometry = plot([], width=500, height=150, x_label=str, y_label=str)
    assert geometry.empty and geometry.x_ticks == () and geometry.y_ticks == ()


def test_points_fill_the_box_inside_its_margins_with_zero_at_the_bottom() -> None:
    margins = Margins(top=10, right=10, bottom=20, left=50)
    points = [Point(0.0, 0.0), Point(DAY, 50.0), Point(2 * DAY, 100.0)]
    geometry = plot(points, width=450, height=130, margins=margins, x_label=lambda x: f"d{x / DAY:.0f}",
                    y_label=lambda y: f"{y:.0f}")
    (x0, y0, _), (x1, _, _), (x2, y2, _) = geometry.points
    assert (x0, x2) == (50.0, 440.0) and x1 == 245.0
    assert y0 == 110.0                       # 0 sits on the x axis
    assert 10.0 < y2 < 110.0                 # the largest value stays below the top edge (10 % headroom)
    assert [label for _, label in geometry.x_ticks] == ["d0", "d1", "d1", "d2"]
    assert [label for _, label in geometry.y_ticks] == ["0", "37", "73", "110"]
    assert geometry.y_ticks[0][0] == 110.0 and geometry.y_ticks[-1][0] == 10.0


def test_a_single_moment_is_centred() -> None:
    geometry = plot([Point(1.7e9, 5.0)], width=300, height=100, x_label=str, y_label=str,
                    margins=Margins(top=0, right=0, bottom=0, left=0))
    assert geometry.points[0][0] == 150.0
