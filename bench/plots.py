"""Line-chart panels for the bench reports, as PNG through matplotlib (the ``bench`` extra).

matplotlib is never a runtime dependency: where it is missing, ``save_panels``
logs how to install it and the JSON and markdown results are written without a plot.

A panel is a dict: ``title``, ``ylabel``, ``xlabel`` (optional), ``yscale``
(``linear``, ``log`` or ``symlog``), ``series``: a list of dicts with ``label``,
``x``, ``y`` and optionally ``lo``/``hi`` (a shaded band) and ``marker``
(points, no line); ``hlines``: ``[(y, label), ...]``; ``xticks``: ``[(x, label), ...]`` and ``ylim``: ``(low, high)``
(optional).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

log = logging.getLogger("bench")
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def save_panels(png: Path, panels: list[dict], title: str) -> Path | None:
    """Write ``png``; returns its path, or ``None`` where matplotlib is missing or the plot failed.

    A plot that fails is logged and skipped (``None``): the JSON and markdown results matter more.
    """
    try:
        return _save_panels(png, panels, title)
    except Exception:  # noqa: BLE001
        log.exception("plot %s failed; results are written without it", png.name)
        return None


def _save_panels(png: Path, panels: list[dict], title: str) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (pip install -e '.[bench]'): %s not written", png.name)
        return None
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 3.6 * rows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        draw_panel(ax, panel)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def draw_panel(ax, panel: dict) -> None:
    """One panel on a matplotlib axes."""
    for i, s in enumerate(panel["series"]):
        color = COLORS[i % len(COLORS)]
        if s.get("marker"):
            ax.plot(s["x"], s["y"], "o", color=color, label=s["label"], markersize=4)
        else:
            ax.plot(s["x"], s["y"], color=color, label=s["label"], linewidth=1.4)
        if s.get("lo") is not None:
            ax.fill_between(s["x"], s["lo"], s["hi"], color=color, alpha=0.2, linewidth=0)
    for y, label in panel.get("hlines", []):
        ax.axhline(y, color="k", linestyle="--", linewidth=0.8, label=label)
    set_yscale(ax, panel.get("yscale", "linear"))
    if panel.get("ylim"):
        ax.set_ylim(*panel["ylim"])
    if panel.get("xticks"):
        ax.set_xticks([pos for pos, _ in panel["xticks"]], [label for _, label in panel["xticks"]])
    ax.set_title(panel["title"], fontsize=10)
    ax.set_xlabel(panel.get("xlabel", "env steps"))
    ax.set_ylabel(panel["ylabel"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def set_yscale(ax, scale: str) -> None:
    """Log or symlog with plain labels at 1, 2, 5 x 10^k (readable even where the data span less than a decade)."""
    if scale == "linear":
        return
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, SymmetricalLogLocator

    if scale == "symlog":
        ax.set_yscale("symlog", linthresh=1.0)
        ax.yaxis.set_major_locator(SymmetricalLogLocator(base=10, linthresh=1.0, subs=[1.0, 2.0, 5.0]))
    else:
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=[1.0, 2.0, 5.0]))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    low, high = ax.get_ylim()
    try:
        ticks = sum(low <= t <= high for t in ax.yaxis.get_majorticklocs())
    except ValueError:  # nothing positive to put on a log axis
        ticks = 0
    if ticks < 3:  # the data span too little (or nothing) for a log axis
        ax.set_yscale("linear")
