"""How every figure looks and is written: `PlotSettings` (the `plots` config section) applied
through matplotlib's context managers (no global rcParams change), and one atomic writer.
matplotlib is imported inside the functions (Agg backend), so importing this module costs nothing.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from imbssl.core.atomic import atomic_path


@dataclass
class PlotSettings:
    """Figure style. Output formats are chosen by the output paths' suffixes (.png, .pdf, .svg)."""

    dpi: int = 200  # resolution of raster outputs (.png), in dots per inch
    width: float = 6.0  # inches
    height: float = 3.5  # inches
    font_size: float = 9.0  # points
    style: str = "default"  # a name from matplotlib.style.available
    log_y: bool = False  # logarithmic image-count axis in Figure 1


@contextmanager
def plot_style(settings: PlotSettings):
    """pyplot inside the settings' style and font size (Agg backend, nothing global changed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with plt.style.context(settings.style), plt.rc_context({"font.size": settings.font_size}):
        yield plt


def save_figure(fig, outs: Sequence[str | os.PathLike], dpi: int) -> None:
    """Write `fig` atomically to every path in `outs` (format from each suffix), then close it."""
    import matplotlib.pyplot as plt

    for out in outs:
        with atomic_path(out) as tmp:
            # The temporary name has no image suffix: name the format explicitly.
            fig.savefig(tmp, format=Path(out).suffix.lstrip(".") or "png", dpi=dpi)
    plt.close(fig)


MAX_CLASS_TICKS = 25  # more names than this overlap: every n-th class is named instead


def class_ticks(ax, names: Sequence[str]) -> None:
    """Class names on the x axis, slanted when they are words (e.g. CIFAR-10's "automobile"); with
    many classes (CIFAR-100) every n-th one, upright, so that the names stay apart."""
    step = -(-len(names) // MAX_CLASS_TICKS) if len(names) > MAX_CLASS_TICKS else 1
    positions = list(range(0, len(names), step))
    shown = [names[i] for i in positions]
    if step > 1:
        ax.set_xticks(positions, shown, rotation=90, fontsize="x-small")
        return
    long_names = max(map(len, names), default=0) > 3
    ax.set_xticks(positions, shown, rotation=45 if long_names else 0, ha="right" if long_names else "center")


def plain_ticks(ax, axis: str = "y") -> None:
    """Tick labels as plain numbers: no offset ("+6.25e-2" above the axis) and no scientific
    notation for everyday magnitudes; the decimals follow the tick spacing, so a sensible axis
    range gives short labels."""
    from matplotlib.ticker import MaxNLocator, ScalarFormatter

    formatter = ScalarFormatter(useOffset=False)
    formatter.set_powerlimits((-4, 5))
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_formatter(formatter)
    target.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 2.5, 5, 10]))


def log_counts(axis) -> None:
    """A logarithmic axis of counts labelled 1, 2, 5, 10, 20, 50, ... (not 10^0, 10^1)."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    label = FuncFormatter(lambda value, _: f"{value:g}" if value < 1e5 else f"{value:.0e}")
    axis.set_major_formatter(label)
    axis.set_minor_locator(LogLocator(subs=(2.0, 5.0)))
    axis.set_minor_formatter(label)
    axis.set_tick_params(which="minor", labelsize="x-small")
