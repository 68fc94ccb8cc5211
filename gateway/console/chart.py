"""The dashboard's bar chart: credits used per UTC day, stacked by action, as plain SVG
shapes (computed here, drawn by the template; no script, no library).

Input is ``metering.usage.usage_by_day`` (the rows ``/api/usage`` answers as ``daily``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

# Distinguishable on white; the n-th action gets the n-th colour (wrapping).
PALETTE = ("#3366cc", "#dc3912", "#ff9900", "#109618", "#990099", "#0099c6", "#dd4477",
           "#66aa00", "#b82e2e", "#316395")
WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 48, 8, 12, 36  # margins around the plot area


@dataclasses.dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    fill: str
    title: str  # the tooltip: day, action, credits


@dataclasses.dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list
    ticks: list  # (y, label) of the value axis
    days: list  # (x, label) under every fifth day
    legend: list  # (colour, action, credits in the period)
    total: int
    plot: tuple  # (left, top, width, height) of the plot area


def _nice_max(value: int) -> int:
    """The axis top: 1, 2, 4 or 8 times a power of ten, at least ``value`` (and 4 or more,
    so the four tick steps are whole numbers)."""
    magnitude = 1
    while True:
        for m in (1, 2, 4, 8):
            if m * magnitude >= max(value, 4) and (m * magnitude) % 4 == 0:
                return m * magnitude
        magnitude *= 10


def usage_chart(daily: list[dict], today: dt.date, days: int = 30) -> Chart:
    dates = [today - dt.timedelta(days=days - 1 - i) for i in range(days)]
    index = {d.isoformat(): i for i, d in enumerate(dates)}
    per_action: dict[str, int] = {}
    cells: dict[tuple[int, str], int] = {}
    for row in daily:
        i = index.get(row["date"])
        if i is None or row["credits"] <= 0:
            continue
        cells[(i, row["action"])] = cells.get((i, row["action"]), 0) + row["credits"]
        per_action[row["action"]] = per_action.get(row["action"], 0) + row["credits"]
    actions = sorted(per_action)
    colour = {a: PALETTE[n % len(PALETTE)] for n, a in enumerate(actions)}
    day_totals = [sum(v for (i, _), v in cells.items() if i == n) for n in range(days)]
    top = _nice_max(max(day_totals, default=0) or 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / days
    bars = []
    for n in range(days):
        y = TOP + plot_h
        for action in actions:
            value = cells.get((n, action), 0)
            if not value:
                continue
            h = value / top * plot_h
            y -= h
            bars.append(Bar(round(LEFT + n * slot + slot * 0.15, 2), round(y, 2),
                            round(slot * 0.7, 2), round(h, 2), colour[action],
                            f"{dates[n].isoformat()}: {action}, {value} credits"))
    ticks = [(round(TOP + plot_h - plot_h * k / 4, 2), f"{top * k // 4}") for k in range(5)]
    labels = [(round(LEFT + n * slot + slot / 2, 2), dates[n].strftime("%b %d"))
              for n in range(0, days, 5)]
    legend = [(colour[a], a, per_action[a]) for a in actions]
    return Chart(WIDTH, HEIGHT, bars, ticks, labels, legend, sum(per_action.values()),
                 (LEFT, TOP, plot_w, plot_h))
