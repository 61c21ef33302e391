"""Time and peak memory against problem size, from the rows of one benchmark session: a pair
of log-log panels per op family, a line per provider (and op and dtype where a family has
several), each point a case measured in the same run. Where a provider stopped because the
next size would not fit in memory, its largest point says so."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .._plotting import figure
from .harness import NOTES, OUT_OF_MEMORY

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# The mode plotted for each op: the first of these that was measured. Batch searches ("step")
# are tables only: their size is a memory budget.
PLOTTED_MODES = ("full", "forward", "backward")
TIME, MEMORY = "time_ms_median", "peak_extra_mb"
_LINESTYLES = ("-", "--", ":", "-.")
_MODE_NAMES = {"full": "forward + backward"}

Line = tuple[str, str, str]  # op, provider, dtype
Points = dict[str, dict[str, float | str]]  # shape -> metric -> value (a note's value: its reason)


def _elements(shape: str) -> int:
    return math.prod(int(dim) for dim in shape.split("x"))


def _plotted(rows: Sequence[dict[str, str]]) -> dict[str, str]:
    """op -> the mode plotted for it."""
    measured = {(row["op"], row["mode"]) for row in rows if row["metric"] == TIME}
    modes = {}
    for op in dict.fromkeys(row["op"] for row in rows):
        mode = next((m for m in PLOTTED_MODES if (op, m) in measured), None)
        if mode is not None:
            modes[op] = mode
    return modes


def _families(rows: Sequence[dict[str, str]], families: Mapping[str, str]) -> dict[str, dict[Line, Points]]:
    """family -> line -> its points, for the rows of each op's plotted mode."""
    modes = _plotted(rows)
    grouped: dict[str, dict[Line, Points]] = {}
    for row in rows:
        if modes.get(row["op"]) != row["mode"] or row["metric"] not in (TIME, MEMORY, *NOTES):
            continue
        line = (row["op"], row["provider"], row["dtype"])
        points = grouped.setdefault(families[row["op"]], {}).setdefault(line, {})
        value = row["value"] if row["metric"] in NOTES else float(row["value"])
        points.setdefault(row["shape"], {})[row["metric"]] = value
    return grouped


def _labels(lines: Sequence[Line]) -> dict[Line, str]:
    """The parts of each line's name that vary within its family (the provider always)."""
    vary = [len({line[i] for line in lines}) > 1 for i in range(3)]
    return {line: " ".join(part for i, part in enumerate(line) if vary[i] or i == 1) for line in lines}


def _measured(points: Points, metric: str) -> list[str]:
    """The shapes with a value of `metric`, by size. A log axis cannot show a peak of 0 (a case
    that allocated nothing measurable): those are left out."""
    values = {shape: m.get(metric) for shape, m in points.items()}
    return sorted((s for s, v in values.items() if isinstance(v, float) and v > 0), key=_elements)


def _oom_note(points: Points, measured: list[str]) -> str | None:
    """Where a provider ran out of memory above its largest measured size, a note saying so."""
    largest = max(measured, key=_elements)
    above = sorted((s for s, m in points.items() if OUT_OF_MEMORY in m and _elements(s) > _elements(largest)),
                   key=_elements)
    return f"largest run: {largest}\n{above[0]}: out of memory" if above else None


def _draw(axes, family: str, lines: dict[Line, Points], mode: str, colors: dict[str, str]) -> None:
    labels = _labels(list(lines))
    styles = {key: _LINESTYLES[i % len(_LINESTYLES)]
              for i, key in enumerate(dict.fromkeys((op, dtype) for op, _, dtype in lines))}
    for ax, metric, name in zip(axes, (TIME, MEMORY), ("median time (ms)", "peak extra memory (MiB)"),
                                strict=True):
        ticks: dict[int, dict[str, None]] = {}
        noted = False
        for line, points in lines.items():
            shapes = _measured(points, metric)
            if not shapes:
                continue
            x = [_elements(s) for s in shapes]
            y = [points[s][metric] for s in shapes]
            op, provider, dtype = line
            ax.plot(x, y, marker="o", markersize=4, color=colors[provider], linestyle=styles[(op, dtype)],
                    label=labels[line])
            for s in shapes:
                ticks.setdefault(_elements(s), {})[s] = None
            note = _oom_note(points, shapes)
            if note is not None:
                # Above and left of the point, the end of a rising line, clear of the line.
                ax.annotate(note, xy=(x[-1], y[-1]), xytext=(-4, 6), textcoords="offset points",
                            ha="right", va="bottom", fontsize=7, color=colors[provider])
                noted = True
        if not ticks:
            ax.text(0.5, 0.5, f"{name.split(' (')[0]}: not measured", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_axis_off()
            continue
        ax.set_xscale("log")
        ax.set_yscale("log")
        if noted:  # room for the notes above the highest points
            bottom, top = ax.get_ylim()
            ax.set_ylim(bottom, top * 6)
        ax.set_xticks(list(ticks), ["/".join(shapes) for shapes in ticks.values()], rotation=30, fontsize=7)
        ax.minorticks_off()
        ax.set_xlabel("size (case shape)")
        ax.set_ylabel(name)
        ax.set_title(f"{family}: {_MODE_NAMES.get(mode, mode)}", fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7)


def plot(rows: Sequence[dict[str, str]], families: Mapping[str, str], title: str) -> Figure:
    """The figure of a session's rows (Recorder.rows; families: op -> family name)."""
    grouped = _families(rows, families)
    modes = _plotted(rows)
    fig = figure("--plot", figsize=(11, 3.8 * max(1, len(grouped))), layout="constrained")
    fig.suptitle(title, fontsize=8)
    if not grouped:
        fig.text(0.5, 0.5, "no op measured against size (batch searches are tables only)", ha="center")
    providers = dict.fromkeys(provider for lines in grouped.values() for _, provider, _ in lines)
    colors = {p: f"C{i % 10}" for i, p in enumerate(providers)}
    for axes, (family, lines) in zip(fig.subplots(len(grouped), 2, squeeze=False) if grouped else [],
                                     grouped.items(), strict=True):
        family_modes = dict.fromkeys(modes[op] for op, _, _ in lines)
        _draw(axes, family, lines, "/".join(family_modes), colors)
    return fig


def plot_rows(rows: Sequence[dict[str, str]], families: Mapping[str, str], path: Path, title: str) -> Path:
    """Writes plot(rows, families, title) to path, a PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, families, title).savefig(path, dpi=100)
    return path
